"""The operators of the formula language in SQL: comparisons, arithmetic on numbers, dates and
date-times, and IN; part of ``SqlCompiler`` (``engine.rules.to_sql``)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import sqlalchemy as sa

from . import ast
from . import runtime as rt
from .schema import NUMERIC, TEXTUAL
from .sql_values import (
    NUMBERISH,
    SqlValue,
    _int_column,
    _integral_literal,
    _order,
    _power_of_ten,
    concat,
)


class Operators:
    """Comparisons, arithmetic and IN, for ``SqlCompiler``."""

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
