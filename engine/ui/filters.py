"""The list view's filter builder: rows of (field, operator, value) become one condition in the
formula language, the same text the API's ``where=`` takes and a saved view stores. Values are
checked by their field types and written as literals with the language's escapes, so what a user
types is always data, never syntax.
"""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal
from typing import Any

from engine.fields import FieldValueError, whole_number
from engine.rules import text_literal

from .common import in_zone
from .present import Column

#: operator -> (English label, template); {f} is the field, {v} the literal.
OPERATORS = {
    "eq": ("equals", "{f} = {v}"),
    "ne": ("not equal to", "{f} <> {v}"),
    "gt": ("greater than", "{f} > {v}"),
    "gte": ("at least", "{f} >= {v}"),
    "lt": ("less than", "{f} < {v}"),
    "lte": ("at most", "{f} <= {v}"),
    "contains": ("contains", "CONTAINS({f}, {v})"),
    "begins": ("starts with", "BEGINS({f}, {v})"),
    "blank": ("is blank", "ISBLANK({f})"),
    "notblank": ("is not blank", "NOT(ISBLANK({f}))"),
}
TEXT_KINDS = ("text", "textarea", "email", "phone", "url", "autonumber")
ORDERED_KINDS = ("integer", "number", "currency", "percent", "date", "datetime")


class FilterError(ValueError):
    """A builder row that cannot become a condition; ``str()`` says which and why."""


def operators_for(col: Column) -> list[str]:
    """The operators that make sense for a column's type."""
    ops = ["eq", "ne"]
    if col.kind in ORDERED_KINDS:
        ops += ["gt", "gte", "lt", "lte"]
    if col.kind in TEXT_KINDS:
        ops += ["contains", "begins"]
    return ops + ["blank", "notblank"]


def condition(col: Column, op: str, raw: str) -> str:
    """One row as formula text."""
    if op not in OPERATORS or op not in operators_for(col):
        raise FilterError(f"{col.name}: the operator {op!r} does not apply to a {col.kind} field")
    template = OPERATORS[op][1]
    if op in ("blank", "notblank"):
        return template.format(f=col.name, v="")
    return template.format(f=col.name, v=literal(col, raw))


def combine(conditions: list[str]) -> str:
    """Conditions joined with AND (each in parentheses when there are several)."""
    parts = [c.strip() for c in conditions if c and c.strip()]
    if len(parts) <= 1:
        return parts[0] if parts else ""
    return " AND ".join(f"({p})" for p in parts)


def literal(col: Column, raw: str) -> str:
    """``raw`` checked by the column's field type and written as a formula literal."""
    raw = (raw or "").strip()
    kind = col.kind
    if kind in ("picklist", "multipicklist") and col.field.options:
        value = option_value(col, raw)
        if value is None:
            raise FilterError(f"{col.name}: {raw!r} is not one of its values")
        return text_literal(value)
    if kind in TEXT_KINDS or kind in ("picklist", "multipicklist"):
        return text_literal(raw)
    if kind == "boolean":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise FilterError(f"{col.name}: expected yes or no")
        return "TRUE" if raw.lower() in ("true", "1", "yes") else "FALSE"
    value = _coerce(col, raw)
    if kind == "date":
        return f"DATE({value.year}, {value.month}, {value.day})"
    if kind == "datetime":   # the formula language reads a date-time text as GMT
        return f"DATETIMEVALUE({text_literal(value.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S'))})"
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return str(value)
    raise FilterError(f"{col.name}: a {kind} field cannot be filtered here; write the condition in the formula box")


def option_value(col: Column, raw: str) -> str | None:
    """The stored value of the picklist option ``raw`` names: its value, or its label in any language
    (case and surrounding spaces ignored); None when no option matches."""
    raw = (raw or "").strip()
    if raw in col.field.option_values:
        return raw
    folded = raw.casefold()
    for option in col.field.options:
        if folded == option.value.casefold() or any(folded == t.strip().casefold() for t in option.label.texts.values()):
            return option.value
    return None


def local_date(raw: str, lang: str):
    """A date typed as ISO (what ``<input type=date>`` sends) or in the format of the user's
    language (12/31/2026 in English, 2026/12/31 or 2026年12月31日 in Chinese); None if neither."""
    from datetime import date

    from babel.dates import parse_date

    raw = (raw or "").strip()
    try:
        return date.fromisoformat(raw)
    except ValueError:
        pass
    text = raw.replace("年", "/").replace("月", "/").replace("日", "").strip("/")
    try:
        return parse_date(text, locale={"zh": "zh_CN"}.get(lang, "en_US"))
    except (ValueError, IndexError):
        return None


def _coerce(col: Column, raw: str) -> Any:
    if col.kind == "date":
        from .i18n import current_lang

        value = local_date(raw, current_lang())
        if value is None:
            raise FilterError(f"{col.name}: {raw!r} is not a date")
        return value
    if col.kind in ("lookup", "user"):
        number = whole_number(raw)
        if number is None:
            raise FilterError(f"{col.name}: expected a record id (a number)")
        return number
    if col.kind == "datetime":
        raw = in_zone(raw)
    try:
        if col.field.type_name in ("formula", "rollup"):
            from engine.storage.query import system_field

            return system_field(col.name, col.kind).coerce(raw)
        return col.field.coerce(raw)
    except (FieldValueError, ValueError) as exc:
        raise FilterError(f"{col.name}: {getattr(exc, 'message', exc)}") from None


__all__ = ["FilterError", "OPERATORS", "combine", "condition", "literal", "local_date", "operators_for", "option_value"]
