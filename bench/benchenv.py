"""Environment every benchmark needs: a throwaway key for the base CRM's encrypted fields, and the
database to run on (``BENCH_DATABASE_URL``: a PostgreSQL schema of its own; else SQLite)."""

import base64
import os

os.environ.setdefault("CRM_ENCRYPTION_KEYS", "bench:" + base64.b64encode(os.urandom(32)).decode())


def database_url(sqlite_file, name: str) -> tuple[str, str | None]:
    """(url, schema): ``BENCH_DATABASE_URL`` with a fresh PostgreSQL schema of its own (named after
    ``name`` and the process), or a SQLite file; drop the schema with ``drop_schema``."""
    url = os.environ.get("BENCH_DATABASE_URL")
    if not (url and url.startswith("postgresql")):
        return f"sqlite:///{sqlite_file}", None
    import sqlalchemy as sa

    schema = f"bench_{name}_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}", schema


def drop_schema(schema: str | None) -> None:
    """Drop a schema ``database_url`` made (nothing for SQLite)."""
    if schema:
        import sqlalchemy as sa

        admin = sa.create_engine(os.environ["BENCH_DATABASE_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
