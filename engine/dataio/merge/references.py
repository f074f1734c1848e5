"""Who points at a record: every lookup (``to: <entity>``) and every polymorphic reference
(``type: reference``, stored as ``entity:id``) of every entity of the model, found in SQL by the
merged ids, one query per pointing field.

``Pointer`` names one such field; ``referrers`` gives, per pointer, which records point at which of
the ids. The merge moves them to the survivor and its undo moves them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Pointer:
    """A field of ``entity`` that can point at records of the merged entity."""

    entity: str
    field: str
    reference: bool   # a polymorphic reference (``entity:id``) rather than a lookup

    def value(self, target: str, record_id: int) -> Any:
        """What the field holds when it points at ``record_id`` of ``target``."""
        return f"{target}:{record_id}" if self.reference else record_id

    def target_id(self, stored: Any) -> int:
        """The id a stored value points at."""
        return stored if not self.reference else int(str(stored).rpartition(":")[2])


def pointers_to(model, target: str) -> list[Pointer]:
    """Every field of the model that can point at a record of ``target``."""
    out = []
    for ent in model.entities.values():
        for field in ent.fields.values():
            if not field.stored:
                continue
            if field.target == target:
                out.append(Pointer(ent.name, field.name, False))
            elif field.type_name == "reference" and target in (field.prop("to") or model.entities):
                out.append(Pointer(ent.name, field.name, True))
    return out


def referrers(records, conn, target: str, ids: list[int]) -> list[tuple[Pointer, dict[int, int]]]:
    """(pointer, {record id: id it points at}) for every pointer with records pointing at ``ids``."""
    out = []
    for pointer in pointers_to(records.model, target):
        table = records.table(pointer.entity)
        column = table.c[pointer.field]
        values = [pointer.value(target, i) for i in ids]
        rows = conn.execute(sa.select(table.c.id, column).where(column.in_(values)).order_by(table.c.id)).all()
        if rows:
            out.append((pointer, {rid: pointer.target_id(value) for rid, value in rows}))
    return out


def counts(records, conn, target: str, ids: list[int], access=None) -> tuple[list[dict], int]:
    """How many records of each entity point at ``ids`` through each field (the merge page's "will
    move" figures), without reading them, and how many others point at them that the caller may not
    see (``access``: a record out of its scope, an entity it may not read, a field hidden from it).
    The merge moves those too (as system writes), so the preview counts them, unnamed: (visible
    counts, hidden total)."""
    out, hidden = [], 0
    for pointer in pointers_to(records.model, target):
        table = records.table(pointer.entity)
        column = table.c[pointer.field]
        where = column.in_([pointer.value(target, i) for i in ids])
        total = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar()
        if not total:
            continue
        seen = total
        if access is not None:
            if not access.can(pointer.entity, "read") or pointer.field in access.hidden(pointer.entity):
                seen = 0
            else:
                visible = access.visibility(records, pointer.entity, table)
                if visible is not None:
                    seen = conn.execute(sa.select(sa.func.count()).select_from(table).where(where, visible)).scalar()
        hidden += total - seen
        if seen:
            out.append({"entity": pointer.entity, "field": pointer.field, "count": seen})
    return out, hidden
