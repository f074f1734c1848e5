"""Which column of an import file fills which field: matched automatically, editable, checked.

A header matches a field by the field's name or by its label in any language of the model (``客户名称``
-> account ``name``), ignoring case, full/half width and spaces, underscores and hyphens. A mapping
is ``{column header: field name or None (ignored)}`` plus ``constants`` (values for fields no
column fills). ``check_mapping`` refuses, naming the column, a field mapped twice, an unknown field,
a computed field, a field the user may not write, and a column the file does not have.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from engine.metadata.model import Entity

_NOISE = re.compile(r"[\s_\-]+")


class MappingError(ValueError):
    """A mapping that cannot be used; ``column`` / ``field`` name what is wrong."""

    def __init__(self, message: str, *, column: str | None = None, field: str | None = None):
        self.message, self.column, self.field = message, column, field
        super().__init__(message)


def fold(text: Any) -> str:
    """A header or label compared loosely: NFKC (full width to half width), case-folded, without
    spaces, underscores and hyphens."""
    return _NOISE.sub("", unicodedata.normalize("NFKC", str(text)).casefold())


@dataclass
class Mapping:
    columns: dict[str, str | None]
    constants: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"columns": dict(self.columns), "constants": dict(self.constants)}

    @classmethod
    def from_json(cls, data: Any) -> "Mapping":
        if not isinstance(data, dict) or not isinstance(data.get("columns", {}), dict) \
                or not isinstance(data.get("constants", {}), dict):
            raise MappingError("a mapping is {\"columns\": {header: field or null}, \"constants\": {field: value}}")
        return cls({str(k): (None if v in (None, "") else str(v)) for k, v in data.get("columns", {}).items()},
                   dict(data.get("constants", {})))


def importable(ent: Entity) -> dict[str, Any]:
    """The fields an import may fill: stored, not computed, not an autonumber."""
    return {n: f for n, f in ent.fields.items()
            if f.stored and not f.type.computed and f.type_name != "autonumber"}


def _index(ent: Entity) -> dict[str, str]:
    """Folded name and labels -> field name; a label two fields share matches neither."""
    index: dict[str, str] = {}
    clashes: set[str] = set()
    for name, f in importable(ent).items():
        if f.prop("readonly"):        # kept by the engine (owner since...): an export's column of it is left out
            continue
        for key in {fold(name), *(fold(t) for t in f.label.texts.values() if t)}:
            if index.get(key, name) != name:
                clashes.add(key)
            index[key] = name
    index[fold("owner_id")] = index[fold("owner")] = "owner_id"
    for label in ("负责人", "所有者"):
        index.setdefault(fold(label), "owner_id")
    for key in clashes:
        index.pop(key, None)
    index.setdefault("id", "id")
    return index


def auto_map(ent: Entity, headers: list[str]) -> dict[str, str | None]:
    """Each header -> the field it names (by name or label in any language), or None; a field two
    headers name goes to the first."""
    index = _index(ent)
    taken: set[str] = set()
    out: dict[str, str | None] = {}
    for header in headers:
        if not header:
            continue
        name = index.get(fold(header))
        out[header] = name if name is not None and name not in taken else None
        if name is not None:
            taken.add(name)
    return out


def complete(ent: Entity, headers: list[str], mapping: Mapping | None) -> Mapping:
    """A saved or given mapping applied to this file: columns it does not mention are auto-mapped
    (unless that would map a field twice)."""
    if mapping is None:
        return Mapping(auto_map(ent, headers))
    columns = {h: mapping.columns[h] for h in headers if h in mapping.columns}
    used = {v for v in columns.values() if v}
    for header, name in auto_map(ent, [h for h in headers if h not in columns]).items():
        columns[header] = name if name not in used else None
    return Mapping(columns, dict(mapping.constants))


def check_mapping(ent: Entity, headers: list[str], mapping: Mapping, access: Any = None) -> None:
    """Refuse a mapping that cannot be applied to ``headers`` (see the module's docstring)."""
    fields = importable(ent)
    by_field: dict[str, str] = {}
    for column, name in mapping.columns.items():
        if column not in headers:
            raise MappingError(f"the file has no column {column!r}", column=column)
        if name is None:
            continue
        if name != "id" and name != "owner_id" and name not in fields:
            why = "is computed" if name in ent.fields else "is no field of " + ent.name
            raise MappingError(f"column {column!r}: {name!r} {why}", column=column, field=name)
        if name in by_field:
            raise MappingError(f"columns {by_field[name]!r} and {column!r} are both mapped to {name!r}",
                               column=column, field=name)
        by_field[name] = column
    for name in mapping.constants:
        if name != "owner_id" and name not in fields:
            raise MappingError(f"constant for {name!r}: no such importable field of {ent.name}", field=name)
        if name in by_field:
            raise MappingError(f"{name!r} has a constant and the column {by_field[name]!r}", field=name)
    if access is not None:
        wanted = {n: None for n in [*by_field, *mapping.constants] if n != "id"}
        errors = access.write_errors(ent.name, wanted)
        if errors:
            e = errors[0]
            raise MappingError(f"{e.field}: {e.message}", column=by_field.get(e.field), field=e.field)
    if not by_field:
        raise MappingError("no column is mapped to a field")
