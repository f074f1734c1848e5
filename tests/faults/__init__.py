"""The fault suite: crashes, outages, hostile and malformed input, each asserting that the product
answers with a clear 4xx (or recovers), writes nothing it should not, and stays healthy. One module per
class of fault; every test runs on SQLite and, with DATABASE_URL, on PostgreSQL."""
