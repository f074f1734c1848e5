"""Checked syntax tree -> SQLAlchemy expression, for SQLite and PostgreSQL.

Numbers are exact (``sql_numbers``: scaled integers on SQLite, NUMERIC on PostgreSQL).

Blanks: text is never NULL here (a NULL text column reads as ''), booleans are never NULL (a
comparison with a blank is FALSE). Each boolean has a strict form (for values) and a loose form for
WHERE clauses, where NULL may stand for FALSE (``amount > 5`` instead of ``COALESCE(amount > 5,
false)``), so indexes stay usable.

Every literal of the expression becomes a bound parameter: expression text never reaches SQL text.

Here: the compiler (nodes, references, calls, the result's type). Beside it: ``sql_values`` (what a
compiled value is), ``sql_scope`` (tables and joins), ``sql_numbers``, ``sql_operators`` and
``sql_forms`` (IF, CASE, blanks); each function's own SQL is in ``functions``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NoReturn

import sqlalchemy as sa

from engine.fields.base import INT64_MAX
from engine.fields.sqltypes import UtcDateTime

from . import ast
from . import runtime as rt
from .errors import NotInSQLError
from .schema import NUMERIC, TEXTUAL, FieldInfo
from .sql_forms import SpecialForms
from .sql_numbers import PgNum, SqliteNum, _Num
from .sql_operators import Operators
from .sql_scope import Scope
from .sql_values import _NOLIT, SqlValue, coerce, concat, idiv

__all__ = ["MAX_SQL_PARTS", "Scope", "SqlCompiler", "SqlValue", "concat", "idiv"]

MAX_SQL_PARTS = 20_000


class SqlCompiler(Operators, SpecialForms):
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
