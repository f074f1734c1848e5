"""The rollup field type: an aggregate (COUNT, SUM, MIN, MAX) of a parent's child records.

``of`` names ``child_entity.lookup_field`` (the child's lookup pointing at this entity),
``function`` the aggregate, ``field`` the child field aggregated (not needed for COUNT) and
``where`` an optional formula condition on the child. The value is stored in a column of the
parent (an integer for COUNT, the child field's storage otherwise) and kept up to date by the
record service whenever a child is created, changed or deleted (``engine.storage.rollups``).
Users never write it.

The loader resolves ``of``/``field`` once the whole model is built and sets ``Field.source`` to
the child field aggregated (a synthetic integer field for COUNT); storage, JSON and CSV forms are
that field's.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any, Mapping

from .base import FieldType

FUNCTIONS = ("COUNT", "SUM", "MIN", "MAX")
#: Formula types a SUM can add up, and those MIN/MAX can compare.
SUMMABLE = frozenset({"number", "currency", "percent", "integer"})
COMPARABLE = SUMMABLE | {"date", "datetime"}


def _integer_field(field):
    """The synthetic integer field a COUNT (or a rollup not yet resolved) stores its values as."""
    from .numeric import IntegerType

    return replace(field, type=IntegerType(), props=MappingProxyType({"type": "integer"}), changes=(),
                   stored_here=None, source=None)


class RollupType(FieldType):
    name = "rollup"
    props = {"of": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"},
             "function": {"enum": list(FUNCTIONS)},
             "field": {"type": "string", "minLength": 1},
             "where": {"type": "string", "minLength": 1}}
    required_props = ("of", "function")
    common = frozenset({"type", "label", "help", "searchable", "indexed", "renamed_from", "visible_when"})
    formula_type = "rollup"   # per field: see ``formula_type_of``
    widget = "readonly"
    computed = True

    def source(self, field):
        """The field whose storage and value forms the rollup's values take."""
        src = getattr(field, "source", None)
        if src is None or (field.prop("function") or "COUNT") == "COUNT":
            return _integer_field(field) if src is None else src
        return src

    def formula_source(self, field):
        """The field whose formula type the rollup's values have (``engine.rules.schema.formula_type_of``)."""
        return self.source(field)

    def resolve(self, field, entities: Mapping, _seen: frozenset = frozenset()):
        """The rollup with the child field it aggregates (``Field.source``); what cannot be resolved
        is left unset and reported by the rollup checks (``engine.rules.model_checks``). A rollup of
        a child's rollup resolves that one first (a loop of rollups is left unresolved: the cycle
        check reports it)."""
        child = entities.get(str(field.prop("of") or "").partition(".")[0])
        if field.prop("function") == "COUNT":
            return replace(field, source=_integer_field(field))
        if child is not None and field.prop("field") in child.fields:
            source = child.fields[field.prop("field")]
            if source.type_name == "rollup" and source.source is None:
                key = (child.name, source.name)
                if key in _seen:
                    return field
                source = source.type.resolve(source, entities, _seen | {key})
                if source.source is None:
                    return field
            return replace(field, source=source)
        return field

    def check(self, field, entity, report):
        """``of``, ``field`` and ``where`` need the whole model: the rollup checks (``engine.rules.model_checks``) do."""

    def zero(self, field) -> Any:
        """The value with no children: 0 for COUNT and SUM, blank for MIN and MAX."""
        if field.prop("function") in ("COUNT", "SUM"):
            src = self.source(field)
            return src.type.coerce(src, 0)
        return None

    # -- storage and values: those of the source field ----------------------------------------
    def column_type(self, field):
        src = self.source(field)
        return src.type.column_type(src)

    def signature(self, field):
        src = self.source(field)
        return src.type.signature(src)

    def widens(self, old, new):
        return old == new

    def coerce(self, field, value: Any) -> Any:
        src = self.source(field)
        return src.type.coerce(src, value)

    def coercer(self, field):
        src = self.source(field)
        return src.type.coercer(src)

    def dims(self, field):
        src = self.source(field)
        if hasattr(src.type, "dims"):
            precision, scale = src.type.dims(src)
            return precision, scale
        return 19, 0

    def to_json(self, field, value):
        src = self.source(field)
        return src.type.to_json(src, value)

    def json_schema(self, field):
        src = self.source(field)
        schema = {k: v for k, v in src.type.json_schema(src).items() if k not in ("minimum", "maximum")}
        schema["readOnly"] = True
        return schema

    def parse_csv(self, field, text):
        src = self.source(field)
        return src.type.parse_csv(src, text)

    def format_csv(self, field, value):
        src = self.source(field)
        return src.type.format_csv(src, value)


TYPES = (RollupType(),)
