"""Exact numbers in SQL, one class per database.

On SQLite, ``ExactDecimal`` columns hold integers scaled by ``10**scale``, so a number is compiled
to a pair (integer expression, scale): + - and comparisons align the scales, * adds them, / rounds
half away from zero to ``DIV_SCALE`` places with integer arithmetic, exactly like the Python back
end (``SqliteNum``). On PostgreSQL numbers are NUMERIC values and the same rules (rounding of
division, FLOOR towards zero, ...) are written with ``div``, ``trunc`` and ``round`` (``PgNum``).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.fields.sqltypes import ExactDecimal

from . import runtime as rt
from .schema import NUMERIC, FieldInfo
from .sql_values import _NOLIT, SqlValue, coerce, concat, idiv

if TYPE_CHECKING:
    from .to_sql import SqlCompiler


class ResultNumber(ExactDecimal):
    """Result type of a number expression: scaled integers (SQLite) or NUMERIC back to Decimal."""

    cache_ok = True

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            if isinstance(value, float):
                value = Decimal(repr(value))
            return Decimal(int(value)).scaleb(-self.scale)
        return value if isinstance(value, Decimal) else Decimal(str(value) if isinstance(value, float) else value)


# -- numbers ----------------------------------------------------------------------------------------
class _Num:
    def __init__(self, sc: "SqlCompiler"):
        self.sc = sc

    def scaled(self, value: Decimal) -> tuple[int, int]:
        """A literal as (integer, scale) within the 64-bit integers and 18 decimals both databases
        compute with; else a clear error (checked before ``int()``: 1e999999999 is a huge integer)."""
        scale = max(0, -value.as_tuple().exponent) if value.is_finite() else 0
        if not value.is_finite() or scale > 18 or value.adjusted() + scale > 19:
            self.sc.too_large(value)
        return self.sc.int64(int(value.scaleb(scale))), scale

    @staticmethod
    def const(value) -> Any:
        return sa.literal_column(str(value), sa.BigInteger() if isinstance(value, int) else sa.Numeric())

    def sv(self, expr, scale, nullable=False, type_="number"):
        return SqlValue(type_, expr, nullable, scale)


class SqliteNum(_Num):
    """Fixed point: (integer expression, scale)."""

    def column(self, col, info: FieldInfo):
        return sa.type_coerce(col, sa.BigInteger()), (info.scale if info.type in NUMERIC else 0)

    def literal(self, value: Decimal):
        number, scale = self.scaled(value)
        return sa.literal(number, sa.BigInteger()), scale

    def from_int(self, expr, nullable=False):
        return self.sv(expr, 0, nullable)

    def at(self, v: SqlValue, scale: int):
        if scale == v.scale:
            return v.expr
        return v.expr * self.const(10 ** (scale - v.scale))

    def align(self, *values: SqlValue):
        scale = max(v.scale for v in values)
        return [self.at(v, scale) for v in values], scale

    def add(self, a, b, t):
        (ea, eb), s = self.align(a, b)
        return self.sv(ea + eb, s, a.nullable or b.nullable, t)

    def sub(self, a, b, t):
        (ea, eb), s = self.align(a, b)
        return self.sv(ea - eb, s, a.nullable or b.nullable, t)

    def mul(self, a, b, t):
        return self.sv(a.expr * b.expr, a.scale + b.scale, a.nullable or b.nullable, t)

    def neg(self, a):
        return replace(a, expr=-a.expr, literal=_NOLIT)

    def round_div_const(self, n, d: int):
        """n / d rounded half away from zero, d a positive constant."""
        return idiv(n * 2 + sa.func.sign(n) * self.const(d), self.const(2 * d))

    def div(self, a, b, t):
        shift = rt.DIV_SCALE + b.scale - a.scale
        n = a.expr * self.const(10 ** shift) if shift > 0 else a.expr
        d = b.expr * self.const(10 ** -shift) if shift < 0 else b.expr
        d = sa.func.nullif(d, 0)
        q = idiv(n * 2 + sa.func.sign(n) * sa.func.abs(d), d * 2)
        return self.sv(q, rt.DIV_SCALE, True, t)

    def shift(self, a, places: int, t):
        """a / 10**places, exact."""
        return self.sv(a.expr, a.scale + places, a.nullable, t)

    def compare_pair(self, a, b):
        (ea, eb), _ = self.align(a, b)
        return ea, eb

    def round(self, a, places: int):
        if places >= a.scale:
            return a
        k = a.scale - places
        q = self.round_div_const(a.expr, 10 ** k)
        if places < 0:
            return self.sv(q * self.const(10 ** -places), 0, a.nullable, a.type)
        return self.sv(q, places, a.nullable, a.type)

    def trunc(self, a):
        return a if a.scale == 0 else self.sv(idiv(a.expr, self.const(10 ** a.scale)), 0, a.nullable, a.type)

    def ceil_away(self, a):
        if a.scale == 0:
            return a
        unit = 10 ** a.scale
        q = sa.func.sign(a.expr) * idiv(sa.func.abs(a.expr) + self.const(unit - 1), self.const(unit))
        return self.sv(q, 0, a.nullable, a.type)

    def abs(self, a):
        return replace(a, expr=sa.func.abs(a.expr), literal=_NOLIT)

    def mod(self, a, b):
        (ea, eb), s = self.align(a, b)
        return self.sv(ea % sa.func.nullif(eb, 0), s, True, a.type)

    def to_int(self, a):
        return a.expr if a.scale == 0 else idiv(a.expr, self.const(10 ** a.scale))

    def extreme(self, values, largest):
        exprs, s = self.align(*values)
        fn = sa.func.max if largest else sa.func.min
        expr = fn(*exprs) if len(exprs) > 1 else exprs[0]
        return self.sv(expr, s, any(v.nullable for v in values), values[0].type)

    def to_text(self, a):
        if a.scale == 0:
            return sa.cast(a.expr, sa.String())
        unit = 10 ** a.scale
        absolute = sa.func.abs(a.expr)
        digits = concat(sa.cast(idiv(absolute, self.const(unit)), sa.String()), ".",
                        sa.func.printf(f"%0{a.scale}d", absolute % self.const(unit)))
        trimmed = sa.func.rtrim(sa.func.rtrim(digits, "0"), ".")
        return sa.case((a.expr < 0, concat(sa.literal_column("'-'"), trimmed)), else_=trimmed)

    def result(self, a):
        return coerce(a.expr, ResultNumber(38, a.scale))

    def days(self, a):
        """A number of days as an integer expression (truncated)."""
        return self.to_int(a)

    def seconds_of_days(self, a):
        return self.round_div_const(a.expr * self.const(86400), 10 ** a.scale) if a.scale else a.expr * self.const(86400)


class PgNum(_Num):
    """NUMERIC values; scale is tracked for information only."""

    def column(self, col, info: FieldInfo):
        if info.type in NUMERIC and info.field_type != "integer":
            return sa.type_coerce(col, sa.Numeric()), info.scale
        return sa.cast(col, sa.Numeric()), 0

    def literal(self, value: Decimal):
        _, scale = self.scaled(value)   # the literals SQLite can hold: both back ends refuse the same
        return sa.literal(value, sa.Numeric()), scale

    def from_int(self, expr, nullable=False):
        return self.sv(sa.cast(expr, sa.Numeric()), 0, nullable)

    def align(self, *values):
        return [v.expr for v in values], max(v.scale for v in values)

    def add(self, a, b, t):
        return self.sv(a.expr + b.expr, max(a.scale, b.scale), a.nullable or b.nullable, t)

    def sub(self, a, b, t):
        return self.sv(a.expr - b.expr, max(a.scale, b.scale), a.nullable or b.nullable, t)

    def mul(self, a, b, t):
        return self.sv(a.expr * b.expr, a.scale + b.scale, a.nullable or b.nullable, t)

    def neg(self, a):
        return replace(a, expr=-a.expr, literal=_NOLIT)

    def unit(self, places: int):
        return sa.literal_column(format(Decimal(1).scaleb(-places), "f"), sa.Numeric())

    def round_div_const(self, n, d: int):
        return sa.func.div(n * 2 + sa.func.sign(n) * self.const(d), self.const(2 * d))

    def div(self, a, b, t):
        n = a.expr * self.const(10 ** rt.DIV_SCALE)
        d = sa.func.nullif(b.expr, 0)
        q = sa.func.div(n * 2 + sa.func.sign(n) * sa.func.abs(d), d * 2)
        return self.sv(q * self.unit(rt.DIV_SCALE), rt.DIV_SCALE, True, t)

    def shift(self, a, places: int, t):
        return self.sv(a.expr * self.unit(places), a.scale + places, a.nullable, t)

    def compare_pair(self, a, b):
        return a.expr, b.expr

    def round(self, a, places: int):
        return self.sv(sa.func.round(a.expr, places), max(places, 0), a.nullable, a.type)

    def trunc(self, a):
        return self.sv(sa.func.trunc(a.expr), 0, a.nullable, a.type)

    def ceil_away(self, a):
        return self.sv(sa.func.sign(a.expr) * sa.func.ceil(sa.func.abs(a.expr)), 0, a.nullable, a.type)

    def abs(self, a):
        return replace(a, expr=sa.func.abs(a.expr), literal=_NOLIT)

    def mod(self, a, b):
        return self.sv(sa.func.mod(a.expr, sa.func.nullif(b.expr, 0)), max(a.scale, b.scale), True, a.type)

    def to_int(self, a):
        return sa.cast(sa.func.trunc(a.expr), sa.Integer())

    def extreme(self, values, largest):
        exprs = [v.expr for v in values]
        fn = sa.func.greatest if largest else sa.func.least
        expr = fn(*exprs) if len(exprs) > 1 else exprs[0]
        nullable = [v.expr for v in values if v.nullable]
        if nullable and len(exprs) > 1:
            expr = sa.case((sa.or_(*[e.is_(None) for e in nullable]), sa.null()), else_=expr)
        return self.sv(expr, max(v.scale for v in values), bool(nullable), values[0].type)

    def to_text(self, a):
        return sa.cast(sa.func.trim_scale(a.expr), sa.String())

    def result(self, a):
        return coerce(a.expr, ResultNumber(38, a.scale))

    def days(self, a):
        return self.to_int(a)

    def seconds_of_days(self, a):
        return sa.func.round(a.expr * self.const(86400))
