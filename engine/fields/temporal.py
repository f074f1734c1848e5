"""Date and datetime field types. Datetimes are timezone-aware and stored in UTC."""

from __future__ import annotations

from engine.messages import Msg
from datetime import date, datetime, timezone

import sqlalchemy as sa

from .base import FieldType, FieldValueError
from .sqltypes import UtcDateTime


class DateType(FieldType):
    name = "date"
    common = FieldType.common | {"min", "max"}
    formula_type = "date"
    widget = "date"

    def column_type(self, field):
        return sa.Date()

    def signature(self, field):
        return ["date"]

    def check(self, field, entity, report):
        bounds = {}
        for key in ("min", "max"):
            if field.prop(key) is not None:
                try:
                    bounds[key] = _date_bound(field, key)
                except ValueError:
                    report(key, f"{key} {field.prop(key)!r} is not a date (YYYY-MM-DD)")
                    return
        if len(bounds) == 2 and bounds["min"] > bounds["max"]:
            report("min", f"min {bounds['min']} is after max {bounds['max']}")
            return
        super().check(field, entity, report)

    def coerce(self, field, value):
        if isinstance(value, datetime):
            raise FieldValueError("type", "expected a date, got a date and time")
        if isinstance(value, date):
            result = value
        elif isinstance(value, str):
            try:
                result = date.fromisoformat(value.strip())
            except ValueError:
                raise FieldValueError("format", Msg("{value} is not a date (YYYY-MM-DD)", value=repr(value))) from None
        else:
            raise FieldValueError("type", f"expected a date, got {type(value).__name__}")
        for key, bad, word in (("min", lambda b: result < b, "on or after"), ("max", lambda b: result > b, "on or before")):
            bound = _date_bound(field, key)
            if bound is not None and bad(bound):
                raise FieldValueError(key, Msg("must be {word} {bound}", word=word, bound=bound))
        return result

    def to_json(self, field, value):
        return value.isoformat()

    def json_schema(self, field):
        return {"type": "string", "format": "date"}


def _date_bound(field, key: str) -> date | None:
    """The ``min``/``max`` of a date field as a date; raises ``ValueError`` if it is not one."""
    bound = field.prop(key)
    if bound is None or (isinstance(bound, date) and not isinstance(bound, datetime)):
        return bound
    if not isinstance(bound, str):
        raise ValueError(f"{bound!r} is not a date")
    return date.fromisoformat(bound.strip())


class DateTimeType(FieldType):
    name = "datetime"
    formula_type = "datetime"
    widget = "datetime"

    def column_type(self, field):
        return UtcDateTime()

    def signature(self, field):
        return ["datetime"]

    def coerce(self, field, value):
        if isinstance(value, str):
            text = value.strip()
            try:
                value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
            except ValueError:
                raise FieldValueError("format", Msg("{value} is not an ISO 8601 date and time", value=repr(text))) from None
        if not isinstance(value, datetime):
            raise FieldValueError("type", f"expected a date and time, got {type(value).__name__}")
        if value.tzinfo is None:
            raise FieldValueError("timezone", "needs a timezone offset (e.g. 2026-01-31T09:00:00+08:00)")
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:   # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
            raise FieldValueError("range", "is outside the years 1 to 9999 once moved to UTC") from None

    def to_json(self, field, value):
        return value.astimezone(timezone.utc).isoformat()

    def json_schema(self, field):
        return {"type": "string", "format": "date-time"}


TYPES = (DateType(), DateTimeType())
