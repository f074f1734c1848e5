"""Search: a text in the ``searchable`` fields of every entity the caller may read.

Each entity is one list query through the record service (so the caller's record scope, sharing
rules and hidden fields apply as for any list): the text is matched case-insensitively, as a
bound parameter, against the searchable stored text fields the caller may read (encrypted fields
are never searched)."""

from __future__ import annotations

import sqlalchemy as sa

from .query import TEXT_TYPES, ListQuery
from .records import Context, RecordService


def search(records: RecordService, text: str, context: Context, *, limit: int = 10) -> list[tuple[str, dict]]:
    """(entity, record) pairs, at most ``limit`` per entity, entities in model order."""
    hits: list[tuple[str, dict]] = []
    access = None if context.system else context.access
    for ent in records.model.entities.values():
        if access is not None and not access.can(ent.name, "read"):
            continue
        hidden = access.hidden(ent.name) if access is not None else frozenset()
        names = [f.name for f in ent.fields.values() if f.prop("searchable") and f.stored
                 and f.type_name in TEXT_TYPES and not f.prop("encrypted") and f.name not in hidden]
        if not names:
            continue
        table = records.table(ent.name)
        match = sa.or_(*(table.c[n].icontains(text, autoescape=True) for n in names))
        page = records.list(ListQuery(ent.name, limit=limit, where=match), context=context)
        hits += [(ent.name, r) for r in page.records]
    return hits
