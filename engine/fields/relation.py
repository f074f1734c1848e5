"""Relation field types: lookup (to one entity), user (lookup to users), reference (to any record)."""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

from .base import INT64_MAX, FieldType, FieldValueError, whole_number

ON_DELETE = ("restrict", "set_null", "cascade")


def _record_id(value: Any) -> int:
    if isinstance(value, dict) and "id" in value:
        value = value["id"]
    if isinstance(value, bool):
        raise FieldValueError("type", "expected a record id")
    if isinstance(value, str) and whole_number(value.strip()) is not None:
        value = whole_number(value.strip())
    if not isinstance(value, int) or value <= 0:
        raise FieldValueError("type", f"expected a record id (a positive integer), got {value!r}")
    if value > INT64_MAX:
        raise FieldValueError("max", "is larger than any record id")
    return value


class LookupType(FieldType):
    name = "lookup"
    #: ``import_by``: how an import finds the target from a cell: ``title`` (default) or a unique field of it.
    props = {"to": {"type": "string"}, "on_delete": {"enum": list(ON_DELETE)}, "import_by": {"type": "string"}}
    required_props = ("to",)
    formula_type = "lookup"
    widget = "lookup"

    def target(self, field):
        return field.prop("to")

    def column_type(self, field):
        return sa.BigInteger()

    def signature(self, field):
        return ["ref", self.target(field)]

    def coerce(self, field, value):
        return _record_id(value)

    def json_schema(self, field):
        return {"type": "integer", "minimum": 1, "description": f"id of a {self.target(field)}"}


class UserType(LookupType):
    """A lookup to the system ``user`` entity."""

    name = "user"
    props = {"on_delete": {"enum": list(ON_DELETE)}, "import_by": {"type": "string"}}
    required_props = ()
    widget = "user"

    def target(self, field):
        return "user"


class Ref(NamedTuple):
    """A pointer to any record: entity name and id."""

    entity: str
    id: int

    def __str__(self) -> str:
        return f"{self.entity}:{self.id}"


class ReferenceType(FieldType):
    """A pointer to a record of any of several entities (``to: [a, b]``, or any when omitted).

    Stored in one indexed text column as ``entity:id``; deleting the target follows
    ``on_delete`` like a lookup, enforced by the record service.
    """

    name = "reference"
    props = {"to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
             "on_delete": {"enum": list(ON_DELETE)}}
    formula_type = "reference"
    widget = "reference"

    def targets(self, field, model_entities) -> list[str]:
        return list(field.prop("to") or model_entities)

    def column_type(self, field):
        return _RefColumn(120)

    def signature(self, field):
        return ["string", 120]

    def coerce(self, field, value):
        if isinstance(value, Ref):
            ref = value
        elif isinstance(value, dict) and isinstance(value.get("entity"), str):
            ref = Ref(value["entity"], _record_id(value.get("id")))
        elif isinstance(value, str) and ":" in value:
            entity, _, rid = value.partition(":")
            ref = Ref(entity.strip(), _record_id(rid))
        else:
            raise FieldValueError("type", 'expected {"entity": name, "id": n} or "entity:id"')
        allowed = field.prop("to")
        if allowed and ref.entity not in allowed:
            raise FieldValueError("choice", f"may point only to: {', '.join(allowed)}")
        return ref

    def to_json(self, field, value):
        return {"entity": value.entity, "id": value.id}

    def json_schema(self, field):
        return {"type": "object", "required": ["entity", "id"],
                "properties": {"entity": {"type": "string"}, "id": {"type": "integer", "minimum": 1}}}

    def format_csv(self, field, value):
        return "" if value is None else str(value)


class _RefColumn(sa.types.TypeDecorator):
    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else str(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        entity, _, rid = value.partition(":")
        return Ref(entity, int(rid))


TYPES = (LookupType(), UserType(), ReferenceType())
