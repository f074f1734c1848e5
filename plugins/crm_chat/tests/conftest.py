"""The engine's own test fixtures: every test a database of its own (SQLite, or a PostgreSQL schema
when DATABASE_URL points there), runtimes closed afterwards, metadata trees in tmp_path."""

from tests.conftest import database_url, make_runtime, receiver, settings, write_tree  # noqa: F401
