"""The audit log: logins, permission denials, exports, migrations, user and role changes, admin
bypass. One row per event in ``_crm_audit``, written in its own transaction so a refused or
failed request still leaves its trace. (Records created and deleted for a user, ``record_created``
and ``record_deleted``, are written by the record service in the write's own transaction:
``RecordService.audit_writes``.)"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

KINDS = ("login", "login_failed", "login_throttled", "logout", "permission_denied", "export", "migration",
         "user_change", "admin_bypass", "keys_rotated", "restore", "record_created", "record_deleted",
         "pool_claimed", "pool_assigned", "pool_returned", "pool_recycled", "record_merged", "merge_undone",
         "duplicate_override", "file_uploaded", "file_deleted",
         "password_changed", "password_reset", "sessions_ended", "profile_changed")
#: Fields of a user whose change is audited (who may do what, and whether they may log in).
USER_FIELDS = ("role", "active", "team", "manager", "email")


def audit(records, kind: str, *, user_id: int | None = None, entity: str | None = None,
          record_id: int | None = None, detail: dict[str, Any] | None = None, ip: str | None = None,
          conn=None) -> None:
    """Write one audit row (in ``conn``'s transaction when given, else in a transaction of its own)."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}")
    if ip is None:
        ip = _request_ip()
    table = records.metadata.tables["_crm_audit"]
    row = dict(at=datetime.now(timezone.utc), kind=kind, actor_id=user_id, ip=ip, entity=entity,
               record_id=record_id, detail=detail or {})
    if conn is not None:
        conn.execute(table.insert().values(**row))
        return
    def write() -> None:
        with records.db.write() as own:
            own.execute(table.insert().values(**row))

    if not records.db.after_current_write(write):   # inside a write: recorded when it ends, either way
        write()


def query_audit(records, *, kind: str | None = None, user_id: int | None = None, since: datetime | None = None,
                until: datetime | None = None, before_id: int | None = None, limit: int = 100) -> list[dict]:
    """Newest first; page with ``before_id`` (the last id of the previous page)."""
    table = records.metadata.tables["_crm_audit"]
    stmt = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if kind:
        stmt = stmt.where(table.c.kind == kind)
    if user_id is not None:
        stmt = stmt.where(table.c.actor_id == user_id)
    if since is not None:
        stmt = stmt.where(table.c.at >= since)
    if until is not None:
        stmt = stmt.where(table.c.at < until)
    if before_id is not None:
        stmt = stmt.where(table.c.id < before_id)
    with records.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _request_ip() -> str | None:
    from flask import has_request_context, request

    return request.remote_addr if has_request_context() else None
