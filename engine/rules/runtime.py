"""Helpers the generated Python code calls: exact decimal arithmetic, dates, record navigation.

Arithmetic is exact: + - * use a 60-digit context (never the thread's context), division and the
non-exact functions (SQRT, EXP, LN, LOG, fractional powers) round half away from zero to
``DIV_SCALE`` decimal places, exactly as the SQL back end does.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import (ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Context, Decimal, DivisionByZero, InvalidOperation,
                     Overflow)


DIV_SCALE = 8
CTX = Context(prec=60, rounding=ROUND_HALF_UP, Emax=999999, Emin=-999999,
              traps=[InvalidOperation, DivisionByZero, Overflow])
_MISSING = object()
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
UTC = timezone.utc


class Fail(Exception):
    """Raised by helpers; the compiled function turns it into a RuleRuntimeError with a position."""


def dec(x) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(x)


def _ratio(x) -> tuple[int, int]:
    if isinstance(x, int):
        return x, 1
    return x.as_integer_ratio()


def round_ratio(n: int, d: int) -> int:
    """n / d rounded half away from zero (d != 0)."""
    q = (2 * abs(n) + abs(d)) // (2 * abs(d))
    return -q if (n < 0) != (d < 0) else q


def div(a, b) -> Decimal:
    if not b:
        raise Fail("division by zero")
    an, ad = _ratio(a)
    bn, bd = _ratio(b)
    return Decimal(round_ratio(an * bd * 10 ** DIV_SCALE, ad * bn)).scaleb(-DIV_SCALE)


def add(a, b):
    return CTX.add(a, b) if isinstance(a, Decimal) or isinstance(b, Decimal) else a + b


def sub(a, b):
    return CTX.subtract(a, b) if isinstance(a, Decimal) or isinstance(b, Decimal) else a - b


def mul(a, b):
    return CTX.multiply(a, b) if isinstance(a, Decimal) or isinstance(b, Decimal) else a * b


def power(a, b):
    b = dec(b)
    if b == b.to_integral_value():
        k = int(b)
        if abs(k) > 1000:
            raise Fail(f"the exponent {k} is too large")
        if k == 0:
            return Decimal(1)
        if k > 0:
            return CTX.power(dec(a), k)
        if a == 0:
            raise Fail("division by zero (0 to a negative power)")
        return div(1, CTX.power(dec(a), -k))
    if a < 0:
        raise Fail("a negative number cannot be raised to a fractional power")
    if a == 0:
        return Decimal(0)
    try:
        return _scaled(CTX.power(dec(a), b))
    except (Overflow, InvalidOperation):
        raise Fail("the result is too large") from None


def _scaled(x: Decimal) -> Decimal:
    try:
        return x.quantize(Decimal(1).scaleb(-DIV_SCALE), rounding=ROUND_HALF_UP, context=CTX)
    except InvalidOperation:
        raise Fail("the result is too large") from None


def to_int(x) -> int:
    """A number as a whole number, truncated toward zero (counts, positions, days, months)."""
    return x if isinstance(x, int) else int(x)


def round_(x, digits):
    places = to_int(digits)
    if isinstance(x, int) and places >= 0:
        return x
    q = dec(x).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP, context=CTX)
    return Decimal(int(q)) if places <= 0 else q


def floor_(x):
    return x if isinstance(x, int) else x.to_integral_value(rounding=ROUND_DOWN)


def ceiling(x):
    return x if isinstance(x, int) else x.to_integral_value(rounding=ROUND_UP)


def mod(a, b):
    if not b:
        raise Fail("MOD by zero")
    return CTX.remainder(dec(a), dec(b))


def sqrt(x):
    if x < 0:
        raise Fail("SQRT of a negative number")
    return _scaled(CTX.sqrt(dec(x)))


def exp(x):
    try:
        return _scaled(CTX.exp(dec(x)))
    except Overflow:
        raise Fail("EXP: the result is too large") from None


def ln(x):
    if x <= 0:
        raise Fail("LN of a number that is not positive")
    return _scaled(CTX.ln(dec(x)))


def log10(x):
    if x <= 0:
        raise Fail("LOG of a number that is not positive")
    return _scaled(CTX.log10(dec(x)))


def num_text(x) -> str:
    if isinstance(x, int):
        return str(x)
    if x == 0:
        return "0"
    return format(CTX.normalize(x), "f")


def text(x) -> str:
    """TEXT(): numbers without formatting, dates as YYYY-MM-DD, datetimes as YYYY-MM-DD HH:MM:SSZ (UTC)."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, Decimal)):
        return num_text(x)
    if isinstance(x, datetime):
        return x.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(x, date):
        return x.isoformat()
    if isinstance(x, (list, tuple)):
        return ";".join(x)
    return str(x)


def value(t: str):
    s = t.strip()
    if not s:
        return None
    if not _NUMBER.fullmatch(s):
        raise Fail(f"VALUE: {t!r} is not a number")
    return Decimal(s)


def isnumber(t: str) -> bool:
    return bool(_NUMBER.fullmatch(t.strip()))


def left(t: str, n) -> str:
    n = to_int(n)
    return t[:n] if n > 0 else ""


def right(t: str, n) -> str:
    n = to_int(n)
    return t[max(len(t) - n, 0):] if n > 0 else ""


def mid(t: str, start, n) -> str:
    s, n = max(to_int(start), 1), to_int(n)
    return t[s - 1:s - 1 + n] if n > 0 else ""


def find(search: str, t: str, start=1) -> int:
    if search == "":
        return 0
    s = max(to_int(start), 1)
    return t.find(search, s - 1) + 1


def substitute(t: str, old: str, new: str) -> str:
    return t if old == "" else t.replace(old, new)


def lpad(t: str, n, pad: str = " ") -> str:
    n = max(to_int(n), 0)
    if len(t) >= n:
        return t[:n]
    if pad == "":
        return t
    return (pad * n)[:n - len(t)] + t


def rpad(t: str, n, pad: str = " ") -> str:
    n = max(to_int(n), 0)
    if len(t) >= n:
        return t[:n]
    if pad == "":
        return t
    return t + (pad * n)[:n - len(t)]


def trim(t: str) -> str:
    return t.strip(" \t")


_REGEX_CACHE: dict[str, re.Pattern] = {}


def compile_regex(pattern: str) -> re.Pattern:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise Fail(f"REGEX: {pattern!r} is not a valid regular expression: {exc}") from None
        if len(_REGEX_CACHE) > 512:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = compiled
    return compiled


def regex(t: str, pattern: str) -> bool:
    return compile_regex(pattern).fullmatch(t) is not None


# -- dates ---------------------------------------------------------------------------------------
def make_date(y, m, d) -> date:
    try:
        return date(to_int(y), to_int(m), to_int(d))
    except (ValueError, OverflowError):
        raise Fail(f"DATE({y}, {m}, {d}) is not a valid date") from None


def date_add(d: date, days) -> date:
    try:
        return d + timedelta(days=to_int(days))
    except OverflowError:
        raise Fail("the date is out of range") from None


def date_diff(a: date, b: date) -> int:
    return (a - b).days


def dt_add(dt: datetime, days) -> datetime:
    n, d = _ratio(days)
    try:
        return dt + timedelta(seconds=round_ratio(n * 86400, d))
    except OverflowError:
        raise Fail("the date and time is out of range") from None


def dt_diff(a: datetime, b: datetime) -> Decimal:
    delta = a - b
    us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(round_ratio(us, 864)).scaleb(-DIV_SCALE)


def year(d):
    return d.year


def month(d):
    return d.month


def day(d):
    return d.day


def weekday(d) -> int:
    """1 = Sunday ... 7 = Saturday."""
    return (d.isoweekday() % 7) + 1


def addmonths(d: date, n) -> date:
    """Salesforce: the last day of the month stays the last day; a day the target month lacks
    becomes its last day."""
    y, m = divmod(d.month - 1 + to_int(n), 12)
    y += d.year
    m += 1
    if not 1 <= y <= 9999:
        raise Fail("ADDMONTHS: the date is out of range")
    last_target = calendar.monthrange(y, m)[1]
    last_source = calendar.monthrange(d.year, d.month)[1]
    day_ = last_target if d.day == last_source or d.day > last_target else d.day
    return date(y, m, day_)


def datevalue(x) -> date | None:
    if isinstance(x, datetime):
        return x.astimezone(UTC).date()
    if isinstance(x, date):
        return x
    s = x.strip()
    if not s:
        return None
    try:
        return date.fromisoformat(s[:10]) if len(s) == 10 else parse_datetime(s).date()
    except (ValueError, Fail):
        raise Fail(f"DATEVALUE: {x!r} is not a date (YYYY-MM-DD)") from None


def parse_datetime(s: str) -> datetime:
    text_ = s.strip()
    if text_.endswith(("Z", "z")):
        text_ = text_[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text_)
    except ValueError:
        raise Fail(f"{s!r} is not a date and time (YYYY-MM-DD HH:MM:SS, in GMT)") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def datetimevalue(x) -> datetime | None:
    if isinstance(x, datetime):
        return x.astimezone(UTC)
    if isinstance(x, date):
        return datetime.combine(x, time(0), UTC)
    s = x.strip()
    if not s:
        return None
    if len(s) == 10:
        try:
            return datetime.combine(date.fromisoformat(s), time(0), UTC)
        except ValueError:
            raise Fail(f"DATETIMEVALUE: {x!r} is not a date") from None
    return parse_datetime(s)


def clock(now) -> tuple[datetime, date]:
    """(NOW(), TODAY()) for an evaluation: ``now`` as given (a naive datetime is taken as UTC, a date
    as its midnight UTC), or the current time."""
    if now is None:
        current = datetime.now(UTC)
    elif isinstance(now, datetime):
        current = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    elif isinstance(now, date):
        current = datetime.combine(now, time(0), UTC)
    else:
        raise TypeError(f"now must be a datetime or a date, not {type(now).__name__}")
    return current, current.date()


# -- records -------------------------------------------------------------------------------------
def ident(value):
    """A lookup's value as an id: a nested related record gives its ``id``."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value


def walk(record: Mapping, related: Mapping | None, keys: tuple[tuple[str, ...], ...]):
    """The value at a path across lookups: each hop is a nested dict (in ``related`` for the first
    hop, else in the record). A hop that is blank gives blank; a hop given only as an id is an error."""
    node = record
    for i, alternatives in enumerate(keys[:-1]):
        value = _MISSING
        for source in ((related, node) if i == 0 and related else (node,)):
            for key in alternatives:  # a nested record wins over a bare id under another name
                found = source.get(key, _MISSING)
                if isinstance(found, Mapping):
                    value = found
                    break
                if value is _MISSING and found is not _MISSING:
                    value = found
            if isinstance(value, Mapping):
                break
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, Mapping):
            path = ".".join(k[0] for k in keys)
            raise Fail(f"{path} needs the related {alternatives[0]} record: pass it as a nested dict "
                       f"(in the record or in related=), not just its id")
        node = value
    for key in keys[-1]:
        if key in node:
            return node[key]
    return None


def same(a, b) -> bool:
    """Equality used by ISCHANGED: blank text and '' are the same."""
    if a == "" or a == [] or a == ():
        a = None
    if b == "" or b == [] or b == ():
        b = None
    return a == b


def as_decimal(x):
    """Final results of number formulas come back as Decimal."""
    if x is None or isinstance(x, Decimal):
        return x
    return Decimal(x)
