"""Backups: SQLite through its online backup API, PostgreSQL through pg_dump / pg_restore."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .database import Database


class BackupError(RuntimeError):
    """A backup or restore could not be made; nothing was changed."""


def backup(db: Database, folder: Path, label: str = "backup") -> Path:
    """Write a consistent copy of the database into ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if db.is_sqlite:
        target = folder / f"{Path(db.url.database or 'memory').stem}-{stamp}-{label}.sqlite"
        with db.engine.connect() as conn:
            source = conn.connection.dbapi_connection
            dest = sqlite3.connect(target)
            try:
                source.backup(dest)
            finally:
                dest.close()
        return target
    target = folder / f"{db.url.database}-{stamp}-{label}.dump"
    _run_pg(db, "pg_dump", "--format=custom", f"--file={target}", *_schema_args(db))
    return target


def restore(db: Database, source: Path) -> None:
    """Replace the database's content with the backup at ``source``."""
    if not source.is_file():
        raise BackupError(f"backup {source} does not exist")
    db.dispose()
    if db.is_sqlite:
        src = sqlite3.connect(source)
        dest = sqlite3.connect(db.url.database)
        try:
            src.backup(dest)
        finally:
            src.close()
            dest.close()
        return
    _run_pg(db, "pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
            *_schema_args(db), str(source))


def _schema_args(db: Database) -> list[str]:
    return [f"--schema={db.schema}"] if db.schema else []


def _run_pg(db: Database, tool: str, *args: str) -> None:
    exe = shutil.which(tool)
    if exe is None:
        raise BackupError(f"{tool} is not installed (Debian: apt-get install postgresql-client)")
    url = db.url
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    conn_args = [f"--host={url.host or 'localhost'}", f"--port={url.port or 5432}",
                 f"--username={url.username or 'postgres'}", f"--dbname={url.database}"]
    done = subprocess.run([exe, *conn_args, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{tool} failed: {done.stderr.strip()}")
