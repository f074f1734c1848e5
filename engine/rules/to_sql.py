"""Checked syntax tree -> SQLAlchemy expression, for SQLite and PostgreSQL.

Numbers are exact. On SQLite, ``ExactDecimal`` columns hold integers scaled by ``10**scale``, so a
number is compiled to a pair (integer expression, scale): + - and comparisons align the scales,
* adds them, / rounds half away from zero to ``DIV_SCALE`` places with integer arithmetic, exactly
like the Python back end. On PostgreSQL numbers are NUMERIC values and the same rules (rounding of
division, FLOOR towards zero, ...) are written with ``div``, ``trunc`` and ``round``.

Blanks: text is never NULL here (a NULL text column reads as ''), booleans are never NULL (a
comparison with a blank is FALSE). Each boolean has a strict form (for values) and a loose form for
WHERE clauses, where NULL may stand for FALSE (``amount > 5`` instead of ``COALESCE(amount > 5,
false)``), so indexes stay usable.

Every literal of the expression becomes a bound parameter: expression text never reaches SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, Grouping

from engine.fields.base import INT64_MAX
from engine.fields.sqltypes import ExactDecimal, UtcDateTime

from . import ast
from . import runtime as rt
from .errors import NotInSQLError
from .schema import NUMERIC, TEXTUAL, FieldInfo

MAX_SQL_PARTS = 20_000

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


# -- scope ------------------------------------------------------------------------------------------
class Scope:
    """Where compiled SQL reads from: the entity's table (or an alias of it) plus the LEFT OUTER
    joins that lookup paths need, collected while expressions compile, and the values of ``$user``,
    ``TODAY()`` and ``NOW()`` (bound as parameters).

    ``scope.apply(select)`` adds the joins to a select; ``scope.from_clause()`` gives the join.
    """

    def __init__(self, metadata: sa.MetaData, entity: str, model=None, *, dialect: Any = "sqlite",
                 user: dict | None = None, now=None, table: sa.FromClause | None = None):
        self.metadata = metadata
        self.entity = entity
        self.model = model
        self.dialect = _dialect_name(dialect)
        table_name = model.entity(entity).table if model is not None else entity
        self.table = table if table is not None else metadata.tables[table_name]
        self.user = user or {}
        self.now, self.today = rt.clock(now)
        self._aliases: dict[tuple[str, ...], Any] = {}
        self._joins: list[tuple[Any, Any]] = []

    def column(self, info: FieldInfo):
        source = self.table
        for i, (entity, column, target) in enumerate(info.hops):
            key = info.path[:i + 1]
            alias = self._aliases.get(key)
            if alias is None:
                target_table = self.metadata.tables[self.model.entity(target).table if self.model else target]
                alias = target_table.alias(f"{'_'.join(key)}_{len(self._aliases) + 1}"[:60])
                self._aliases[key] = alias
                self._joins.append((alias, alias.c.id == source.c[column]))
            source = alias
        return source.c[info.column]

    @property
    def joins(self) -> list[tuple[tuple[str, ...], Any]]:
        """(lookup path, aliased table) for every join collected so far."""
        return list(self._aliases.items())

    def from_clause(self):
        joined = self.table
        for alias, onclause in self._joins:
            joined = joined.outerjoin(alias, onclause)
        return joined

    def apply(self, select: sa.Select) -> sa.Select:
        return select.select_from(self.from_clause()) if self._joins else select


def _dialect_name(dialect) -> str:
    if isinstance(dialect, str):
        name = dialect
    else:
        name = getattr(dialect, "name", None) or getattr(dialect, "dialect", None)
        if not isinstance(name, str):
            name = getattr(getattr(dialect, "engine", None), "dialect", None)
            name = getattr(name, "name", "sqlite")
    name = name.split("+")[0]
    return "postgresql" if name in ("postgres", "postgresql") else name


# -- compiler ---------------------------------------------------------------------------------------
class SqlCompiler:
    """Compiles one checked tree in one scope. Function SQL implementations receive it as ``sc``."""

    def __init__(self, scope: Scope, *, blank_as_zero: bool = False, expression: str | None = None):
        self.scope = scope
        self.dialect = scope.dialect
        self.is_sqlite = self.dialect == "sqlite"
        self.num = SqliteNum(self) if self.is_sqlite else PgNum(self)
        self.blank_as_zero = blank_as_zero
        self.expression = expression
        self._node: ast.Node | None = None

    # -- helpers for function implementations --------------------------------------------------------
    def no_sql(self, message: str, node: ast.Node | None = None):
        node = node or self._node
        raise NotInSQLError(message, node.pos if node is not None else None, self.expression)

    def const(self, value: int):
        return _Num.const(value)

    def int64(self, value: int) -> int:
        """``value`` if the database's integers hold it; else a clear error (SQLite's driver would
        raise OverflowError, and a PostgreSQL id column could never equal it)."""
        if -INT64_MAX <= value <= INT64_MAX:
            return value
        self.too_large(value)

    def too_large(self, value) -> NoReturn:
        self.no_sql(f"the number {value} is too large for the database (integers up to {INT64_MAX:,}; "
                    "decimals up to 18 significant digits)")

    def literal_text(self, value: str):
        return sa.literal(value, sa.String())

    def number(self, expr, scale: int = 0, nullable: bool = False) -> SqlValue:
        """A number SqlValue from an integer-valued expression (``scale`` 0) or a scaled one."""
        if not self.is_sqlite:
            expr = sa.cast(expr, sa.Numeric())
        return SqlValue("number", expr, nullable, scale)

    def text(self, expr, nullable: bool = False) -> SqlValue:
        return SqlValue("text", sa.func.coalesce(expr, "") if nullable else expr)

    def boolean(self, expr, nullable: bool = False) -> SqlValue:
        strict = sa.func.coalesce(expr, sa.false()) if nullable else expr
        return SqlValue("boolean", strict, loose=expr)

    def date(self, expr, nullable: bool = True) -> SqlValue:
        return SqlValue("date", expr, nullable)

    def datetime(self, expr, nullable: bool = True) -> SqlValue:
        return SqlValue("datetime", expr, nullable)

    def int_expr(self, v: SqlValue):
        """A number as an integer expression, truncated towards zero."""
        return self.num.to_int(v)

    def greatest(self, a, b):
        return (sa.func.max if self.is_sqlite else sa.func.greatest)(a, b)

    def position(self, needle, haystack):
        """1-based position of needle in haystack, 0 if absent (1 for '')."""
        return sa.func.instr(haystack, needle) if self.is_sqlite else sa.func.strpos(haystack, needle)

    def extreme(self, values: list[SqlValue], largest: bool) -> SqlValue:
        exprs = [v.expr for v in values]
        if self.is_sqlite:
            expr = (sa.func.max if largest else sa.func.min)(*exprs) if len(exprs) > 1 else exprs[0]
        else:
            expr = (sa.func.greatest if largest else sa.func.least)(*exprs) if len(exprs) > 1 else exprs[0]
            nullable = [v.expr for v in values if v.nullable]
            if nullable and len(exprs) > 1:
                expr = sa.case((sa.or_(*[e.is_(None) for e in nullable]), sa.null()), else_=expr)
        return SqlValue(values[0].type, expr, any(v.nullable for v in values))

    # -- entry points ------------------------------------------------------------------------------------
    def value(self, node: ast.Node):
        """The SQLAlchemy expression of the whole tree, typed so results come back as Python values."""
        sv = self.compile(node)
        return self._capped(self.result(sv), node)

    def predicate(self, node: ast.Node):
        sv = self.compile(node)
        if sv.type != "boolean":
            raise NotInSQLError("a WHERE condition must be TRUE or FALSE", node.pos, self.expression)
        return self._capped(sv.where, node)

    def _capped(self, expr, node: ast.Node):
        """``expr`` if its SQL text stays under ``MAX_SQL_PARTS`` parts. An argument that may be blank
        appears twice in SQL (tested for NULL, then used), so nesting such calls doubles the text at
        each level: ABS() 20 deep would be a million parts. Counted on the shared expression graph,
        each piece once, without writing the text."""
        sizes: dict[int, int] = {}
        stack = [(expr, False)]
        while stack:
            element, done = stack.pop()
            key = id(element)
            if key in sizes:
                continue
            children = element.get_children()
            if done:
                sizes[key] = 1 + sum(sizes[id(c)] for c in children)
                if sizes[key] > MAX_SQL_PARTS:
                    self.no_sql(f"the expression would be more than {MAX_SQL_PARTS:,} parts in SQL (calls on values "
                                "that may be blank, nested deeply); nest fewer of them", node)
                continue
            stack.append((element, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
        return expr

    def result(self, sv: SqlValue):
        t = sv.type
        if t in NUMERIC:
            return self.num.result(sv)
        types = {"text": sa.String(), "picklist": sa.String(), "multipicklist": sa.String(), "boolean": sa.Boolean(),
                 "date": sa.Date(), "datetime": UtcDateTime(), "id": sa.BigInteger()}
        return coerce(sv.expr, types.get(t, sa.String()))

    # -- nodes --------------------------------------------------------------------------------------------
    def compile(self, node: ast.Node) -> SqlValue:
        previous, self._node = self._node, node
        try:
            method = getattr(self, "_" + type(node).__name__.lower())
            return method(node)
        finally:
            self._node = previous

    def _literal(self, node: ast.Literal) -> SqlValue:
        return self.constant(node.value, node.type, node)

    def constant(self, value, type_: str, node=None) -> SqlValue:
        if value is None:
            return self.null(type_)
        if type_ in NUMERIC or (type_ == "id" and not isinstance(value, bool)):
            if type_ == "id":
                return SqlValue("id", sa.literal(self.int64(int(value)), sa.BigInteger()), False, 0, literal=value)
            expr, scale = self.num.literal(rt.dec(value))
            return SqlValue(type_, expr, False, scale, literal=value)
        if type_ in TEXTUAL:
            expr = self.literal_text(value)
            return SqlValue(type_, expr, raw=expr, literal=value)
        if type_ == "boolean":
            expr = sa.true() if value else sa.false()
            return SqlValue("boolean", expr, loose=expr, literal=value)
        if type_ == "date":
            return SqlValue("date", sa.literal(value, sa.Date()), literal=value)
        if type_ == "datetime":
            return SqlValue("datetime", sa.literal(value, UtcDateTime()), literal=value)
        if type_ == "multipicklist":
            expr = self.literal_text(";".join(value))
            return SqlValue("multipicklist", expr, literal=value)
        self.no_sql(f"a constant of type {type_} has no SQL form", node)

    def null(self, type_: str) -> SqlValue:
        if type_ in TEXTUAL or type_ in ("multipicklist", "null"):
            expr = self.literal_text("")
            return SqlValue("text" if type_ == "null" else type_, expr, raw=expr, literal="")
        if type_ == "boolean":
            return SqlValue("boolean", sa.false(), loose=sa.false(), literal=False)
        return SqlValue(type_, sa.null(), True, 0, literal=None)

    def _ref(self, node: ast.Ref) -> SqlValue:
        info: FieldInfo = node.info
        if not info.stored:
            self.no_sql(f"{info.dotted} is computed, not stored, so the database cannot read it", node)
        return self.column(self.scope.column(info), info)

    def column(self, col, info: FieldInfo) -> SqlValue:
        t = info.type
        if t in NUMERIC or t == "id":
            expr, scale = self.num.column(col, info) if t in NUMERIC else (col, 0)
            if t in NUMERIC and self.blank_as_zero:
                return SqlValue(t, sa.func.coalesce(expr, 0), False, scale)
            return SqlValue(t, expr, True, scale, raw=col)
        if t in TEXTUAL or t == "multipicklist":
            raw = sa.type_coerce(col, sa.String())
            return SqlValue(t, sa.func.coalesce(raw, ""), raw=raw)
        if t == "boolean":
            raw = sa.type_coerce(col, sa.Boolean())
            return SqlValue("boolean", sa.func.coalesce(raw, sa.false()), loose=raw)
        if t in ("date", "datetime"):
            return SqlValue(t, col, True)
        return SqlValue(t, col, True)

    def _userref(self, node: ast.UserRef) -> SqlValue:
        info: FieldInfo = node.info
        value = self.scope.user.get(info.column or node.name)
        if value is None and node.name in self.scope.user:
            value = self.scope.user[node.name]
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, (list, tuple)) and info.type != "multipicklist":
            value = None
        return self.constant(value, info.type, node)

    def _unary(self, node: ast.Unary) -> SqlValue:
        v = self.compile(node.operand)
        if node.op == "not":
            return self.negate(v)
        if node.op == "-":
            return self.num.neg(v)
        return v

    def negate(self, v: SqlValue) -> SqlValue:
        expr = sa.not_(v.expr)
        return SqlValue("boolean", expr, loose=expr)

    def _binary(self, node: ast.Binary) -> SqlValue:
        op = node.op
        if op in ("and", "or"):
            return self.logical(op, [self.compile(node.left), self.compile(node.right)])
        a, b = self.compile(node.left), self.compile(node.right)
        if op in ("=", "<>", "<", "<=", ">", ">="):
            return self.compare(op, a, b)
        if op == "&":
            return SqlValue("text", concat(a.expr, b.expr))
        return self.arithmetic(node, op, a, b)

    def logical(self, op: str, values: list[SqlValue]) -> SqlValue:
        join = sa.and_ if op == "and" else sa.or_
        return SqlValue("boolean", join(*[v.expr for v in values]), loose=join(*[v.where for v in values]))

    def compare(self, op: str, a: SqlValue, b: SqlValue) -> SqlValue:
        if a.type == "id" and b.type == "id":
            ea, eb = a.expr, b.expr
        elif not self.is_sqlite and (_int_column(a) and _integral_literal(b) or _int_column(b) and _integral_literal(a)):
            # an integer column against a whole number: compare as BIGINT, so its index is usable
            ea, eb = (v.raw if _int_column(v) else sa.literal(self.int64(int(v.literal)), sa.BigInteger())
                      for v in (a, b))
        elif a.type in NUMBERISH and b.type in NUMBERISH:
            if not self.is_sqlite:  # ids are BIGINT columns; compared with NUMERIC values
                a, b = (replace(v, expr=sa.cast(v.expr, sa.Numeric())) if v.type == "id" else v for v in (a, b))
            ea, eb = self.num.compare_pair(a, b)
        else:
            ea, eb = a.expr, b.expr
        nullable = a.nullable or b.nullable
        if op == "=":
            if a.type in TEXTUAL and b.type in TEXTUAL:
                for col, lit in ((a, b), (b, a)):
                    if col.raw is not None and lit.is_literal and lit.literal not in ("", None) and not col.is_literal:
                        return SqlValue("boolean", ea == eb, loose=col.raw == lit.expr)
            if not nullable:
                return SqlValue("boolean", ea == eb, loose=ea == eb)
            if a.nullable and b.nullable:
                expr = ea.is_not_distinct_from(eb)
                return SqlValue("boolean", expr, loose=expr)
            loose = ea == eb
            return SqlValue("boolean", sa.func.coalesce(loose, sa.false()), loose=loose)
        if op == "<>":
            expr = ea.is_distinct_from(eb) if nullable else ea != eb
            return SqlValue("boolean", expr, loose=expr)
        if a.type in TEXTUAL and not self.is_sqlite:
            ea, eb = sa.collate(ea, "C"), sa.collate(eb, "C")
        cond = _order(op, ea, eb)
        strict = sa.func.coalesce(cond, sa.false()) if nullable else cond
        return SqlValue("boolean", strict, loose=cond)

    def arithmetic(self, node: ast.Binary, op: str, a: SqlValue, b: SqlValue) -> SqlValue:
        ta, tb, t = a.type, b.type, node.type
        num = self.num
        if ta in NUMBERISH and tb in NUMBERISH:
            if op == "+":
                return num.add(a, b, t)
            if op == "-":
                return num.sub(a, b, t)
            if op == "*":
                return num.mul(a, b, t)
            if op == "/":
                if b.is_literal and b.literal is not None:
                    places = _power_of_ten(rt.dec(b.literal))
                    if places is not None and a.scale + places <= rt.DIV_SCALE:
                        return num.shift(a, places, t)
                return num.div(a, b, t)
            if op == "^":
                return self.power(node, a, b, t)
        if ta == "date" and tb in NUMERIC and op in "+-":
            return self.date_add(a, b if op == "+" else num.neg(b))
        if ta in NUMERIC and tb == "date" and op == "+":
            return self.date_add(b, a)
        if ta == "date" and tb == "date" and op == "-":
            if self.is_sqlite:
                expr = sa.cast(sa.func.julianday(a.expr) - sa.func.julianday(b.expr), sa.Integer())
                return SqlValue("number", expr, a.nullable or b.nullable, 0)
            return SqlValue("number", sa.cast(a.expr - b.expr, sa.Numeric()), a.nullable or b.nullable, 0)
        if ta == "datetime" and tb in NUMERIC and op in "+-":
            return self.datetime_add(a, b if op == "+" else num.neg(b))
        if ta in NUMERIC and tb == "datetime" and op == "+":
            return self.datetime_add(b, a)
        if ta == "datetime" and tb == "datetime" and op == "-":
            return self.datetime_diff(a, b)
        self.no_sql(f"{ta} {op} {tb} has no SQL form", node)

    def power(self, node, a, b, t):
        exponent = b.literal if b.is_literal else None
        if exponent is None or rt.dec(exponent) != rt.dec(exponent).to_integral_value() or abs(exponent) > 12:
            self.no_sql("^ in SQL needs a constant whole exponent between -12 and 12", node)
        k = int(exponent)
        if k == 0:
            one, scale = self.num.literal(Decimal(1))
            return SqlValue(t, sa.case((a.expr.is_(None), sa.null()), else_=one), a.nullable, scale)
        result = a
        for _ in range(abs(k) - 1):
            result = self.num.mul(result, a, t)
        if k < 0:
            one = self.constant(Decimal(1), "number")
            return self.num.div(one, result, t)
        return result

    def date_add(self, d: SqlValue, n: SqlValue) -> SqlValue:
        days = self.num.days(n)
        if self.is_sqlite:
            expr = sa.func.date(d.expr, concat(days, " days"))
        else:
            expr = d.expr + days
        return SqlValue("date", expr, d.nullable or n.nullable)

    def datetime_add(self, d: SqlValue, n: SqlValue) -> SqlValue:
        seconds = self.num.seconds_of_days(n)
        if self.is_sqlite:
            whole = sa.func.substr(d.expr, 1, 19)  # SQLite would round .999999 up to the next second
            expr = concat(sa.func.strftime("%Y-%m-%d %H:%M:%S", whole, concat(seconds, " seconds")),
                          sa.func.substr(d.expr, 20))
        else:
            expr = d.expr + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
        return SqlValue("datetime", expr, d.nullable or n.nullable)

    def datetime_diff(self, a: SqlValue, b: SqlValue) -> SqlValue:
        if self.is_sqlite:
            def micro(x):
                return (sa.cast(sa.func.strftime("%s", sa.func.substr(x, 1, 19)), sa.BigInteger()) * 1000000
                        + sa.cast(sa.func.substr(x, 21, 6), sa.BigInteger()))
            diff = micro(a.expr) - micro(b.expr)
            return SqlValue("number", self.num.round_div_const(diff, 864), a.nullable or b.nullable, rt.DIV_SCALE)
        diff = (sa.extract("epoch", a.expr) - sa.extract("epoch", b.expr)) * 1000000
        q = self.num.round_div_const(diff, 864) * self.num.unit(rt.DIV_SCALE)
        return SqlValue("number", q, a.nullable or b.nullable, rt.DIV_SCALE)

    def _in(self, node: ast.In) -> SqlValue:
        operand = self.compile(node.operand)
        items = [self.compile(i) for i in node.items]
        literal_values = [i.literal for i in items if i.is_literal]
        result = None
        if operand.type in NUMERIC and len(literal_values) == len(items) and None not in literal_values:
            values = []
            for value in literal_values:  # at the operand's scale; a value with more decimals never matches
                value = rt.dec(value)
                if self.is_sqlite or _int_column(operand):
                    scaled = value.scaleb(operand.scale)
                    if scaled == scaled.to_integral_value():
                        values.append(sa.literal(int(scaled), sa.BigInteger()))
                else:
                    values.append(sa.literal(value, sa.Numeric()))
            if values:
                loose = (operand.raw if _int_column(operand) else operand.expr).in_(values)
                strict = sa.func.coalesce(loose, sa.false()) if operand.nullable else loose
                result = SqlValue("boolean", strict, loose=loose)
            else:
                result = SqlValue("boolean", sa.false(), loose=sa.false())
        fast = operand.type in TEXTUAL or (operand.type == "id" and all(i.scale == 0 for i in items))
        if result is None and fast and len(literal_values) == len(items) and None not in literal_values:
            params = [i.expr for i in items]
            strict = operand.expr.in_(params)
            if operand.nullable:
                strict = sa.func.coalesce(strict, sa.false())
            loose = strict
            if operand.raw is not None and "" not in literal_values:
                loose = operand.raw.in_(params)
            result = SqlValue("boolean", strict, loose=loose)
        if result is None:
            result = self.logical("or", [self.compare("=", operand, i) for i in items])
        return self.negate(result) if node.negated else result

    def _call(self, node: ast.Call) -> SqlValue:
        name, spec = node.name, node.spec
        special = getattr(self, "_fn_" + name.lower(), None) if spec.special else None
        if special is not None:
            return special(node)
        if spec.special or spec.sql is None:
            why = "it needs the record being saved" if name in ("ISNEW", "ISCHANGED", "PRIORVALUE") else \
                "it has no SQL implementation"
            self.no_sql(f"{name} cannot be computed by the database: {why}", node)
        args = [self.compile(a) for a in node.args]
        sv = spec.sql(self, args)
        if not isinstance(sv, SqlValue):  # a bare SQLAlchemy expression from a plugin: its natural value
            sv = self.natural(sv, node.type, any(a.nullable for a in args))
        if spec.blanks == "propagate":
            sv = self.propagate_blanks(sv, args, node.type)
        if isinstance(sv, SqlValue):
            if sv.type != node.type and not (sv.type in NUMERIC and node.type in NUMERIC) and \
                    not (sv.type in TEXTUAL and node.type in TEXTUAL):
                sv = replace(sv, type=node.type)
            elif sv.type in NUMERIC and node.type in NUMERIC:
                sv = replace(sv, type=node.type)
        return sv

    def propagate_blanks(self, sv: SqlValue, args: list[SqlValue], type_: str) -> SqlValue:
        """A blank argument gives a blank result, as in Python (blank text is '', a blank boolean FALSE)."""
        blanks = [a.expr.is_(None) for a in args if a.nullable and a.type not in TEXTUAL | {"boolean", "multipicklist"}]
        if not blanks:
            return sv
        test = sa.or_(*blanks) if len(blanks) > 1 else blanks[0]
        blank = self.null(type_ if type_ != "null" else "number")
        if sv.type == "boolean":
            return SqlValue("boolean", sa.case((test, sa.false()), else_=sv.expr),
                            loose=sa.case((test, sa.false()), else_=sv.where))
        nullable = blank.nullable
        return replace(sv, expr=sa.case((test, blank.expr), else_=sv.expr), nullable=nullable, raw=None,
                       literal=_NOLIT)

    def natural(self, expr, type_: str, nullable: bool) -> SqlValue:
        """Wrap a plain SQL expression holding a value of ``type_`` (numbers as real values)."""
        if type_ in NUMERIC:
            if self.is_sqlite:
                scale = rt.DIV_SCALE
                return SqlValue(type_, sa.cast(sa.func.round(expr * 10 ** scale), sa.BigInteger()), nullable, scale)
            return SqlValue(type_, expr, nullable, 0)
        if type_ in TEXTUAL:
            return SqlValue(type_, sa.func.coalesce(expr, "") if nullable else expr)
        if type_ == "boolean":
            return self.boolean(expr, nullable)
        return SqlValue(type_, expr, nullable)

    # -- special forms ----------------------------------------------------------------------------------
    def unify(self, values: list[SqlValue], type_: str) -> tuple[list, int]:
        if type_ in NUMERIC:
            exprs, scale = self.num.align(*values)
            return exprs, scale
        return [v.expr for v in values], 0

    def _fn_if(self, node):
        cond, a, b = (self.compile(x) for x in node.args)
        if node.type == "boolean":
            expr = sa.case((cond.where, a.expr), else_=b.expr)
            loose = sa.case((cond.where, a.where), else_=b.where)
            return SqlValue("boolean", expr, loose=loose)
        (ea, eb), scale = self.unify([a, b], node.type)
        return SqlValue(node.type, sa.case((cond.where, ea), else_=eb), a.nullable or b.nullable, scale)

    def _fn_case(self, node):
        subject = self.compile(node.args[0])
        rest = node.args[1:]
        pairs = [(self.compile(rest[i]), self.compile(rest[i + 1])) for i in range(0, len(rest) - 1, 2)]
        default = self.compile(rest[-1])
        results = [r for _, r in pairs] + [default]
        exprs, scale = self.unify(results, node.type)
        whens = [(self.compare("=", subject, v).where, e) for (v, _), e in zip(pairs, exprs)]
        expr = sa.case(*whens, else_=exprs[-1])
        if node.type == "boolean":
            return SqlValue("boolean", expr, loose=expr)
        return SqlValue(node.type, expr, any(r.nullable for r in results), scale)

    def _fn_and(self, node):
        return self.logical("and", [self.compile(a) for a in node.args])

    def _fn_or(self, node):
        return self.logical("or", [self.compile(a) for a in node.args])

    def _fn_not(self, node):
        return self.negate(self.compile(node.args[0]))

    def blank_test(self, v: SqlValue, text_never_null: bool = False) -> SqlValue:
        if v.type in TEXTUAL or v.type == "multipicklist":
            if text_never_null:
                return SqlValue("boolean", sa.false(), loose=sa.false())
            strict = v.expr == ""
            loose = sa.or_(v.raw.is_(None), v.raw == "") if v.raw is not None and not v.is_literal else strict
            return SqlValue("boolean", strict, loose=loose)
        if v.type == "boolean":
            return SqlValue("boolean", sa.false(), loose=sa.false())
        if not v.nullable:
            return SqlValue("boolean", sa.false(), loose=sa.false())
        expr = v.expr.is_(None)
        return SqlValue("boolean", expr, loose=expr)

    def _fn_isblank(self, node):
        return self.blank_test(self.compile(node.args[0]))

    def _fn_isnull(self, node):
        return self.blank_test(self.compile(node.args[0]), text_never_null=True)

    def _substitute_blank(self, node, text_too: bool):
        v, sub = self.compile(node.args[0]), self.compile(node.args[1])
        if v.type in TEXTUAL or v.type == "multipicklist":
            if not text_too:
                return v
            return SqlValue(node.type, sa.case((v.expr == "", sub.expr), else_=v.expr))
        if v.type == "boolean":
            return v
        (ev, es), scale = self.unify([v, sub], node.type)
        return SqlValue(node.type, sa.func.coalesce(ev, es), sub.nullable, scale)

    def _fn_blankvalue(self, node):
        return self._substitute_blank(node, True)

    def _fn_nullvalue(self, node):
        return self._substitute_blank(node, False)

    def _fn_today(self, node):
        return self.constant(self.scope.today, "date", node)

    def _fn_now(self, node):
        return self.constant(self.scope.now, "datetime", node)


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
