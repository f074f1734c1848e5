"""Putting deleted records back exactly as they were stored: the undo of a merge (and of any
capability that deleted records through the record service and kept their rows).

A restored record is not a new record: it takes back its id, its owner, its timestamps, its version
and its values as they were, so no default, formula, validation rule or before-write hook runs again
(a rule such as "the close date may not be in the past" held when the record was written; running it
again would refuse history). What follows from the record being there again does run, as for a
create: the lookups it holds must point at records that exist, the unique fields must be free, the
parents' rollups are recomputed, the ``crm_after_write`` / ``crm_after_commit`` hooks see a
``create`` and the audit log records it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import Context
from .errors import FieldError, ValidationFailed
from .rollups import after_write as rollups_after_write

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from engine.metadata.model import Entity

    from .records import RecordService


def restore_rows(svc: RecordService, conn: Connection, ent: Entity, rows: list[dict], context: Context) -> list[dict]:
    """Insert ``rows`` (stored rows with their ``id`` and system columns) into ``ent``'s table, in
    ``conn``'s write transaction; a row whose id is taken, or whose lookups point nowhere, refuses
    the whole call (``ValidationFailed`` naming the record and the field)."""
    if not rows:
        return []
    table = svc.table(ent.name)
    taken = svc._existing_ids(conn, ent.name, [r["id"] for r in rows])
    errors = [FieldError("id", "exists", f"{ent.name} {rid} exists again; it cannot be restored") for rid in sorted(taken)]
    coming = {r["id"] for r in rows}
    # records of this call pointing at each other (a parent and its child) are written in two steps
    inner = [f.name for f in svc.plan(ent).pointers if f.target == ent.name]
    links = {r["id"]: {n: r[n] for n in inner if r.get(n) in coming} for r in rows}
    errors += [FieldError(e.field, e.code, f"{ent.name} {rows[i]['id']}: {e.message}")
               for i, e in svc.missing_targets(conn, ent, [{**r, **dict.fromkeys(links[r["id"]])} for r in rows])]
    if errors:
        raise ValidationFailed(errors, ent.name)
    restored = []
    for row in rows:
        params = {k: v for k, v in row.items() if k in table.c}
        svc.write_rows(conn, ent, table.insert(), {**params, **dict.fromkeys(links[row["id"]])})
        record = {**row}
        if svc.rollups_of(ent):
            rollups_after_write(svc, conn, ent, None, record, context=context)
        svc.hooks.call("crm_after_write", event="create", entity=ent, record=record, old=None, context=context,
                       conn=conn, state={})
        svc._after_commit(conn, "create", ent, record, None, context)
        restored.append(record)
    for rid, values in links.items():
        if values:
            conn.execute(table.update().where(table.c.id == rid).values(values))
    svc.audit_writes(conn, ent, "create", restored, context)
    return restored
