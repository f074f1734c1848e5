"""The contract of a field type, and the registry that holds them.

A field type is one object that knows everything about values of its kind: the column that
stores them, how raw input (JSON, form, CSV) becomes a checked Python value, how a value is
written to JSON and CSV, its JSON Schema, its marshmallow field, its formula-language type and its
UI widget. Built-in types register through the plugin manager like any plugin's types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import marshmallow as ma
import sqlalchemy as sa

if TYPE_CHECKING:
    from engine.metadata.model import Entity, Field

#: ``report(prop, message, *path)``: a problem of a field's ``prop`` (at ``path`` inside it).
Report = Callable[..., None]
"""Metadata-check callback: ``report(property, message)``."""


class FieldValueError(ValueError):
    """A value that the field cannot take. ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


#: The largest integer every supported database stores: ids, integer fields, formula literals.
INT64_MAX = 2**63 - 1


def whole_number(text: str) -> int | None:
    """``text`` as a non-negative integer if it is ASCII digits only and fits in 64 bits, else None.

    The one reading of integers from the outside (query parameters, headers, form values): ``int()``
    and ``str.isdigit()`` also take other scripts' digits ('٣', '²'), which no client means as a
    number and some of which ``int()`` then refuses. Beyond ``INT64_MAX`` is None too: no id or
    parameter is that large, the databases refuse the number, and ``int()`` refuses texts of
    thousands of digits."""
    ok = isinstance(text, str) and 0 < len(text) <= 19 and text.isascii() and text.isdigit()
    return int(text) if ok and int(text) <= INT64_MAX else None


def unsafe_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a NUL character, a lone UTF-16 surrogate), or None.

    PostgreSQL refuses both and SQLite would keep them silently; no client means either."""
    if "\x00" in value:
        return "contains a NUL character (\\u0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode text)"
    return None


class FieldType(ABC):
    """Base of every field type. Subclasses set ``name`` and override what differs."""

    name: ClassVar[str] = ""
    #: JSON Schema of each property this type accepts beyond the common ones.
    props: ClassVar[dict[str, dict]] = {}
    #: Properties that must be given.
    required_props: ClassVar[tuple[str, ...]] = ()
    #: Type in the formula language (text, number, currency, boolean, date, datetime, ...).
    formula_type: ClassVar[str] = "text"
    widget: ClassVar[str] = "text"
    #: Stored in a column of the entity's table.
    stored: ClassVar[bool] = True
    #: Computed by the engine; users never write it.
    computed: ClassVar[bool] = False
    #: Common properties that make sense for this type.
    common: ClassVar[frozenset[str]] = frozenset({
        "type", "label", "help", "required", "unique", "indexed", "readonly", "track_history",
        "searchable", "default", "renamed_from", "demo", "required_when", "visible_when", "readonly_when",
        "follows"})

    # -- metadata ---------------------------------------------------------------------------
    def allowed_props(self) -> frozenset[str]:
        return self.common | frozenset(self.props)

    def target(self, field: "Field") -> str | None:
        """Entity this field points at, for lookups."""
        return None

    def on_delete(self, field: "Field") -> str:
        """What deleting the record this field points at does: restrict, set_null or cascade."""
        return field.prop("on_delete") or ("restrict" if field.required else "set_null")

    def check(self, field: "Field", entity: "Entity", report: Report) -> None:
        """Checks a schema cannot express; call ``report(prop, message)`` for each problem."""
        if field.prop("on_delete") == "set_null" and field.required:
            report("on_delete", f"on_delete: set_null cannot apply to a required {self.name} field")
        if field.literal_default is not None:
            try:
                self.coerce(field, field.default)
            except FieldValueError as exc:
                report("default", f"default {field.default!r} is not valid: {exc.message}")

    def check_demo_hint(self, field: "Field", report: Report) -> None:
        """Demo hints are metadata too: a choice the field cannot take is an error when the model
        loads, not at seed time. ``report(prop, message, *path)`` names a place inside the prop."""
        hint = field.prop("demo")
        if hint is None:
            return
        if self.computed:
            report("demo", "a computed field takes no demo hint")
        elif isinstance(hint, dict):
            unknown = set(hint) - {"choices", "min", "max", "tree"}   # tree: a lookup to its own entity (engine/demo.py)
            if unknown:
                report("demo", f"unknown demo hint keys {sorted(unknown)}")
            for i, choice in enumerate(hint.get("choices") or ()):
                if choice is None:
                    continue
                try:
                    self.coerce(field, choice)
                except FieldValueError as exc:
                    report("demo", f"demo choice {choice!r} is not valid: {exc.message}", "choices", i)
        elif not isinstance(hint, str) or not (hint == "skip" or hint.isidentifier()):
            report("demo", "demo hint must be a Faker provider name, skip, {choices: [...]} or {min:, max:}")

    def resolve(self, field: "Field", entities: Mapping[str, "Entity"]) -> "Field":
        """The field completed once every entity is built (a rollup finds the child field it
        aggregates); most types need nothing and return ``field``."""
        return field

    # -- storage ----------------------------------------------------------------------------
    @abstractmethod
    def column_type(self, field: "Field") -> sa.types.TypeEngine:
        """The SQLAlchemy type of the column that stores this field."""

    def signature(self, field: "Field") -> list:
        """Storage shape compared by migrations, e.g. ``["string", 120]``."""
        return [self.name]

    def widens(self, old: list, new: list) -> bool:
        """True if a column of signature ``old`` can become ``new`` without losing values."""
        return old == new

    # -- values -----------------------------------------------------------------------------
    def coerce(self, field: "Field", value: Any) -> Any:
        """Raw input (never None) -> checked Python value. Raises ``FieldValueError``."""
        return value

    def coercer(self, field: "Field") -> Callable[[Any], Any]:
        """``coerce`` for one field, as a one-argument function built once per field (``Field.coerce``).

        Types whose checks read field properties override this to read them once, not per value:
        it is the inner loop of bulk writes.
        """
        return partial(self.coerce, field)

    def to_json(self, field: "Field", value: Any) -> Any:
        return value

    def json_schema(self, field: "Field") -> dict:
        return {"type": "string"}

    def parse_csv(self, field: "Field", text: str) -> Any:
        text = text.strip()
        return None if text == "" else self.coerce(field, text)

    def format_csv(self, field: "Field", value: Any) -> str:
        if value is None:
            return ""
        out = self.to_json(field, value)
        return out if isinstance(out, str) else str(out)

    def marshmallow_field(self, field: "Field") -> ma.fields.Field:
        return TypedField(field, required=field.required and field.default is None,
                          allow_none=not field.required, metadata={"description": str(field.label)})


class TypedField(ma.fields.Field):
    """The one marshmallow field for every field type: it delegates to the type object."""

    def __init__(self, model_field: "Field", **kwargs: Any):
        super().__init__(**kwargs)
        self.model_field = model_field

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else self.model_field.type.to_json(self.model_field, value)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return self.model_field.type.coerce(self.model_field, value)
        except FieldValueError as exc:
            raise ma.ValidationError(exc.message) from exc


class FieldTypeRegistry:
    """Field types by name. Filled by the plugin manager (``crm_field_types`` hook)."""

    def __init__(self) -> None:
        self._types: dict[str, FieldType] = {}

    def register(self, ftype: FieldType) -> None:
        if not ftype.name:
            raise ValueError(f"{type(ftype).__name__} has no name")
        if ftype.name in self._types:
            raise ValueError(f"field type {ftype.name!r} is registered twice")
        self._types[ftype.name] = ftype

    def get(self, name: str) -> FieldType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: str) -> bool:
        return name in self._types
