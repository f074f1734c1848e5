"""What a person sees for a record that another record points at: its title.

Shared by the screens (``engine/ui/present.py``) and the exports of lists (``engine/api/exports.py``),
which must show the same text for the same pointer: the target's ``title`` field, read with the
caller's rights, one query per target entity and page. A record the caller may not read keeps only
its id (the caller decides how to show it).
"""

from __future__ import annotations

from typing import Iterable

from engine.metadata.model import Entity

#: English labels of the system columns (screens translate them through the interface catalog).
SYSTEM_LABELS = {"id": "ID", "created_at": "Created", "updated_at": "Last modified", "created_by": "Created by",
                 "updated_by": "Last modified by", "owner_id": "Owner", "version": "Version"}

__all__ = ["SYSTEM_LABELS", "TEXT_TITLE_TYPES", "pointer_titles", "text_title", "title_of"]

#: Field types whose stored text a title can be matched against (type-ahead, search, filters).
TEXT_TITLE_TYPES = ("text", "textarea", "email", "phone", "url", "autonumber")


def text_title(ent: Entity) -> str | None:
    """The name of the stored text column holding ``ent``'s titles (a text field, or the text formula
    a ``title: {formula: ...}`` is stored in), or None (titles are ids, or computed on read)."""
    field = ent.fields.get(ent.title)
    if field is None or not field.stored:
        return None
    if field.type_name in TEXT_TITLE_TYPES or (field.type_name == "formula" and field.prop("returns") == "text"):
        return field.name
    return None


def title_of(ent: Entity, record: dict | None) -> str:
    """The title of ``record`` (its ``title`` field, else "<Entity> #<id>")."""
    if record is None:
        return ""
    value = record.get(ent.title)
    return str(value) if value not in (None, "") else f"{ent.label.get('en')} #{record.get('id')}"


def pointer_titles(records, pointers: Iterable[tuple[str, str | None]], rows: list[dict], context) -> dict:
    """``{(target entity, id): title}`` for the values of ``pointers`` in ``rows``.

    ``pointers`` are ``(column, target entity)`` for lookups and user columns, ``(column, None)`` for a
    reference column (whose values name their entity). Targets the caller's role may not read at
    all, and records outside their scope, are left out."""
    access = getattr(context, "access", None)
    model = records.model
    wanted: dict[str, set[int]] = {}
    for name, target in pointers:
        for row in rows:
            value = row.get(name)
            if value is None:
                continue
            entity, rid = (target, value) if target is not None else (getattr(value, "entity", None), getattr(value, "id", None))
            if entity in model.entities and isinstance(rid, int):
                wanted.setdefault(entity, set()).add(rid)
    titles: dict[tuple[str, int], str] = {}
    for entity, ids in wanted.items():
        if access is not None and not access.can(entity, "read"):
            continue
        target = model.entity(entity)
        found = records.fetch_many(entity, ids, context=context)
        titles.update({(entity, rid): title_of(target, rec) for rid, rec in found.items()})
    return titles
