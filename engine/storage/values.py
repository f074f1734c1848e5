"""The value types of the write path: what a write to an entity needs (``WritePlan``, computed once
per entity), what a statement wrote (``Written``), what a bulk call reports (``BulkResult``), and
``OWNER``, the one system column callers may write."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.fields.relation import UserType
from engine.metadata.errors import Location
from engine.metadata.model import Entity, Field, Label


@dataclass(frozen=True)
class WritePlan:
    """Per-entity facts every write needs, precomputed."""

    writable: dict[str, tuple[Field, Any, bool, bool]]   # name -> (field, coerce, readonly, blank is null)
    defaults: tuple[tuple[str, Any], ...]
    required: frozenset[str]
    tracked: tuple[Field, ...]
    autonumbers: tuple[Field, ...]
    pointers: tuple[Field, ...]
    #: (picklist, {option: ((field, value), ...)}) for picklists whose options declare ``sets``.
    option_sets: tuple[tuple[str, dict[str, tuple[tuple[str, Any], ...]]], ...] = ()
    #: Booleans declaring ``exclusive_within`` (at most one TRUE per value of that lookup).
    exclusive: tuple[Field, ...] = ()

    @classmethod
    def of(cls, ent: Entity) -> WritePlan:
        fields = [f for f in ent.fields.values() if f.stored]
        writable = {f.name: (f, f.coerce, f.readonly, f.type_name not in ("text", "textarea"))
                    for f in (*fields, OWNER)}
        return cls(
            writable=writable,
            defaults=tuple((f.name, f.coerce(f.literal_default)) for f in fields
                           if f.literal_default is not None)
            + tuple((f.name, f.type.zero(f)) for f in fields if f.type_name == "rollup"),
            required=frozenset(f.name for f in fields if f.required and not f.type.computed),
            tracked=tuple(f for f in fields if f.prop("track_history")),
            autonumbers=tuple(f for f in fields if f.type_name == "autonumber"),
            pointers=tuple(f for f in (*fields, OWNER) if f.target or f.type_name == "reference"),
            option_sets=tuple((f.name, {o.value: tuple((name, None if v is None else ent.fields[name].coerce(v))
                                                       for name, v in o.sets.items())
                                        for o in f.options if o.sets})
                              for f in fields if f.type_name == "picklist" and any(o.sets for o in f.options)),
            exclusive=tuple(f for f in fields if f.type_name == "boolean" and f.prop("exclusive_within")),
        )


@dataclass(frozen=True)
class Written:
    """The rows a statement returned and how many it affected."""

    rows: list
    rowcount: int


@dataclass
class BulkResult:
    """One item per row of a bulk call: its index, status (created, updated, unchanged, error, skipped), id or errors."""

    items: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(i["status"] != "error" for i in self.items)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item["status"]] = out.get(item["status"], 0) + 1
        return out


def jsonable(field: Field, value: Any) -> Any:
    """A stored value as JSON (history rows, the audit of a delete)."""
    return None if value is None else field.type.to_json(field, value)


#: ``owner_id`` is a system column that callers may write, like a user lookup.
OWNER = Field(name="owner_id", type=UserType(), label=Label.of({"en": "Owner", "zh": "负责人"}, "owner"),
              props=MappingProxyType({"type": "user", "on_delete": "restrict"}),
              origin=Location("system", "engine", 0))