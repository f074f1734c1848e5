"""Search: a text in the ``searchable`` fields of every entity the caller may read.

Each entity is one list query through the record service (so the caller's record scope, sharing
rules and hidden fields apply as for any list): the text is matched case-insensitively, as a
bound parameter, against the searchable stored text fields the caller may read (encrypted fields
are never searched).

Results are ranked within each entity: records whose title equals the text come first, then those
whose title starts with it, then any other match (titles may be computed: a ``title: {formula:}``
is stored in ``display_name``, so "Andrew Fuller" finds the contact whose names are Andrew and
Fuller). The matching is a ``LIKE`` scan (no full-text index yet)."""

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
                 and (f.type_name in TEXT_TYPES or (f.type_name == "formula" and f.prop("returns") == "text")) and not f.prop("encrypted") and f.name not in hidden]
        if not names:
            continue
        table = records.table(ent.name)
        match = sa.or_(*(table.c[n].icontains(text, autoescape=True) for n in names))
        found: dict[int, dict] = {}
        if ent.title in names:   # title matches first: exact, then prefix
            title = sa.func.lower(table.c[ent.title])
            for cond in (title == text.lower(), table.c[ent.title].istartswith(text, autoescape=True)):
                page = records.list(ListQuery(ent.name, limit=limit, where=cond), context=context)
                found.update((r["id"], r) for r in page.records if r["id"] not in found)
        if len(found) < limit:
            cond = sa.and_(match, table.c.id.notin_(list(found))) if found else match
            page = records.list(ListQuery(ent.name, limit=limit - len(found), where=cond), context=context)
            found.update((r["id"], r) for r in page.records)
        hits += [(ent.name, r) for r in list(found.values())[:limit]]
    return hits
