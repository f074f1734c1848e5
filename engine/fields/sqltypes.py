"""Column types that behave the same on SQLite and PostgreSQL.

``ExactDecimal`` stores decimals as scaled integers on SQLite (which has no exact NUMERIC), so
``0.10 + 0.20`` is ``0.30`` in Python *and* in SQL aggregates; PostgreSQL gets a real NUMERIC.
``UtcDateTime`` stores timezone-aware datetimes as UTC and returns them aware.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator


class ExactDecimal(TypeDecorator):
    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int = 18, scale: int = 2):
        super().__init__()
        self.precision = precision
        self.scale = scale
        self._unit = Decimal(1).scaleb(-scale)

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = _decimal(value)
        if dialect.name == "sqlite":  # rounded half-up, as PostgreSQL's NUMERIC(p, s) rounds on write
            return int(value.quantize(self._unit, rounding=ROUND_HALF_UP).scaleb(self.scale))
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.scale).quantize(self._unit)
        return Decimal(value).quantize(self._unit)

    def coerce_compared_value(self, op, value):
        return _ComparedDecimal(self.precision, self.scale)


class _ComparedDecimal(ExactDecimal):
    """A value compared with an ``ExactDecimal`` column: kept exact, not rounded to the column's
    scale, so ``amount >= 0.125`` and ``amount == 0.1`` (a float) mean the same on every database."""

    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = _decimal(value)
        if dialect.name == "sqlite":
            scaled = value.scaleb(self.scale)
            return int(scaled) if scaled == scaled.to_integral_value() else float(scaled)
        return value


def _decimal(value) -> Decimal:
    """A float becomes the decimal it prints as (0.1 -> 0.1), not its binary expansion."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


class UtcDateTime(TypeDecorator):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: a timezone is required")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
