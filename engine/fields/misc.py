"""Autonumber and json field types."""

from __future__ import annotations

import json
import re
from datetime import date

import sqlalchemy as sa

from .base import FieldType, FieldValueError

_TOKEN = re.compile(r"\{(YYYY|YY|MM|DD|0+)\}")


class AutonumberType(FieldType):
    """A number given by the engine on create, formatted by ``pattern`` like ``Q-{YYYY}-{0000}``."""

    name = "autonumber"
    props = {"pattern": {"type": "string"}, "start": {"type": "integer", "minimum": 0}}
    common = frozenset({"type", "label", "help", "searchable", "indexed", "track_history", "renamed_from", "demo"})
    computed = True
    widget = "readonly"

    def check(self, field, entity, report):
        pattern = field.prop("pattern") or "{0}"
        counters = [t for t in _TOKEN.findall(pattern) if t.startswith("0")]
        if len(counters) != 1:
            report("pattern", "pattern needs exactly one counter such as {0000}")

    def format(self, field, number: int, today: date) -> str:
        parts = {"YYYY": f"{today.year:04d}", "YY": f"{today.year % 100:02d}",
                 "MM": f"{today.month:02d}", "DD": f"{today.day:02d}"}

        def put(match: re.Match) -> str:
            token = match.group(1)
            return parts[token] if token in parts else str(number).zfill(len(token))

        return _TOKEN.sub(put, field.prop("pattern") or "{0}")

    def column_type(self, field):
        return sa.String(64)

    def signature(self, field):
        return ["string", 64]

    def coerce(self, field, value):
        if not isinstance(value, str):
            raise FieldValueError("type", "expected text")
        return value


class JsonType(FieldType):
    name = "json"
    formula_type = "json"
    widget = "json"

    def column_type(self, field):
        return sa.JSON()

    def signature(self, field):
        return ["json"]

    def coerce(self, field, value):
        try:
            json.dumps(value, allow_nan=False)  # NaN and Infinity are not JSON
        except (TypeError, ValueError) as exc:
            raise FieldValueError("type", f"is not JSON: {exc}") from None
        return value

    def json_schema(self, field):
        return {}

    def parse_csv(self, field, text):
        if text.strip() == "":
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise FieldValueError("format", f"is not JSON: {exc}") from None
        return self.coerce(field, value)

    def format_csv(self, field, value):
        return "" if value is None else json.dumps(value, ensure_ascii=False)


TYPES = (AutonumberType(), JsonType())
