"""``Idempotency-Key`` on POST: a retried request replays the first answer instead of writing again.

The key, the write and its answer commit together: the request runs in one write transaction that
claims the key, performs the write (the record service joins the transaction through ``conn``) and
stores the answer, then commits. A server that dies at any moment leaves either nothing (the retry
runs the write) or the write with its answer (the retry replays it), never a write without one.
A concurrent duplicate waits for the first request to end (SQLite's write lock, PostgreSQL's lock
on the key's row) and then replays its answer; on PostgreSQL it stops waiting after
``WAIT_FOR_FIRST`` with a 409. After-commit work (automations, hooks) runs only once committed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa
from flask import Request, Response
from sqlalchemy.engine import Connection

from engine import failpoints

from .errors import ApiError, to_problem

#: Claims without an answer exist only if left by an engine that claimed in a transaction of its own.
STALE_AFTER = timedelta(seconds=60)
WAIT_FOR_FIRST = timedelta(seconds=30)
REPLAYED_HEADERS = ("Location", "ETag", "Content-Type")
#: The fail point (engine/failpoints.py) between the commit of an idempotent write and its answer.
AFTER_COMMIT = "after_commit:idempotent-write"


def replay_or_run(rt, user_id: int, request: Request, run: Callable[[Connection | None], Response]) -> Response:
    """The answer of ``run(conn)``, run at most once per ``Idempotency-Key``; without the header,
    ``run(None)`` (the write makes its own transaction)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return run(None)
    if not key.strip() or len(key) > 255:
        raise ApiError(400, "Bad request", "Idempotency-Key must be 1 to 255 characters")
    digest = hashlib.sha256(b"\0".join([request.method.encode(), request.path.encode(),
                                        request.get_data(cache=True)])).hexdigest()
    table = rt.records.metadata.tables["_crm_idempotency"]
    try:
        with rt.db.write() as conn:
            stored = _claim(rt.db, conn, table, user_id, key, digest)
            if stored is not None:
                return stored
            response = _run_once(rt.db, conn, run)
            conn.execute(table.update().where(table.c.user_id == user_id, table.c.key == key).values(
                status_code=response.status_code, body=response.get_data(as_text=True),
                headers={h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers}))
    except _Undecided as undecided:   # rolled back with its claim: a retry runs again
        return undecided.response
    failpoints.hit(AFTER_COMMIT)
    return response


class _Undecided(Exception):
    """A server error (5xx) of the write: leaves the transaction so that the claim goes too."""

    def __init__(self, response: Response):
        super().__init__(response.status)
        self.response = response


def _run_once(db, conn: Connection, run: Callable[[Connection | None], Response]) -> Response:
    """``run(conn)`` in a savepoint: a refused write (4xx) is undone and its answer kept, like any other."""
    try:
        with db.savepoint(conn):
            return run(conn)
    except Exception as exc:
        response = to_problem(exc)
        if response.status_code >= 500:
            raise _Undecided(response) from exc
        return response


def _claim(db, conn: Connection, table: sa.Table, user_id: int, key: str, digest: str) -> Response | None:
    """Claim the key in this transaction (None), or the stored answer to replay; 422 when the key
    came with another request, 409 when the first request is still running."""
    now = datetime.now(timezone.utc)
    insert = (sa.dialects.sqlite.insert if db.is_sqlite else sa.dialects.postgresql.insert)(table)
    insert = insert.values(user_id=user_id, key=key, request_hash=digest, created_at=now)
    if not db.is_sqlite:   # a duplicate blocks on the first one's row until it commits or rolls back
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(WAIT_FOR_FIRST.total_seconds() * 1000)}")
    try:
        claimed = conn.execute(insert.on_conflict_do_nothing(index_elements=["user_id", "key"])
                               .returning(table.c.key)).first() is not None
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":   # lock_not_available
            raise _in_progress() from None
        raise
    if not db.is_sqlite:
        conn.exec_driver_sql("SET LOCAL lock_timeout = DEFAULT")
    if claimed:
        return None
    row = conn.execute(sa.select(table).where(table.c.user_id == user_id, table.c.key == key)).first()
    if row.request_hash != digest:
        raise ApiError(422, "Idempotency key reused", "this Idempotency-Key was used with a different request",
                       kind="idempotency-key-reused")
    if row.status_code is None:
        if now - row.created_at < STALE_AFTER:
            raise _in_progress()
        conn.execute(table.update().where(table.c.user_id == user_id, table.c.key == key).values(created_at=now))
        return None
    response = Response(row.body, status=row.status_code)
    for name, value in (row.headers or {}).items():
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _in_progress() -> ApiError:
    return ApiError(409, "Request in progress", "a request with this Idempotency-Key is still running",
                    kind="idempotency-in-progress")


__all__ = ["AFTER_COMMIT", "replay_or_run"]
