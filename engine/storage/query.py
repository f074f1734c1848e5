"""List queries: filters, sorting, keyset and offset pagination, capped counts, time limits.

A ``ListQuery`` is what the REST API, the UI and exports ask of the record service; it is built
from checked parts only (field names known to the model, values coerced by their field types),
and compiled to one SQLAlchemy statement with bound parameters.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.fields import FieldValueError, unsafe_text
from engine.metadata.model import SYSTEM_COLUMNS, Entity

from .errors import FieldError, ValidationFailed

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "startswith", "isnull")
TEXT_OPERATORS = ("contains", "startswith")
ORDER_OPERATORS = ("gt", "gte", "lt", "lte")
TEXT_TYPES = ("text", "textarea", "email", "phone", "url", "autonumber", "picklist")
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
COUNT_CAP = 10_000
NOT_PERMITTED = "unknown or not permitted field"
#: System columns as the query layer sees them: (name, type name for coercion).
SYSTEM_TYPES = {"id": "integer", "created_at": "datetime", "updated_at": "datetime", "created_by": "user",
                "updated_by": "user", "owner_id": "user", "version": "integer"}
#: System columns narrower than their type: version is a 32-bit INTEGER column (PostgreSQL refuses a
#: larger filter value with an error), so its values are checked like a field's min/max.
SYSTEM_BOUNDS = {"version": {"min": -(2**31), "max": 2**31 - 1}}


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class SortKey:
    field: str
    descending: bool = False


@dataclass
class ListQuery:
    entity: str
    filters: list[Filter] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    cursor: str | None = None
    count: bool = False
    formula: str | None = None  # a condition in the formula language (the API's where=, saved views)
    columns: tuple[str, ...] | None = None  # only these stored fields are needed (sparse fieldsets)
    where: Any = None           # an extra SQLAlchemy condition (sharing rules)
    sums: tuple[str, ...] = ()  # numeric fields summed over every matching record (kanban lane totals)


@dataclass
class Page:
    records: list[dict]
    next_cursor: str | None
    total: int | None = None
    total_is_estimate: bool = False
    sums: dict[str, Any] = field(default_factory=dict)


class QueryError(ValidationFailed):
    """A list query that names something unknown or carries a bad value (a 400, never a 500)."""


def operators_for(field) -> tuple[str, ...]:
    """The filter operators ``field`` takes: contains/startswith on text types, no ordering of
    true/false (the OpenAPI document lists the same)."""
    boolean = field.type_name == "boolean" or field.prop("returns") == "boolean"
    return tuple(op for op in OPERATORS if (op not in TEXT_OPERATORS or field.type_name in TEXT_TYPES)
                 and not (boolean and op in ORDER_OPERATORS))


def coerce_filter(ent: Entity, name: str, op: str, raw: Any, hidden: frozenset[str] = frozenset()) -> Filter:
    """Check a filter's field and operator and coerce its value by the field's type.

    A field in ``hidden`` (the caller may not read it) is refused like an unknown one, before its
    value is looked at, so the answer tells nothing about the field."""
    field_ = ent.fields.get(name)
    if name in hidden or (field_ is None and name not in SYSTEM_TYPES):
        raise QueryError([FieldError(name, "unknown", f"{ent.name} has no field {name!r} ({NOT_PERMITTED})")],
                         ent.name)
    if field_ is not None and not field_.stored:
        raise QueryError([FieldError(name, "not_filterable", f"{name} is not stored and cannot be filtered")], ent.name)
    if field_ is not None and field_.prop("encrypted"):
        raise QueryError([FieldError(name, "not_filterable", f"{name} is encrypted and cannot be filtered")], ent.name)
    if op not in OPERATORS:
        raise QueryError([FieldError(name, "operator", f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")],
                         ent.name)
    type_name = field_.type_name if field_ is not None else SYSTEM_TYPES[name]
    if op in TEXT_OPERATORS and type_name not in TEXT_TYPES:
        raise QueryError([FieldError(name, "operator", f"{op} applies to text fields, not {type_name}")], ent.name)
    if op in ORDER_OPERATORS and op not in operators_for(field_ or system_field(name)):
        raise QueryError([FieldError(name, "operator", f"{op} does not apply to true/false values")], ent.name)
    if op == "isnull":
        try:
            return Filter(name, op, system_field("isnull", "boolean").coerce(raw))
        except FieldValueError as exc:
            raise QueryError([FieldError(name, exc.code, "isnull takes true or false")], ent.name) from None
    if op in TEXT_OPERATORS:
        if not isinstance(raw, str):
            raise QueryError([FieldError(name, "type", "expected text")], ent.name)
        if unsafe_text(raw):
            raise QueryError([FieldError(name, "encoding", unsafe_text(raw))], ent.name)
        return Filter(name, op, raw)
    coerce = (field_ or system_field(name)).coerce
    try:
        if op == "in":
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p != ""]
            if not items or len(items) > 1000:
                raise FieldValueError("in", "in takes 1 to 1000 comma-separated values")
            value = [coerce(item) for item in items]
        elif type_name == "multipicklist":
            value = coerce(raw)
        else:
            value = coerce(raw)
    except FieldValueError as exc:
        raise QueryError([FieldError(name, exc.code, exc.message)], ent.name) from None
    return Filter(name, op, value)


def check_sort(ent: Entity, text: str, hidden: frozenset[str] = frozenset()) -> list[SortKey]:
    keys = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        name = part.lstrip("-+")
        if name in hidden or (name not in SYSTEM_TYPES and (name not in ent.fields or not ent.fields[name].stored)):
            raise QueryError([FieldError(name, "unknown", f"cannot sort by {name!r}: {ent.name} has no such field "
                                                          f"({NOT_PERMITTED})")], ent.name)
        if name in ent.fields and ent.fields[name].prop("encrypted"):
            raise QueryError([FieldError(name, "not_sortable", f"cannot sort by {name!r}: it is encrypted")], ent.name)
        keys.append(SortKey(name, part.startswith("-")))
    return keys


def build_select(table: sa.Table, q: ListQuery, columns: list | None = None) -> tuple[sa.Select, list[SortKey]]:
    """The statement for one page (without LIMIT), and the full sort order with ``id`` last."""
    stmt = sa.select(*(columns or [table]))
    for f in q.filters:
        stmt = stmt.where(_condition(table.c[f.field], f))
    if q.where is not None:
        stmt = stmt.where(q.where)
    keys = [k for k in q.sort if k.field != "id"]
    # id breaks ties in the direction of the last key, so an index on (key, id) serves the whole order
    keys.append(next((k for k in q.sort if k.field == "id"), SortKey("id", bool(keys) and keys[-1].descending)))
    for key in keys:
        col = table.c[key.field]
        ordered = col.desc() if key.descending else col.asc()
        stmt = stmt.order_by(ordered.nulls_last() if col.nullable else ordered)   # blanks last, on every database
    return stmt, keys


def after_cursor(table: sa.Table, keys: list[SortKey], values: list) -> sa.ColumnElement:
    """Rows strictly after ``values`` in the order ``keys`` (NULLS LAST in both directions)."""
    options = []
    for i, key in enumerate(keys):
        equal = [_equal(table.c[k.field], v) for k, v in zip(keys[:i], values[:i])]
        beyond = _beyond(table.c[key.field], key.descending, values[i], table.c[key.field].nullable)
        if beyond is not None:
            options.append(sa.and_(*equal, beyond))
    if not options:
        return sa.false()
    return sa.and_(_from(table.c[keys[0].field], keys[0].descending, values[0]), sa.or_(*options))


def encode_cursor(keys: list[SortKey], record: dict) -> str:
    payload = [_jsonable(record.get(k.field)) for k in keys]
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(ent: Entity, keys: list[SortKey], text: str) -> list:
    """A cursor back to typed values; anything malformed is a 400 naming the cursor."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(raw, list) or len(raw) != len(keys):
            raise ValueError("wrong shape")
        values = []
        for key, value in zip(keys, raw):
            if value is None:
                values.append(None)
                continue
            values.append((ent.fields.get(key.field) or system_field(key.field)).coerce(value))
        return values
    except (ValueError, TypeError, FieldValueError, UnicodeDecodeError) as exc:
        raise QueryError([FieldError("cursor", "cursor", f"cursor is not valid for this sort order ({exc})")],
                         ent.name) from None


# -- private -------------------------------------------------------------------------------------

def _condition(col, f: Filter):
    op, value = f.op, f.value
    if op == "isnull":
        return col.is_(None) if value else col.is_not(None)
    if op == "eq":
        return col.is_(None) if value is None else col == value
    if op == "ne":
        return col.is_not(None) if value is None else sa.or_(col != value, col.is_(None))
    if op == "in":
        return col.in_(value)
    if op == "contains":
        return col.icontains(value, autoescape=True)
    if op == "startswith":
        return col.istartswith(value, autoescape=True)
    return {"gt": col.__gt__, "gte": col.__ge__, "lt": col.__lt__, "lte": col.__le__}[op](value)


def _equal(col, value):
    return col.is_(None) if value is None else col == value


def _from(col, descending: bool, value):
    """A bound on the first sort key that the rows after a cursor all meet. It says nothing the
    OR of the keys does not, but the database can seek the index to it instead of reading the index
    from its first row (page 20,000 of a million rows: 58 ms without it, 0.04 ms with it)."""
    if value is None:
        return col.is_(None)
    bound = col <= value if descending else col >= value
    return sa.or_(bound, col.is_(None)) if col.nullable else bound


def _beyond(col, descending: bool, value, nullable: bool = True):
    if value is None:  # NULLs come last: nothing lies beyond them in this column
        return None
    after = col < value if descending else col > value
    return sa.or_(after, col.is_(None)) if nullable else after


def _jsonable(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):  # a reference
        return f"{value[0]}:{value[1]}"
    if isinstance(value, list):
        return ";".join(value)
    return value


@lru_cache(maxsize=None)
def system_field(name: str, type_name: str | None = None):
    """A ``Field`` standing for a system column (or an ad-hoc value of a built-in type)."""
    from engine.fields import builtin_types
    from engine.metadata.errors import Location
    from engine.metadata.model import Field, Label

    type_name = type_name or SYSTEM_TYPES[name]
    ftype = next(t for t in builtin_types() if t.name == type_name)
    bounds = SYSTEM_BOUNDS.get(name, {}) if type_name == SYSTEM_TYPES.get(name) else {}
    return Field(name=name, type=ftype, label=Label.of(None, name), props={"type": type_name, **bounds},
                 origin=Location("system", "engine", 0))


__all__ = ["COUNT_CAP", "DEFAULT_LIMIT", "MAX_LIMIT", "OPERATORS", "SYSTEM_COLUMNS", "Filter", "ListQuery",
           "Page", "QueryError", "SortKey", "after_cursor", "build_select", "check_sort", "coerce_filter",
           "decode_cursor", "encode_cursor", "system_field"]
