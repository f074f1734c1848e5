"""Storage: tables from the model, migrations, the record service, queries, history."""
