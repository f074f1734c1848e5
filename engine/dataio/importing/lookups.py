"""Lookup cells -> record ids, one query per lookup field and chunk (never one per row).

A lookup field's ``import_by`` (metadata, docs/metadata.md) names how its cells find the target:
``title`` (the default: the target entity's ``title`` field) or the name of a unique field of the
target (``external_id``, ``account_number``...). A cell of digits prefixed ``#`` (``#42``) is an id.
What happens to a cell that finds nothing is the import's choice ``unresolved``:

* ``error`` (default): the row is rejected, naming the column and the value;
* ``empty``: the lookup stays empty;
* ``create``: the target is created with that value in its key field (through the record service,
  with the importing user's rights), once per distinct value.

A title two targets share is an error for that row (ambiguous), whatever the choice.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine.storage.context import Context

from .convert import CellError

#: The entity of users: a user field's cells name a user by name or e-mail.
USER = "user"
UNRESOLVED = ("error", "empty", "create")


def key_field(model, f) -> tuple[str, str]:
    """(target entity, field of the target the cells of lookup ``f`` are compared with)."""
    target = model.entities[f.target]
    by = f.prop("import_by") or "title"
    return target.name, (target.title if by == "title" else by)


class Resolver:
    def __init__(self, records, fields: dict[str, Any], unresolved: str, context: Context):
        if unresolved not in UNRESOLVED:
            raise ValueError(f"unresolved must be one of {', '.join(UNRESOLVED)}")
        self.records, self.fields, self.unresolved, self.context = records, fields, unresolved, context

    def resolve(self, conn, name: str, cells: set[str]) -> dict[str, int | CellError | None]:
        """Each distinct cell of lookup ``name`` in a chunk -> an id, None (left empty) or a CellError."""
        f = self.fields[name]
        target, key = key_field(self.records.model, f)
        out: dict[str, Any] = {}
        wanted = []
        for cell in cells:
            if cell.startswith("#") and cell[1:].isdigit():
                out[cell] = int(cell[1:])
            else:
                wanted.append(cell)
        if not wanted:
            return out
        table = self.records.table(target)
        found: dict[str, list[int]] = {}
        by_email = [c for c in wanted if "@" in c] if target == USER and key != "email" else []
        for column, cells in ((key, [c for c in wanted if c not in by_email]), ("email", by_email)):
            for start in range(0, len(cells), 5000):   # a user by name, or by e-mail when the cell is one
                part = cells[start:start + 5000] if column != "email" else [c.lower() for c in cells[start:start + 5000]]
                for rid, value in conn.execute(sa.select(table.c.id, table.c[column]).where(table.c[column].in_(part))):
                    found.setdefault(str(value), []).append(rid)
        for cell in by_email:
            found.setdefault(cell, found.get(cell.lower(), []))
        missing = []
        for cell in wanted:
            ids = found.get(cell, [])
            if len(ids) > 1:
                out[cell] = CellError(f"{cell!r} names {len(ids)} {target} records by {key}: give a unique "
                                      f"value or #id")
            elif ids:
                out[cell] = ids[0]
            elif self.unresolved == "error":
                out[cell] = CellError(f"no {target} has {key} {cell!r}")
            elif self.unresolved == "empty":
                out[cell] = None
            else:
                missing.append(cell)
        if missing:
            result = self.records.bulk(target, [{key: cell} for cell in missing], mode="create", atomic=False,
                                       context=self.context, conn=conn)
            for cell, item in zip(missing, result.items):
                if item["status"] == "created":
                    out[cell] = item["id"]
                else:
                    why = "; ".join(f"{e['field']}: {e['message']}" for e in item.get("errors", []))
                    out[cell] = CellError(f"could not create the {target} {cell!r}: {why}")
        return out
