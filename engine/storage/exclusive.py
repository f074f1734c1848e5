"""Exclusive flags: a boolean declaring ``exclusive_within: <lookup>`` is TRUE on at most one record
per value of that lookup (e.g. one primary child per parent).

When a write makes the flag TRUE, the other records with the same lookup value that have it are
set to FALSE through the record service's update path, as a system write for the writer (their
versions, history, hooks and rollups move as for any write), in the same transaction. The parent
row is locked first, so two concurrent writes marking two siblings serialize and the later one
clears the earlier one. A bulk request marking two records of the same parent is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from .context import Context, system_for
from .errors import FieldError

if TYPE_CHECKING:
    from engine.metadata.model import Entity

    from .records import RecordService


def marked(ent: "Entity", fields, record: dict, old: dict | None) -> list:
    """(flag field, lookup value) pairs this write newly sets TRUE (or moves to another parent)."""
    out = []
    for field in fields:
        within = field.prop("exclusive_within")
        if record.get(field.name) is not True or record.get(within) is None:
            continue
        if old is not None and old.get(field.name) is True and old.get(within) == record.get(within):
            continue
        out.append((field, record[within]))
    return out


def clear_others(svc: "RecordService", conn, ent: "Entity", record: dict, old: dict | None,
                 context: Context) -> None:
    """After ``record`` is written: clear the flag on its siblings (nothing when no flag was set)."""
    for field, parent_id in marked(ent, svc.plan(ent).exclusive, record, old):
        within = field.prop("exclusive_within")
        svc.lock_rows(conn, svc.model.entities[ent.fields[within].target], [parent_id])
        table = svc.table(ent.name)
        others = conn.execute(sa.select(table.c.id).where(table.c[within] == parent_id, table.c[field.name].is_(True),
                                                          table.c.id != record["id"]).order_by(table.c.id)).scalars()
        system = system_for(context)
        for other in list(others):
            updated, before = svc._update(conn, ent, other, {field.name: False}, None, system)
            if updated is not before:
                svc._after_commit(conn, "update", ent, updated, before, system)


def duplicates(ent: "Entity", fields, records: list[dict | None], olds: list[dict | None]) -> dict[int, FieldError]:
    """Positions of a bulk request that set a flag TRUE for a parent another item of it also marks."""
    seen: dict[tuple, int] = {}
    out: dict[int, FieldError] = {}
    for i, record in enumerate(records):
        if record is None:
            continue
        for field, parent_id in marked(ent, fields, record, olds[i]):
            key = (field.name, parent_id)
            if key in seen:
                out[i] = FieldError(field.name, "exclusive", f"another item of this request also sets {field.name} "
                                                             f"for {field.prop('exclusive_within')} {parent_id}; "
                                                             "at most one may have it")
            seen.setdefault(key, i)
    return out
