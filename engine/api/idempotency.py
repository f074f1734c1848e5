"""``Idempotency-Key`` on POST: a retried request replays the first answer instead of writing again.

The key is claimed in its own transaction before the write (so two concurrent retries cannot both
write), and the answer is stored after it. A key reused with a different request is refused; a
claim left by a crashed request may be taken over after ``STALE_AFTER``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa
from flask import Request, Response

from .errors import ApiError, to_problem

STALE_AFTER = timedelta(seconds=60)
REPLAYED_HEADERS = ("Location", "ETag", "Content-Type")


def replay_or_run(rt, user_id: int, request: Request, run: Callable[[], Response]) -> Response:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return run()
    if not key.strip() or len(key) > 255:
        raise ApiError(400, "Bad request", "Idempotency-Key must be 1 to 255 characters")
    digest = hashlib.sha256(b"\0".join([request.method.encode(), request.path.encode(),
                                        request.get_data(cache=True)])).hexdigest()
    table = rt.records.metadata.tables["_crm_idempotency"]
    stored = _claim(rt, table, user_id, key, digest)
    if stored is not None:
        return stored
    try:
        response = run()
    except Exception as exc:  # the error answer is replayed too, like any other
        response = to_problem(exc)
    with rt.db.write() as conn:
        where = sa.and_(table.c.user_id == user_id, table.c.key == key)
        if response.status_code >= 500:  # nothing was decided: let a retry run again
            conn.execute(table.delete().where(where))
        else:
            conn.execute(table.update().where(where).values(
                status_code=response.status_code, body=response.get_data(as_text=True),
                headers={h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers}))
    return response


def _claim(rt, table, user_id: int, key: str, digest: str) -> Response | None:
    now = datetime.now(timezone.utc)
    try:
        with rt.db.write() as conn:
            row = conn.execute(sa.select(table).where(table.c.user_id == user_id, table.c.key == key)).first()
            if row is None:
                conn.execute(table.insert().values(user_id=user_id, key=key, request_hash=digest, created_at=now))
                return None
            if row.request_hash != digest:
                raise ApiError(422, "Idempotency key reused", "this Idempotency-Key was used with a different request",
                               kind="idempotency-key-reused")
            if row.status_code is not None:
                response = Response(row.body, status=row.status_code)
                for name, value in (row.headers or {}).items():
                    response.headers[name] = value
                response.headers["Idempotent-Replayed"] = "true"
                return response
            if now - row.created_at < STALE_AFTER:
                raise ApiError(409, "Request in progress", "a request with this Idempotency-Key is still running",
                               kind="idempotency-in-progress")
            conn.execute(table.update().where(table.c.user_id == user_id, table.c.key == key).values(created_at=now))
            return None
    except sa.exc.IntegrityError:  # a concurrent request claimed the key first
        raise ApiError(409, "Request in progress", "a request with this Idempotency-Key is still running",
                       kind="idempotency-in-progress") from None


__all__ = ["replay_or_run"]
