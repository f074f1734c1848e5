"""The special forms of the formula language in SQL: IF, CASE, AND/OR/NOT, the blank tests
(ISBLANK, ISNULL, BLANKVALUE, NULLVALUE), TODAY and NOW; part of ``SqlCompiler``
(``engine.rules.to_sql``). Their arguments compile lazily, so they are not plain functions."""

from __future__ import annotations

import sqlalchemy as sa

from .schema import NUMERIC, TEXTUAL
from .sql_values import SqlValue


class SpecialForms:
    """Functions compiled by the compiler itself rather than by a ``Function.sql``, for ``SqlCompiler``."""

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
