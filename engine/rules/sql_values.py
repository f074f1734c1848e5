"""What SQL compilation works with: a compiled sub-expression (``SqlValue``) and the few SQL
building blocks the compiler and the functions' SQL forms share (``concat``, ``idiv``, ``coerce``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, Grouping

from . import runtime as rt
from .schema import NUMERIC

_NOLIT = object()
NUMBERISH = NUMERIC | {"id"}


@dataclass
class SqlValue:
    """A compiled sub-expression. ``expr`` is the strict value; for numbers on SQLite it is the
    integer scaled by ``10**scale``. ``raw`` is an uncoalesced text column, ``loose`` the WHERE form
    of a boolean, ``literal`` the Python value of a constant."""

    type: str
    expr: Any
    nullable: bool = False
    scale: int = 0
    raw: Any = None
    loose: Any = None
    literal: Any = _NOLIT

    @property
    def is_literal(self) -> bool:
        return self.literal is not _NOLIT

    @property
    def where(self):
        return self.loose if self.loose is not None else self.expr


def coerce(expr, type_):
    """type_coerce that never re-types a bound parameter (which would re-process its value)."""
    if isinstance(expr, BindParameter):
        expr = Grouping(expr)
    return sa.type_coerce(expr, type_)


def concat(*parts):
    """a || b || ..., each part parenthesised (SQL's || binds tighter than + - * /)."""
    items = [sa.literal(p, sa.String()) if isinstance(p, str) else sa.type_coerce(Grouping(p), sa.String())
             for p in parts]
    out = items[0]
    for item in items[1:]:
        out = out.concat(item)
    return out


def idiv(a, b):
    """Integer division truncating towards zero (SQLite's ``/`` on integers; SQLAlchemy's ``/`` would
    render a true division)."""
    grouped = Grouping(Grouping(a).op("/", return_type=sa.BigInteger())(Grouping(b)))
    return sa.type_coerce(grouped, sa.BigInteger())


def _int_column(v: SqlValue) -> bool:
    return v.type in NUMERIC and isinstance(v.raw, sa.Column) and isinstance(v.raw.type, sa.BigInteger)


def _integral_literal(v: SqlValue) -> bool:
    return v.is_literal and v.literal is not None and rt.dec(v.literal) == rt.dec(v.literal).to_integral_value()


def _order(op, a, b):
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _power_of_ten(value: Decimal) -> int | None:
    if value <= 0 or value != value.to_integral_value():
        return None
    digits = str(int(value))
    if digits[0] == "1" and set(digits[1:]) <= {"0"}:
        return len(digits) - 1
    return None
