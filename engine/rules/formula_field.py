"""The formula field type: a value computed from an expression of the formula language.

``returns`` names the type of the result (text, number, currency, percent, integer, date,
datetime, boolean); the field stores, reads and writes its values like a field of that type.
When the expression reads only the record's own (stored) fields the value is stored in a column
and recomputed on every save; when it reads other records (a lookup path such as
``parent.name``) or ``$user`` it is not stored and the record service computes it on read.
Users never write it.

It lives with the formula language, above the field types it returns, because whether it is
stored depends on what its expression reads; the core plugin registers it with the others.
"""

from __future__ import annotations

from typing import Any

from engine.fields.base import FieldType

from . import ast
from .errors import RuleError
from .parser import parse

RETURNS = ("text", "number", "currency", "percent", "integer", "date", "datetime", "boolean")


def _base_types() -> dict[str, FieldType]:
    from engine.fields import choice, numeric, temporal, text

    by_name = {t.name: t for t in (*text.TYPES, *numeric.TYPES, *temporal.TYPES, *choice.TYPES)}
    out = {name: by_name[name] for name in RETURNS}
    out["text"] = by_name["textarea"]   # a computed text has no length limit of its own
    return out


class FormulaType(FieldType):
    name = "formula"
    props = {"returns": {"enum": list(RETURNS)}, "expr": {"type": "string", "minLength": 1},
             "scale": {"type": "integer", "minimum": 0, "maximum": 8},
             "blank_as_zero": {"type": "boolean"}}
    required_props = ("returns", "expr")
    common = frozenset({"type", "label", "help", "track_history", "searchable", "indexed", "renamed_from",
                        "visible_when"})
    formula_type = "formula"   # the checker reads ``returns`` (engine.rules.schema.formula_type_of)
    widget = "readonly"
    computed = True
    _bases: dict[str, FieldType] | None = None

    def base(self, field) -> FieldType:
        """The field type of the result, which decides column, JSON and CSV forms."""
        if FormulaType._bases is None:
            FormulaType._bases = _base_types()
        return FormulaType._bases[field.prop("returns") or "text"]

    def check(self, field, entity, report):
        """Nothing here: the expression is checked with every other expression when the model loads."""

    @staticmethod
    def reads_other_records(field, entity, seen: frozenset = frozenset()) -> bool:
        """True when the expression reads a lookup path, ``$user``, or an own formula field that does."""
        try:
            tree = parse(field.prop("expr") or "")
        except RuleError:
            return False
        for node in ast.walk(tree):
            if isinstance(node, ast.UserRef):
                return True
            if isinstance(node, ast.Ref):
                if len(node.path) > 1:
                    return True
                other = entity.get(node.path[0]) if hasattr(entity, "get") else None
                if other is not None and other.type_name == "formula" and other.name not in seen \
                        and FormulaType.reads_other_records(other, entity, seen | {field.name}):
                    return True
        return False

    # -- storage and values: those of the result type ----------------------------------------
    def column_type(self, field):
        return self.base(field).column_type(field)

    def signature(self, field):
        return self.base(field).signature(field)

    def widens(self, old, new):
        return old == new

    def coerce(self, field, value: Any) -> Any:
        return self.base(field).coerce(field, value)

    def coercer(self, field):
        return self.base(field).coercer(field)

    def dims(self, field):
        base = self.base(field)
        if hasattr(base, "dims"):
            precision, scale = base.dims(field)
            return precision, scale
        return 18, 0

    def to_json(self, field, value):
        return self.base(field).to_json(field, value)

    def json_schema(self, field):
        schema = dict(self.base(field).json_schema(field))
        schema["readOnly"] = True
        return schema

    def parse_csv(self, field, text):
        return self.base(field).parse_csv(field, text)

    def format_csv(self, field, value):
        return self.base(field).format_csv(field, value)


TYPES = (FormulaType(),)
