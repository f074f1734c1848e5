"""The database connection: one SQLAlchemy engine, configured the same way for every caller.

On SQLite: WAL, foreign keys on, a busy timeout, and real transactions (pysqlite's own
transaction handling skips DDL; we emit BEGIN ourselves, so a migration is all-or-nothing).
Write transactions on SQLite begin IMMEDIATE, so two writers queue instead of deadlocking.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url


class Database:
    def __init__(self, url: str, *, echo: bool = False):
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        kwargs: dict = {"echo": echo}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.schema = _search_path(self.url)
        self._writes = threading.local()   # the write transactions this thread is inside
        self.engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self, outer: Connection | None = None) -> Iterator[Connection]:
        """A connection in a write transaction: committed on success, rolled back on error; then the
        callbacks registered with ``on_commit`` run (they are dropped on rollback).

        With ``outer`` (a connection already in a write transaction) the work joins that transaction:
        nothing is committed here and the callbacks wait for the outer commit."""
        if outer is not None:
            yield outer
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(crm_write=True)
            callbacks: list = []
            ended: list = []
            before: list = []
            conn.info.update({"crm.on_commit": callbacks, "crm.before_commit": before, "crm.txn": {}})
            self._writes.stack = [*getattr(self._writes, "stack", ()), ended]
            try:
                with conn.begin():
                    yield conn
                    for callback in before:
                        callback()
            finally:
                for key in ("crm.on_commit", "crm.before_commit", "crm.txn"):
                    conn.info.pop(key, None)
                self._writes.stack = self._writes.stack[:-1]
                for callback in ended:
                    try:
                        callback()
                    except Exception:  # noqa: BLE001 - must not hide the write's own outcome
                        logging.getLogger("crm.db").exception("a callback after a write transaction failed")
        for callback in callbacks:  # the write has committed: its answer must say so, whatever fails now
            try:
                callback()
            except Exception:  # noqa: BLE001 - logged; the outbox and the run log own the retry
                logging.getLogger("crm.db").exception("work after a committed write failed; the write stands")

    @staticmethod
    @contextmanager
    def savepoint(conn: Connection) -> Iterator[Connection]:
        """A part of the write transaction of ``conn`` that may fail on its own: on error its rows
        and the callbacks it registered are undone and the transaction goes on (the error is
        re-raised). Used where one transaction must record the failure of a step it contains."""
        marks = {key: len(conn.info[key]) for key in ("crm.on_commit", "crm.before_commit")}
        try:
            with conn.begin_nested():
                yield conn
        except BaseException:
            for key, mark in marks.items():
                del conn.info[key][mark:]
            conn.info["crm.txn"].clear()   # facts read inside may have been rolled back with it
            raise

    @staticmethod
    def on_commit(conn: Connection, callback) -> None:
        """Run ``callback()`` after the write transaction of ``conn`` commits (never if it rolls back).
        A callback that raises is logged and the next one runs: the write stands and its caller is
        told so (a 500 after a commit makes clients retry a write that happened)."""
        conn.info["crm.on_commit"].append(callback)

    @staticmethod
    def before_commit(conn: Connection, callback) -> None:
        """Run ``callback()`` at the end of the write transaction of ``conn``, just before it commits
        (to flush rows gathered during the transaction in one statement)."""
        conn.info["crm.before_commit"].append(callback)

    @staticmethod
    def txn_cache(conn: Connection) -> dict:
        """A dict that lives as long as the write transaction of ``conn`` (facts read once per write)."""
        return conn.info["crm.txn"]

    def after_current_write(self, callback) -> bool:
        """If this thread is inside a write transaction, run ``callback()`` when it ends (committed or
        rolled back) and return True; else return False. A second write transaction opened inside
        the first would wait for its lock forever on SQLite (the audit of a refused write uses this)."""
        stack = getattr(self._writes, "stack", ())
        if not stack:
            return False
        stack[-1].append(callback)
        return True

    @contextmanager
    def read(self, *, timeout_ms: int | None = None) -> Iterator[Connection]:
        """A read transaction; with ``timeout_ms`` every statement in it is stopped after that long
        (``QueryTimeout``), so no request can run unbounded."""
        with self.engine.connect() as conn:
            with conn.begin():
                if timeout_ms is None:
                    yield conn
                elif self.is_sqlite:
                    with _sqlite_deadline(conn, timeout_ms):
                        yield conn
                else:
                    conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
                    try:
                        yield conn
                    except sa.exc.OperationalError as exc:
                        if "statement timeout" in str(exc.orig):
                            raise QueryTimeout(timeout_ms) from None
                        raise

    def estimate_rows(self, conn: Connection, stmt, floor: int) -> int:
        """The planner's row estimate for ``stmt`` (PostgreSQL), never below ``floor``."""
        if self.is_sqlite:
            return floor  # SQLite keeps no row estimates: report the cap as a lower bound
        compiled = stmt.compile(dialect=conn.dialect)
        plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params).scalar()
        plan = plan if isinstance(plan, list) else __import__("json").loads(plan)
        return max(floor, int(plan[0]["Plan"]["Plan Rows"]))

    def dispose(self) -> None:
        self.engine.dispose()


class QueryTimeout(RuntimeError):
    """A statement ran past the request's time limit and was stopped."""

    def __init__(self, timeout_ms: int):
        self.timeout_ms = timeout_ms
        super().__init__(f"the query took longer than {timeout_ms} ms and was stopped; narrow the filters")


@contextmanager
def _sqlite_deadline(conn: Connection, timeout_ms: int) -> Iterator[None]:
    """SQLite has no statement timeout: a progress handler interrupts the statement instead."""
    raw = conn.connection.dbapi_connection
    deadline = time.monotonic() + timeout_ms / 1000
    raw.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    try:
        yield
    except sa.exc.OperationalError as exc:
        if "interrupted" in str(exc.orig):
            raise QueryTimeout(timeout_ms) from None
        raise
    finally:
        raw.set_progress_handler(None, 0)


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("crm_write")
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _search_path(url) -> str | None:
    """The schema named by ``?options=-csearch_path=x`` in a PostgreSQL URL (used by backups)."""
    options = url.query.get("options", "")
    for part in (options if isinstance(options, str) else " ".join(options)).split():
        if part.startswith("-csearch_path="):
            return part.split("=", 1)[1].split(",")[0]
    return None
