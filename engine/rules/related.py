"""Reading the related records a compiled expression needs, for evaluating it on one record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from .schema import ALIASES, SYSTEM


def fetch_related(conn, metadata: sa.MetaData, model, entity: str, record: Mapping,
                  paths: Iterable[str]) -> dict:
    """Nested related records for the lookup paths among ``paths`` (``CompiledRule.fields``), read
    with one SELECT per related record; pass the result as ``evaluate(..., related=...)``.

    ``fetch_related(conn, rt.records.metadata, rt.model, "child", record, {"parent.owner_id.email"})``
    gives ``{"account": {..., "owner_id": {...the user...}}}``; a blank lookup gives ``None``."""
    wanted: dict[str, set[str]] = {}
    for path in paths:
        head, _, rest = path.partition(".")
        if rest:
            wanted.setdefault(ALIASES.get(head, head), set()).add(rest)
    ent = model.entity(entity)
    out: dict = {}
    for name, rest in wanted.items():
        field = ent.fields.get(name)
        target = field.target if field is not None else SYSTEM.get(name, (None, None))[1]
        if not target:
            continue
        value = record.get(name)
        if value is None and name == "owner_id":
            value = record.get("owner")
        if isinstance(value, Mapping):
            value = value.get("id")
        if value is None:
            out[name] = None
            continue
        table = metadata.tables[model.entity(target).table]
        row = conn.execute(sa.select(table).where(table.c.id == value)).mappings().first()
        if row is None:
            out[name] = None
            continue
        nested = dict(row)
        nested.update(fetch_related(conn, metadata, model, target, nested, rest))
        out[name] = nested
    return out
