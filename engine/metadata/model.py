"""The application model: frozen dataclasses built once from the metadata layers.

Everything else (tables, record service, API, UI) is derived from an ``AppModel``. Every element
remembers where it was declared (``origin``) and which later layers changed it (``changes``), so an
implementer can tell a base field from an industry or site customisation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import Location

if TYPE_CHECKING:
    from engine.fields.base import FieldType

SYSTEM_COLUMNS = ("id", "created_at", "updated_at", "created_by", "updated_by", "owner_id", "version")


@dataclass(frozen=True)
class Label:
    """A text in several languages; ``str()`` gives English."""

    texts: Mapping[str, str]

    @classmethod
    def of(cls, value: Any, fallback: str) -> "Label":
        if isinstance(value, Mapping):
            return cls(MappingProxyType(dict(value)))
        if value:
            return cls(MappingProxyType({"en": str(value)}))
        return cls(MappingProxyType({"en": fallback.replace("_", " ").capitalize()}))

    def get(self, lang: str = "en") -> str:
        return self.texts.get(lang) or self.texts.get("en") or next(iter(self.texts.values()), "")

    def __str__(self) -> str:
        return self.get("en")


@dataclass(frozen=True)
class Change:
    """A later layer that changed some properties of an element."""

    location: Location
    properties: tuple[str, ...]


@dataclass(frozen=True)
class Option:
    """One value of a picklist."""

    value: str
    label: Label
    #: Values this option gives other fields when a record takes it (``sets:``), or None.
    sets: Mapping[str, Any] | None = None
    #: The tone its badge is drawn in (``color:``, a tone name: gray, blue, teal, green, yellow, orange, red, purple), or None for the neutral one.
    color: str | None = None


@dataclass(frozen=True)
class Field:
    """One field of an entity. ``type`` is the registered field-type object."""

    name: str
    type: "FieldType"
    label: Label
    props: Mapping[str, Any]
    origin: Location
    changes: tuple[Change, ...] = ()
    #: Set by the loader where storage depends on the field, not only its type (a formula field
    #: reading other records is computed on read, not stored).
    stored_here: bool | None = None
    #: Set by the loader for a rollup field: the child field it aggregates (``engine.fields.rollup``).
    source: "Field | None" = field(default=None, compare=False, repr=False)

    @property
    def type_name(self) -> str:
        return self.type.name

    def prop(self, key: str, default: Any = None) -> Any:
        return self.props.get(key, default)

    @property
    def required(self) -> bool:
        return bool(self.props.get("required"))

    @property
    def unique(self) -> bool:
        return bool(self.props.get("unique"))

    @property
    def readonly(self) -> bool:
        return bool(self.props.get("readonly")) or self.type.computed

    @property
    def default(self) -> Any:
        return self.props.get("default")

    @cached_property
    def options(self) -> tuple[Option, ...]:
        """Picklist options, normalised to ``Option`` (empty for other types)."""
        out = []
        for item in self.props.get("options") or ():
            if isinstance(item, Mapping):
                sets = item.get("sets")
                out.append(Option(str(item["value"]), Label.of(item.get("label"), str(item["value"])),
                                  MappingProxyType(dict(sets)) if isinstance(sets, Mapping) else None,
                                  item.get("color")))
            else:
                out.append(Option(str(item), Label.of(None, str(item))))
        return tuple(out)

    @cached_property
    def coerce(self) -> Callable[[Any], Any]:
        """Raw input -> checked value for this field (its type's coercer, built once)."""
        return self.type.coercer(self)

    @cached_property
    def option_values(self) -> frozenset[str]:
        return frozenset(o.value for o in self.options)

    @cached_property
    def target(self) -> str | None:
        """Entity a lookup points to."""
        return self.type.target(self)

    @property
    def stored(self) -> bool:
        return self.type.stored if self.stored_here is None else self.stored_here

    @property
    def computed_on_read(self) -> bool:
        """A computed field without a column: the record service fills it in on every read."""
        return self.type.computed and not self.stored

    @property
    def default_formula(self) -> str | None:
        """The expression of a default written as ``{formula: "..."}`` (None for a literal default)."""
        value = self.props.get("default")
        if isinstance(value, Mapping) and isinstance(value.get("formula"), str):
            return value["formula"]
        return None

    @property
    def default_lookup(self) -> Mapping | None:
        """A default looked up in another entity, ``{lookup: {entity, where, value}}`` (None otherwise)."""
        value = self.props.get("default")
        if isinstance(value, Mapping) and isinstance(value.get("lookup"), Mapping):
            return value["lookup"]
        return None

    @property
    def literal_default(self) -> Any:
        """The default when it is a plain value (None for a formula or a lookup)."""
        if self.default_formula is not None or self.default_lookup is not None:
            return None
        return self.default


@dataclass(frozen=True)
class Index:
    name: str | None
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class Entity:
    """One entity (a table, a record type)."""

    name: str
    label: Label
    plural: Label
    fields: Mapping[str, Field]
    title: str
    module: str
    indexes: tuple[Index, ...]
    layouts: Mapping[str, Any]
    validations: tuple[Mapping[str, Any], ...]
    workflow: Mapping[str, Any] | None
    demo: Mapping[str, Any]
    origin: Location
    changes: tuple[Change, ...] = ()
    props: Mapping[str, Any] = field(default_factory=dict)

    @property
    def table(self) -> str:
        return self.name

    def field(self, name: str) -> Field:
        return self.fields[name]

    @property
    def unique_keys(self) -> tuple[tuple[str, ...], ...]:
        """Field combinations that identify one record: unique fields and unique indexes."""
        keys = [(f.name,) for f in self.fields.values() if f.unique and f.stored]
        keys += [i.fields for i in self.indexes if i.unique and i.fields not in keys]
        return tuple(keys)

    def lookups(self) -> list[Field]:
        return [f for f in self.fields.values() if f.target]


OPERATIONS = ("read", "create", "update", "delete", "export", "import")
SCOPES = ("own", "team", "subordinates", "all")


@dataclass(frozen=True)
class Grant:
    """What a role may do with one entity (``engine/metadata/roles.py`` builds it)."""

    allow: frozenset[str]
    scope: str = "all"
    share: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)   # field -> edit | read | none
    origin: Location | None = None


@dataclass(frozen=True)
class Role:
    """A role document: ``user.role`` names it. ``admin`` bypasses every permission."""

    name: str
    label: Label
    admin: bool
    entities: Mapping[str, Grant]
    default: Grant | None
    origin: Location
    #: The home page's panels for this role, in order (``home:``; keys of ``crm_home_panels``'s
    #: panels); None: every panel, in the order the plugins give.
    home: tuple[str, ...] | None = None

    def grant(self, entity: str) -> Grant | None:
        return self.entities.get(entity, self.default)

    def grants(self) -> list[tuple[str, str | None, Grant]]:
        """Every grant as (its key in the document: ``entities/<entity>`` or ``default``, the entity
        or None for the default, the grant)."""
        out = [(f"entities/{e}", e, g) for e, g in self.entities.items()]
        if self.default is not None:
            out.append(("default", None, self.default))
        return out


@dataclass(frozen=True)
class AppModel:
    """The whole validated model. Build it with ``engine.metadata.load_model``."""

    entities: Mapping[str, Entity]
    documents: Mapping[str, tuple[Mapping[str, Any], ...]]
    layers: tuple[tuple[str, str], ...]
    digest: str
    roles: Mapping[str, Role] = field(default_factory=dict)

    def entity(self, name: str) -> Entity:
        return self.entities[name]

    def references_to(self, entity: str) -> list[tuple[Entity, Field]]:
        """Every (entity, lookup field) that points at ``entity``."""
        return [(e, f) for e in self.entities.values() for f in e.fields.values() if f.target == entity]

    def summary(self) -> dict[str, int]:
        return {"entities": len(self.entities),
                "fields": sum(len(e.fields) for e in self.entities.values())}


def digest_of(data: Any) -> str:
    """Stable hash of the merged metadata, used as the model's version identity."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]
