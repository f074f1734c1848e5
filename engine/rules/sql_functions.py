"""The SQL back end of the built-in formula functions: each ``_sql_<name>(sc, args) -> SqlValue``
compiles one call with the SQL compiler ``sc`` (``engine.rules.to_sql.SqlCompiler``), on SQLite
and PostgreSQL alike; ``functions.builtin_functions`` pairs them with the Python implementations.
"""

from __future__ import annotations

import sqlalchemy as sa

from . import runtime as rt
from .schema import NUMERIC
from .sql_values import concat


def _sql_len(sc, a):
    return sc.number(sa.func.length(a[0].expr), 0)


def _sql_left(sc, a):
    n = sc.greatest(sc.int_expr(a[1]), sc.const(0))
    return sc.text(sa.func.substr(a[0].expr, 1, n), a[1].nullable)


def _sql_right(sc, a):
    n = sc.int_expr(a[1])
    start = sc.greatest(sa.func.length(a[0].expr) - n + 1, sc.const(1))
    return sc.text(sa.case((n <= 0, sc.literal_text("")), else_=sa.func.substr(a[0].expr, start)), a[1].nullable)


def _sql_mid(sc, a):
    start = sc.greatest(sc.int_expr(a[1]), sc.const(1))
    n = sc.greatest(sc.int_expr(a[2]), sc.const(0))
    return sc.text(sa.func.substr(a[0].expr, start, n), a[1].nullable or a[2].nullable)


def _sql_upper(sc, a):
    return sc.text(sa.func.upper(a[0].expr))


def _sql_lower(sc, a):
    return sc.text(sa.func.lower(a[0].expr))


def _sql_trim(sc, a):
    chars = sc.literal_text(" \t")
    fn = sa.func.trim if sc.is_sqlite else sa.func.btrim
    return sc.text(fn(a[0].expr, chars))


def _sql_contains(sc, a):
    return sc.boolean(sc.position(a[1].expr, a[0].expr) > 0)


def _sql_begins(sc, a):
    return sc.boolean(sa.func.substr(a[0].expr, 1, sa.func.length(a[1].expr)) == a[1].expr)


def _sql_find(sc, a):
    search, text_ = a[0].expr, a[1].expr
    if len(a) > 2:
        start = sc.greatest(sc.int_expr(a[2]), sc.const(1))
        rest = sa.func.substr(text_, start)
        found = sc.position(search, rest)
        value = sa.case((search == "", sc.const(0)), (found > 0, found + start - 1), else_=sc.const(0))
        return sc.number(value, 0, a[2].nullable)
    found = sc.position(search, text_)
    return sc.number(sa.case((search == "", sc.const(0)), else_=found), 0)


def _sql_substitute(sc, a):
    return sc.text(sa.func.replace(a[0].expr, a[1].expr, a[2].expr))


def _sql_pad(left: bool):
    def build(sc, a):
        t = a[0].expr
        n = sc.greatest(sc.int_expr(a[1]), sc.const(0))
        pad = a[2].expr if len(a) > 2 else sc.literal_text(" ")
        nullable = a[1].nullable
        if not sc.is_sqlite:
            fn = sa.func.lpad if left else sa.func.rpad
            return sc.text(fn(t, n, pad), nullable)
        fill = sa.func.substr(sa.func.replace(sa.func.hex(sa.func.zeroblob(n)), "00", pad), 1,
                              n - sa.func.length(t))
        padded = concat(fill, t) if left else concat(t, fill)
        return sc.text(sa.case((sa.func.length(t) >= n, sa.func.substr(t, 1, n)), else_=padded), nullable)
    return build


def _sql_text(sc, a):
    x = a[0]
    if x.type in NUMERIC:
        return sc.text(sc.num.to_text(x), x.nullable)
    if x.type == "id":
        return sc.text(sa.cast(x.expr, sa.String()), x.nullable)
    if x.type == "date":
        expr = x.expr if sc.is_sqlite else sa.func.to_char(x.expr, "YYYY-MM-DD")
        return sc.text(expr, x.nullable)
    if x.type == "datetime":
        if sc.is_sqlite:
            expr = sa.func.strftime("%Y-%m-%d %H:%M:%SZ", x.expr)
        else:
            expr = sa.func.to_char(sa.func.timezone("UTC", x.expr), 'YYYY-MM-DD HH24:MI:SS"Z"')
        return sc.text(expr, x.nullable)
    if x.type == "boolean":
        return sc.text(sa.case((x.expr, sc.literal_text("true")), else_=sc.literal_text("false")))
    return sc.text(x.expr)


def _sql_abs(sc, a):
    return sc.num.abs(a[0])


def _sql_round(sc, a):
    if not a[1].is_literal or a[1].literal is None:
        sc.no_sql("ROUND in SQL needs a constant number of digits")
    return sc.num.round(a[0], rt.to_int(a[1].literal))


def _sql_floor(sc, a):
    return sc.num.trunc(a[0])


def _sql_ceiling(sc, a):
    return sc.num.ceil_away(a[0])


def _sql_mod(sc, a):
    return sc.num.mod(a[0], a[1])


def _sql_minmax(largest: bool):
    def build(sc, a):
        if a[0].type in NUMERIC:
            return sc.num.extreme(a, largest)
        return sc.extreme(a, largest)
    return build


def _sql_year(part: str):
    def build(sc, a):
        d = a[0].expr
        if sc.is_sqlite:
            fmt = {"year": "%Y", "month": "%m", "day": "%d", "dow": "%w"}[part]
            expr = sa.cast(sa.func.strftime(fmt, d), sa.Integer())
        else:
            expr = sa.cast(sa.extract(part, d), sa.Integer())
        if part == "dow":
            expr = expr + 1
        return sc.number(expr, 0, a[0].nullable)
    return build


def _sql_addmonths(sc, a):
    d, n = a[0].expr, sc.int_expr(a[1])
    nullable = a[0].nullable or a[1].nullable
    if sc.is_sqlite:
        month_end = sa.func.date(d, "start of month", "+1 month", "-1 day")
        first = sa.func.date(d, "start of month", concat(n, " months"))
        last_target = sa.func.date(first, "+1 month", "-1 day")
        same_day = sa.func.date(first, concat(sa.cast(sa.func.strftime("%d", d), sa.Integer()) - 1, " days"))
        expr = sa.case((d == month_end, last_target), else_=sa.func.min(same_day, last_target))
        return sc.date(expr, nullable)
    one_day = sa.literal_column("interval '1 day'")
    start = sa.func.date_trunc("month", sa.cast(d, sa.DateTime()))
    month_end = sa.cast(start + sa.literal_column("interval '1 month'") - one_day, sa.Date())
    shifted = sa.cast(sa.cast(d, sa.DateTime()) + sa.func.make_interval(0, n), sa.Date())
    last_target = sa.cast(start + sa.func.make_interval(0, n + 1) - one_day, sa.Date())
    return sc.date(sa.case((d == month_end, last_target), else_=shifted), nullable)


def _sql_datevalue(sc, a):
    x = a[0]
    if x.type == "date":
        return x
    if x.type == "datetime":
        expr = sa.func.date(x.expr) if sc.is_sqlite else sa.cast(sa.func.timezone("UTC", x.expr), sa.Date())
        return sc.date(expr, x.nullable)
    sc.no_sql("DATEVALUE of a text has no SQL form (it may fail on a bad value); use a constant or a date field")


def _sql_datetimevalue(sc, a):
    x = a[0]
    if x.type == "datetime":
        return x
    if x.type == "date":
        if sc.is_sqlite:
            expr = concat(x.expr, " 00:00:00.000000")
        else:
            expr = sa.func.timezone("UTC", sa.cast(x.expr, sa.DateTime()))
        return sc.datetime(expr, x.nullable)
    sc.no_sql("DATETIMEVALUE of a text has no SQL form; use a constant or a date field")


def _sql_ispickval(sc, a):
    return sc.compare("=", a[0], a[1])


def _sql_includes(sc, a):
    wrapped = concat(sc.literal_text(";"), a[0].expr, sc.literal_text(";"))
    wanted = concat(sc.literal_text(";"), a[1].expr, sc.literal_text(";"))
    return sc.boolean(sc.position(wanted, wrapped) > 0)
