"""Choice field types: boolean, picklist, multipicklist."""

from __future__ import annotations

from engine.messages import Msg
import sqlalchemy as sa

from .base import FieldType, FieldValueError

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f"}


class BooleanType(FieldType):
    """``exclusive_within: <lookup>``: at most one record with the same value of that lookup has the
    field TRUE; setting it on one clears it on the others, through the record service
    (``engine.storage.exclusive``)."""

    name = "boolean"
    props = {"exclusive_within": {"type": "string", "minLength": 1}}
    formula_type = "boolean"
    widget = "checkbox"

    def check(self, field, entity, report):
        within = field.prop("exclusive_within")
        if within is not None:
            other = entity.fields.get(within)
            if other is None or not other.target or other.type_name == "reference":
                report("exclusive_within", f"exclusive_within {within!r}: {entity.name} has no lookup {within!r}")
        super().check(field, entity, report)

    def column_type(self, field):
        return sa.Boolean(create_constraint=False)

    def signature(self, field):
        return ["boolean"]

    def coerce(self, field, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise FieldValueError("type", Msg("expected true or false, got {value}", value=repr(value)))

    def json_schema(self, field):
        return {"type": "boolean"}

    def format_csv(self, field, value):
        return "" if value is None else ("true" if value else "false")


_OPTION_SCHEMA = {
    "type": "array", "minItems": 1,
    "items": {"oneOf": [
        {"type": "string"},
        {"type": "object", "required": ["value"], "additionalProperties": False,
         "properties": {"value": {"type": "string"}, "label": {},
                        "color": {"enum": ["gray", "blue", "teal", "green", "yellow", "orange", "red", "purple"],
                                  "description": "The tone of the option's badge in lists, boards and record "
                                                 "pages (the label is always written too)."},
                        "sets": {"type": "object", "minProperties": 1,
                                 "description": "Values given to other fields of the record when it is created "
                                                "with this option or changes to it (fields the write does not set "
                                                "itself)."}}}]}}


class PicklistType(FieldType):
    name = "picklist"
    props = {"options": _OPTION_SCHEMA}
    required_props = ("options",)
    formula_type = "picklist"
    widget = "select"

    def values(self, field) -> list[str]:
        return [o.value for o in field.options]

    def length(self, field) -> int:
        return max(64, *(len(v) for v in self.values(field)))

    def column_type(self, field):
        return sa.String(self.length(field))

    def signature(self, field):
        return ["string", self.length(field)]

    def widens(self, old, new):
        return old[0] == new[0] == "string" and new[1] >= old[1]

    def check(self, field, entity, report):
        values = self.values(field)
        for value in {v for v in values if values.count(v) > 1}:
            report("options", f"option {value!r} is listed twice")
        for i, option in enumerate(field.options):
            for name, value in (option.sets or {}).items():
                target = entity.fields.get(name)
                where = ("options", i, "sets", name)
                if target is None or target.name == field.name or target.type.computed or not target.stored:
                    why = "is this picklist" if target is not None and target.name == field.name else (
                        "is computed" if target is not None else "does not exist")
                    report(*where[:1], f"option {option.value!r} sets {name!r}, which {why} in {entity.name}",
                           *where[1:])
                    continue
                if value is None:
                    continue
                try:
                    target.coerce(value)
                except FieldValueError as exc:
                    report(*where[:1], f"option {option.value!r} sets {name} to {value!r}: {exc.message}", *where[1:])
        super().check(field, entity, report)

    def coerce(self, field, value):
        if not isinstance(value, str):
            raise FieldValueError("type", f"expected one of the options as text, got {type(value).__name__}")
        if value not in field.option_values:
            raise FieldValueError("choice", Msg("{value} is not one of: {options}", value=repr(value), options=", ".join(self.values(field))))
        return value

    def json_schema(self, field):
        return {"type": "string", "enum": self.values(field)}


class MultiPicklistType(PicklistType):
    """Several options; stored as ``a;b;c`` in option order (SQL matches ``';' || col || ';'`` on ``;b;``)."""

    name = "multipicklist"
    formula_type = "multipicklist"
    widget = "multiselect"

    def length(self, field):
        return max(255, sum(len(v) + 1 for v in self.values(field)))

    def column_type(self, field):
        return _SemicolonList(self.length(field))

    def check(self, field, entity, report):
        for value in self.values(field):
            if ";" in value or value != value.strip() or not value:
                report("options", f"option {value!r} of a multipicklist cannot contain ';', be empty "
                                  "or start or end with a space (values are stored as a;b;c)")
        super().check(field, entity, report)

    def coerce(self, field, value):
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(";")) if v]
        if not isinstance(value, (list, tuple)):
            raise FieldValueError("type", f"expected a list of options, got {type(value).__name__}")
        for item in value:
            if item not in field.option_values:
                raise FieldValueError("choice", Msg("{value} is not one of: {options}", value=repr(item), options=", ".join(self.values(field))))
        return [v for v in self.values(field) if v in value]

    def json_schema(self, field):
        return {"type": "array", "uniqueItems": True, "items": {"type": "string", "enum": self.values(field)}}

    def format_csv(self, field, value):
        return ";".join(value or ())


class _SemicolonList(sa.types.TypeDecorator):
    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else ";".join(value)

    def process_result_value(self, value, dialect):
        return None if value is None else [v for v in value.split(";") if v]


TYPES = (BooleanType(), PicklistType(), MultiPicklistType())
