"""What an expression can refer to: the fields of an entity (and across its lookups), or the keys
of a plain record for ``evaluate``. The type checker asks a schema to resolve each path."""

from __future__ import annotations

from abc import ABC, abstractmethod

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

NUMERIC = frozenset({"number", "currency", "percent"})
TEXTUAL = frozenset({"text", "picklist"})
SCALARS = NUMERIC | TEXTUAL | frozenset({"boolean", "date", "datetime", "id"})
KNOWN = SCALARS | frozenset({"multipicklist", "null"})

#: Field-type names (and formula types) -> formula type, for ``evaluate(fields=...)``.
FIELD_TYPE_ALIASES = {
    "number": "number", "integer": "number", "currency": "currency", "percent": "percent",
    "text": "text", "textarea": "text", "email": "text", "phone": "text", "url": "text", "autonumber": "text",
    "boolean": "boolean", "checkbox": "boolean", "date": "date", "datetime": "datetime",
    "picklist": "picklist", "multipicklist": "multipicklist", "lookup": "id", "user": "id", "id": "id",
}

#: System columns of every entity table: name -> (formula type, lookup target).
SYSTEM = {"id": ("id", None), "created_at": ("datetime", None), "updated_at": ("datetime", None),
          "created_by": ("id", "user"), "updated_by": ("id", "user"), "owner_id": ("id", "user"),
          "version": ("number", None)}
ALIASES = {"owner": "owner_id"}
#: Keys tried, in order, when reading a segment from a plain record.
ALIAS_KEYS = {"owner": ("owner", "owner_id"), "owner_id": ("owner_id", "owner")}


@dataclass(frozen=True)
class FieldInfo:
    """A resolved reference. ``path`` is canonical (``owner`` becomes ``owner_id``); ``keys`` gives,
    per segment, the dict keys tried when reading a record (canonical name first)."""

    path: tuple[str, ...]
    type: str
    scale: int = 0
    precision: int = 18
    options: frozenset[str] | None = None
    stored: bool = True
    hops: tuple[tuple[str, str, str], ...] = ()  # (entity, lookup column, target entity) per hop
    entity: str | None = None
    column: str = ""
    field_type: str = ""
    keys: tuple[tuple[str, ...], ...] = ()
    target: str | None = None  # for id-typed references: the entity pointed at

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


class Unresolved(Exception):
    """Raised by a schema: ``segment`` is the index of the path segment that failed."""

    def __init__(self, message: str, segment: int = 0):
        super().__init__(message)
        self.message = message
        self.segment = segment


class Schema(ABC):
    """Resolves references for the type checker."""

    entity: str | None = None
    #: identity used in cache keys
    key: Any = None

    @abstractmethod
    def resolve(self, path: tuple[str, ...]) -> FieldInfo:
        """The field a reference path names."""

    @abstractmethod
    def user(self, name: str) -> FieldInfo:
        """The field ``$user.<name>`` names."""


def formula_type_of(field) -> str:
    """The formula type of a model field (``lookup``/``user`` become ``id``)."""
    source = getattr(field.type, "formula_source", None)
    if source is not None:   # a rollup: the type of what it aggregates
        return formula_type_of(source(field))
    ftype = field.type.formula_type
    if ftype == "lookup" or field.target:
        return "id"
    if ftype not in KNOWN:
        returns = field.prop("returns") if hasattr(field, "prop") else None
        if isinstance(returns, str) and FIELD_TYPE_ALIASES.get(returns) in KNOWN:
            return FIELD_TYPE_ALIASES[returns]
    return ftype


def _dims(field) -> tuple[int, int]:
    dims = getattr(field.type, "dims", None)
    if dims is not None:
        precision, scale = dims(field)
        return int(precision), int(scale)
    if field.type_name == "integer":
        return 19, 0
    return 18, 0


class ModelSchema(Schema):
    """The fields of ``entity`` in ``model``, the system columns, and paths across lookups."""

    def __init__(self, model, entity: str):
        if entity not in model.entities:
            raise KeyError(f"unknown entity {entity!r}")
        self.model = model
        self.entity = entity
        self.key = (model.digest, entity)

    def _column(self, ent, name: str):
        """(canonical name, Field or None, (type, target) for system columns) or None."""
        if name in ent.fields:
            return name, ent.fields[name], None
        canonical = ALIASES.get(name, name)
        if canonical in SYSTEM:
            return canonical, None, SYSTEM[canonical]
        return None

    def resolve(self, path):
        ent = self.model.entity(self.entity)
        hops, canonical, keys = [], [], []
        for i, seg in enumerate(path):
            found = self._column(ent, seg)
            if found is None:
                where = ent.name if i == 0 else f"{ent.name} (reached through {'.'.join(path[:i])})"
                raise Unresolved(f"{where} has no field {seg!r}{_suggest(seg, list(ent.fields) + list(SYSTEM))}", i)
            name, field, system = found
            if field is not None and field.prop("encrypted"):   # ciphertext in the database: no SQL, no rule
                raise Unresolved(f"{ent.name}.{seg} is encrypted; expressions cannot read it", i)
            canonical.append(name)
            keys.append(tuple(dict.fromkeys(
                (name, seg, *[a for a, c in ALIASES.items() if c == name and field is None]))))
            target = (field.target if field is not None else system[1])
            if i < len(path) - 1:
                if not target:
                    raise Unresolved(f"{ent.name}.{seg} is not a lookup, so it has no field {path[i + 1]!r}", i + 1)
                if target not in self.model.entities:
                    raise Unresolved(f"{ent.name}.{seg} points to {target!r}, which is not declared", i)
                hops.append((ent.name, name, target))
                ent = self.model.entity(target)
                continue
            if field is None:
                ftype = system[0]
                precision, scale = (19, 0)
                return FieldInfo(tuple(canonical), ftype, scale, precision, None, True, tuple(hops), ent.name,
                                 name, "system", tuple(keys), target)
            ftype = formula_type_of(field)
            precision, scale = _dims(field) if ftype in NUMERIC else (19, 0)
            options = frozenset(field.option_values) if ftype in ("picklist", "multipicklist") else None
            return FieldInfo(tuple(canonical), ftype, scale, precision, options, bool(field.stored), tuple(hops),
                             ent.name, name, field.type_name, tuple(keys), target)
        raise Unresolved("empty reference", 0)

    def user(self, name):
        if "user" not in self.model.entities:
            raise Unresolved("the model has no user entity", 0)
        info = ModelSchema(self.model, "user").resolve((name,))
        return info


def infer_type(value: Any) -> str | None:
    """Formula type of a Python value; None for None; 'record' for a nested dict."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "multipicklist"
    if isinstance(value, Mapping):
        return "record"
    return "unknown"


class DictSchema(Schema):
    """Types for ``evaluate``: declared in ``fields`` (``{"amount": "currency", "account.name": "text"}``),
    otherwise inferred from the values of ``record`` (nested dicts are related records)."""

    def __init__(self, record: Mapping, fields: Mapping[str, str] | None = None, user: Mapping | None = None):
        self.record = record or {}
        self.fields = dict(fields or {})
        self.user_record = user or {}
        declared = tuple(sorted((k, str(v)) for k, v in self.fields.items()))
        self.key = ("dict", declared, _signature(self.record), _signature(self.user_record))

    @staticmethod
    def declared_type(name: str) -> str:
        ftype = FIELD_TYPE_ALIASES.get(str(name).lower())
        if ftype is None:
            raise Unresolved(f"unknown type {name!r} (use one of: {', '.join(sorted(FIELD_TYPE_ALIASES))})", 0)
        return ftype

    def _lookup(self, root: Mapping, path: tuple[str, ...], prefix: str) -> FieldInfo:
        keys = tuple(ALIAS_KEYS.get(s, (s,)) for s in path)
        written = ".".join(path)
        path = tuple(ALIASES.get(s, s) for s in path)
        dotted = ".".join(path)
        declared = self.fields.get(prefix + written, self.fields.get(prefix + dotted))
        if declared is not None:
            return FieldInfo(path, self.declared_type(declared), stored=False, keys=keys)
        node: Any = root
        for i, seg in enumerate(path):
            if not isinstance(node, Mapping):
                raise Unresolved(f"{'.'.join(path[:i])} is not a related record, so it has no field {seg!r}", i)
            candidates = [k for k in keys[i] if k in node]
            candidates.sort(key=lambda k: not isinstance(node[k], Mapping))  # a nested record wins
            if not candidates:
                where = f" of {'.'.join(path[:i])}" if i else ""
                raise Unresolved(f"the record{where} has no field {seg!r} (declare its type in fields= "
                                 "if it may be missing)", i)
            node = node[candidates[0]]
        ftype = infer_type(node)
        if ftype == "record":
            ftype = "id"
        elif ftype is None:
            ftype = "null"
        elif ftype == "unknown":
            raise Unresolved(f"{dotted} holds a {type(node).__name__}, which formulas cannot use", len(path) - 1)
        return FieldInfo(path, ftype, stored=False, keys=keys)

    def resolve(self, path):
        return self._lookup(self.record, path, "")

    def user(self, name):
        if name not in self.user_record and ALIASES.get(name) not in self.user_record:
            declared = self.fields.get("$user." + name)
            keys = ((ALIASES.get(name, name), name),) if name in ALIASES else ((name,),)
            return FieldInfo((name,), self.declared_type(declared) if declared else "null", stored=False, keys=keys)
        return self._lookup(self.user_record, (name,), "$user.")


def _signature(record: Mapping, prefix: str = "") -> tuple:
    """The shape of a record (path -> inferred type), part of the compile cache key."""
    out = []
    for key, value in record.items():
        t = infer_type(value)
        if t == "record":
            out.extend(_signature(value, f"{prefix}{key}."))
        else:
            out.append((prefix + str(key), t))
    return tuple(sorted(out, key=lambda kv: kv[0]))


def _suggest(name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
