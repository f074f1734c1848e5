"""The field-type registry. Each family of built-in types lives in its own module."""

from .base import INT64_MAX, FieldType, FieldTypeRegistry, FieldValueError, TypedField, unsafe_text, whole_number

__all__ = ["FieldType", "FieldTypeRegistry", "FieldValueError", "TypedField", "builtin_types", "unsafe_text",
           "whole_number", "INT64_MAX"]


def builtin_types() -> list[FieldType]:
    """The built-in field types of this layer, registered by the core plugin like any other plugin's
    (the formula type, which reads the formula language, is ``engine.rules.formula_field``)."""
    from . import choice, misc, numeric, relation, rollup, temporal, text

    return [*text.TYPES, *numeric.TYPES, *temporal.TYPES, *choice.TYPES, *relation.TYPES, *misc.TYPES, *rollup.TYPES]
