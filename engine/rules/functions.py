"""The function registry, and the built-in functions with their Python implementations (their SQL
implementations are in ``sql_functions.py``).

A function declares its name, its parameters (kinds such as ``number``, ``text``, ``date``), its
return type, a Python implementation and, optionally, a SQL implementation. Plugins add functions
through the ``crm_formula_functions`` hook (see docs/plugins.md and docs/formulas.md).

Parameter kinds: ``number`` (number, currency or percent), ``text``, ``boolean``, ``date``,
``datetime``, ``picklist``, ``multipicklist``, ``any`` (any type), or several joined by ``|``
(``date|datetime``). ``NULL`` is accepted everywhere.

Blanks: with ``blanks="propagate"`` (the default) a blank argument gives a blank result without
calling the implementation (blank text is "", a blank boolean is FALSE). With ``blanks="pass"``
the implementation receives ``None`` for blank numbers, dates and datetimes.

A SQL implementation is ``sql(sc, args) -> SqlValue`` where ``sc`` is the SQL compiler
(``engine.rules.to_sql.SqlCompiler``) and ``args`` are compiled ``SqlValue`` arguments; see
docs/formulas.md, "Adding functions".
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from . import runtime as rt
from .schema import NUMERIC
from .sql_functions import (  # the SQL back end of the built-in functions
    _sql_abs,
    _sql_addmonths,
    _sql_begins,
    _sql_ceiling,
    _sql_contains,
    _sql_datetimevalue,
    _sql_datevalue,
    _sql_find,
    _sql_floor,
    _sql_includes,
    _sql_ispickval,
    _sql_left,
    _sql_len,
    _sql_lower,
    _sql_mid,
    _sql_minmax,
    _sql_mod,
    _sql_pad,
    _sql_right,
    _sql_round,
    _sql_substitute,
    _sql_text,
    _sql_trim,
    _sql_upper,
    _sql_year,
)


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[str, ...]
    returns: str | Callable[[list[str]], str]
    python: Callable | None = None
    sql: Callable | None = None
    min_args: int | None = None
    variadic: bool = False
    blanks: str = "propagate"
    doc: str = ""
    example: str = ""
    category: str = "other"
    #: may be computed once when every argument is a constant (False for TODAY, NOW, ...)
    constant: bool = True
    #: inline Python template for built-ins ("len({0})"), used instead of a call
    inline: str | None = None
    #: handled by the compilers themselves (IF, CASE, AND, ISBLANK, ISCHANGED, ...)
    special: bool = False
    #: extra check: check(checker, node, arg_types) may raise through checker.fail(...)
    check: Callable | None = None
    #: the result may be blank even when no argument is (None: decided by ``blanks``)
    nullable: bool | None = None
    #: the Python implementation can raise a runtime error (it gets a position marker)
    can_fail: bool = False

    def __post_init__(self):
        object.__setattr__(self, "name", self.name.upper())
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", self.name):
            raise ValueError(f"invalid function name {self.name!r}")
        if self.blanks not in ("propagate", "pass"):
            raise ValueError("blanks must be 'propagate' or 'pass'")
        if self.python is None and not self.special:
            raise ValueError(f"function {self.name} needs a Python implementation")

    @property
    def minimum(self) -> int:
        return len(self.args) if self.min_args is None else self.min_args

    @property
    def maximum(self) -> int | None:
        return None if self.variadic else len(self.args)

    def kind_of(self, index: int) -> str:
        if index < len(self.args):
            return self.args[index]
        return self.args[-1]

    def return_type(self, arg_types: list[str]) -> str:
        return self.returns(arg_types) if callable(self.returns) else self.returns

    @property
    def signature(self) -> str:
        params = []
        for i, kind in enumerate(self.args):
            text = kind
            if i >= self.minimum:
                text = f"[{text}]"
            params.append(text)
        if self.variadic:
            params.append("...")
        ret = self.returns if isinstance(self.returns, str) else "(depends on arguments)"
        return f"{self.name}({', '.join(params)}) -> {ret}"


_SERIALS = itertools.count(1)


class FunctionRegistry:
    """Functions by upper-case name; a name can be registered once."""

    def __init__(self, functions: Iterable[Function] = ()):
        self._functions: dict[str, Function] = {}
        self._key = next(_SERIALS)
        for fn in functions:
            self.register(fn)

    def register(self, fn: Function) -> None:
        if not isinstance(fn, Function):
            raise TypeError(f"expected an engine.rules.Function, got {type(fn).__name__}")
        if fn.name in self._functions:
            raise ValueError(f"formula function {fn.name} is registered twice")
        self._functions[fn.name] = fn
        self._key = next(_SERIALS)  # a changed registry never shares compiled expressions

    def get(self, name: str) -> Function | None:
        return self._functions.get(name.upper())

    def names(self) -> list[str]:
        return sorted(self._functions)

    def __contains__(self, name: str) -> bool:
        return name.upper() in self._functions

    def __iter__(self):
        return iter(self._functions.values())

    @property
    def key(self) -> int:
        """Identity of the registry and its contents, part of the compile cache key."""
        return self._key


# -- return-type helpers ----------------------------------------------------------------------------
def _first(types: list[str]) -> str:
    t = types[0] if types else "number"
    return "number" if t == "null" else t


def _numeric_result(types: list[str]) -> str:
    known = [t for t in types if t != "null"]
    if not known:
        return "number"
    if all(t == known[0] for t in known):
        return known[0]
    if known[0] in NUMERIC:
        return "currency" if "currency" in known else "number"
    return known[0]


# -- checks -------------------------------------------------------------------------------------------
def _check_regex(checker, node, types):
    pattern = node.args[1]
    if getattr(pattern, "lit_type", None) == "text":
        try:
            re.compile(pattern.value)
        except re.error as exc:
            checker.fail("runtime", f"REGEX: {pattern.value!r} is not a valid regular expression: {exc}", pattern)


def _check_option_literal(checker, node, types):
    checker.check_option(node.args[0], node.args[1])


def _check_same_kind(checker, node, types):
    kinds = {"number" if t in NUMERIC else t for t in types if t != "null"}
    if len(kinds) > 1:
        checker.fail("type", f"{node.name} needs arguments of one kind (all numbers, all dates or all "
                             f"date/times), got {', '.join(sorted(kinds))}", node)


def _special(name, args, returns, doc, example, category, **kw) -> Function:
    return Function(name, args, returns, special=True, doc=doc, example=example, category=category, **kw)


def builtin_functions() -> list[Function]:
    """The built-in functions (registered by the core plugin through ``crm_formula_functions``)."""
    F = Function
    return [
        # logical --------------------------------------------------------------------------------
        _special("IF", ("boolean", "any", "any"), _first, "The second argument if the condition is TRUE, else the third.",
                 'IF(amount > 1000, "big", "small")', "logical"),
        _special("CASE", ("any",), _first,
                 "Compares the first argument with each value; returns the result paired with the first "
                 "equal value, else the last argument.", "CASE(stage, 'won', 100, 'lost', 0, 50)", "logical",
                 variadic=True, min_args=1),
        _special("AND", ("boolean", "boolean"), "boolean", "TRUE if every argument is TRUE.",
                 "AND(amount > 0, stage = 'won')", "logical", variadic=True, min_args=1),
        _special("OR", ("boolean", "boolean"), "boolean", "TRUE if any argument is TRUE.",
                 "OR(stage = 'won', stage = 'lost')", "logical", variadic=True, min_args=1),
        _special("NOT", ("boolean",), "boolean", "TRUE if the argument is FALSE.", "NOT(ISBLANK(email))", "logical"),
        _special("ISBLANK", ("any",), "boolean",
                 "TRUE if the value is blank: no number, no date, or text with no characters.",
                 "ISBLANK(close_date)", "logical"),
        _special("ISNULL", ("any",), "boolean",
                 "Like ISBLANK, but text is never null (always FALSE for text); use ISBLANK.",
                 "ISNULL(amount)", "logical"),
        _special("BLANKVALUE", ("any", "any"), _numeric_result,
                 "The first argument, or the second when the first is blank.",
                 "BLANKVALUE(amount, 0)", "logical"),
        _special("NULLVALUE", ("any", "any"), _numeric_result,
                 "Like BLANKVALUE, but text is never null (text comes back unchanged); use BLANKVALUE.",
                 "NULLVALUE(amount, 0)", "logical"),
        _special("ISNEW", (), "boolean", "TRUE while the record is being created.", "ISNEW()", "logical",
                 constant=False),
        _special("ISCHANGED", ("any",), "boolean",
                 "TRUE if the field's value differs from its value before this change (FALSE on create).",
                 "ISCHANGED(stage)", "logical", constant=False),
        _special("PRIORVALUE", ("any",), _first,
                 "The field's value before this change (on create: its current value).",
                 "PRIORVALUE(amount) > amount", "logical", constant=False),
        # text ------------------------------------------------------------------------------------
        F("LEN", ("text",), "number", len, _sql_len, inline="len({0})", category="text",
          doc="Number of characters.", example='LEN("Acme") = 4'),
        F("LEFT", ("text", "number"), "text", rt.left, _sql_left, category="text",
          doc="The first n characters (none when n <= 0).", example='LEFT("Acme Inc", 4) = "Acme"'),
        F("RIGHT", ("text", "number"), "text", rt.right, _sql_right, category="text",
          doc="The last n characters (none when n <= 0).", example='RIGHT("Acme Inc", 3) = "Inc"'),
        F("MID", ("text", "number", "number"), "text", rt.mid, _sql_mid, category="text",
          doc="n characters from position start (1 is the first; below 1 counts as 1).",
          example='MID("Acme Inc", 6, 3) = "Inc"'),
        F("UPPER", ("text",), "text", str.upper, _sql_upper, inline="{0}.upper()", category="text",
          doc="Upper case.", example='UPPER("acme") = "ACME"'),
        F("LOWER", ("text",), "text", str.lower, _sql_lower, inline="{0}.lower()", category="text",
          doc="Lower case.", example='LOWER("ACME") = "acme"'),
        F("TRIM", ("text",), "text", rt.trim, _sql_trim, category="text",
          doc="Removes spaces and tabs at both ends.", example='TRIM("  Acme ") = "Acme"'),
        F("CONTAINS", ("text", "text"), "boolean", lambda t, s: s in t, _sql_contains, inline="({1} in {0})",
          category="text", doc="TRUE if the first text contains the second (case-sensitive; TRUE for \"\").",
          example='CONTAINS("Acme Inc", "Inc")'),
        F("BEGINS", ("text", "text"), "boolean", str.startswith, _sql_begins, inline="{0}.startswith({1})",
          category="text", doc="TRUE if the first text starts with the second (case-sensitive).",
          example='BEGINS(name, "Acme")'),
        F("FIND", ("text", "text", "number"), "number", rt.find, _sql_find, min_args=2, category="text",
          doc="Position (1-based) of the first text inside the second, from start; 0 if absent or if the "
              "searched text is blank.", example='FIND("c", "Acme") = 2'),
        F("SUBSTITUTE", ("text", "text", "text"), "text", rt.substitute, _sql_substitute, category="text",
          doc="Replaces every occurrence of the second text by the third.",
          example='SUBSTITUTE("a-b-c", "-", "/") = "a/b/c"'),
        F("TEXT", ("any",), "text", rt.text, _sql_text, category="text", blanks="pass",
          doc="A value as text: numbers without formatting, dates YYYY-MM-DD, date/times YYYY-MM-DD HH:MM:SSZ "
              "(GMT), picklists their value; blank gives \"\".", example='TEXT(amount) & " EUR"'),
        F("VALUE", ("text",), "number", rt.value, None, category="text", can_fail=True,
          doc="Text as a number; a runtime error if it is not one (blank gives blank).",
          example='VALUE("12.5") = 12.5'),
        F("LPAD", ("text", "number", "text"), "text", rt.lpad, _sql_pad(True), min_args=2, category="text",
          doc="Pads on the left to n characters with the pad text (default a space); longer text is cut to n.",
          example='LPAD("42", 5, "0") = "00042"'),
        F("RPAD", ("text", "number", "text"), "text", rt.rpad, _sql_pad(False), min_args=2, category="text",
          doc="Pads on the right to n characters (default a space); longer text is cut to n.",
          example='RPAD("ab", 4, "*") = "ab**"'),
        F("REGEX", ("text", "text"), "boolean", rt.regex, None, category="text", check=_check_regex,
          can_fail=True, doc="TRUE if the whole text matches the regular expression.",
          example='REGEX(phone, "[0-9]{3}-[0-9]{4}")'),
        F("ISNUMBER", ("text",), "boolean", rt.isnumber, None, category="text",
          doc="TRUE if the text is a number (digits, optional sign, point and exponent).",
          example='ISNUMBER("12.5")'),
        # math ------------------------------------------------------------------------------------
        F("ABS", ("number",), _first, abs, _sql_abs, inline="abs({0})", category="math",
          doc="Absolute value.", example="ABS(-3) = 3"),
        F("ROUND", ("number", "number"), _first, rt.round_, _sql_round, category="math",
          doc="Rounds to n decimal places, half away from zero (n < 0 rounds left of the point).",
          example="ROUND(-1.5, 0) = -2"),
        F("FLOOR", ("number",), _first, rt.floor_, _sql_floor, category="math",
          doc="Rounds down to a whole number, towards zero for negatives (Salesforce).",
          example="FLOOR(-2.5) = -2"),
        F("CEILING", ("number",), _first, rt.ceiling, _sql_ceiling, category="math",
          doc="Rounds up to a whole number, away from zero for negatives (Salesforce).",
          example="CEILING(-2.5) = -3"),
        F("MIN", ("number|date|datetime",), _numeric_result, lambda *a: min(a), _sql_minmax(False), variadic=True,
          category="math", check=_check_same_kind,
          doc="The smallest argument (numbers, or dates, or date/times); blank if any is blank.",
          example="MIN(amount, 1000)"),
        F("MAX", ("number|date|datetime",), _numeric_result, lambda *a: max(a), _sql_minmax(True), variadic=True,
          category="math", check=_check_same_kind,
          doc="The largest argument; blank if any is blank.", example="MAX(amount, 0)"),
        F("MOD", ("number", "number"), _first, rt.mod, _sql_mod, category="math", can_fail=True,
          doc="Remainder of the division, with the sign of the dividend; MOD by 0 is a runtime error.",
          example="MOD(-7, 2) = -1"),
        F("SQRT", ("number",), "number", rt.sqrt, None, category="math", can_fail=True,
          doc="Square root (8 decimal places); negative is a runtime error.", example="SQRT(16) = 4"),
        F("EXP", ("number",), "number", rt.exp, None, category="math", can_fail=True,
          doc="e to the power (8 decimal places).", example="EXP(1) = 2.71828183"),
        F("LN", ("number",), "number", rt.ln, None, category="math", can_fail=True,
          doc="Natural logarithm (8 decimal places); 0 or negative is a runtime error.",
          example="LN(EXP(2)) = 2"),
        F("LOG", ("number",), "number", rt.log10, None, category="math", can_fail=True,
          doc="Base-10 logarithm (8 decimal places); 0 or negative is a runtime error.",
          example="LOG(1000) = 3"),
        # date ------------------------------------------------------------------------------------
        _special("TODAY", (), "date", "The current date (UTC; fixed by now= when evaluating).",
                 "close_date < TODAY()", "date", constant=False),
        _special("NOW", (), "datetime", "The current date and time (UTC).", "NOW() - created_at > 1",
                 "date", constant=False),
        F("DATE", ("number", "number", "number"), "date", rt.make_date, None, category="date", can_fail=True,
          doc="The date of year, month, day; an invalid date is a runtime error.",
          example="DATE(2026, 2, 28)"),
        F("DATEVALUE", ("datetime|date|text",), "date", rt.datevalue, _sql_datevalue, category="date",
          can_fail=True, doc="The date of a date/time (in GMT) or of a text YYYY-MM-DD.",
          example='DATEVALUE("2026-03-01")'),
        F("DATETIMEVALUE", ("date|datetime|text",), "datetime", rt.datetimevalue, _sql_datetimevalue,
          category="date", can_fail=True,
          doc="A date/time from a date (midnight GMT) or a text YYYY-MM-DD HH:MM:SS (GMT).",
          example='DATETIMEVALUE("2026-03-01 09:30:00")'),
        F("YEAR", ("date",), "number", rt.year, _sql_year("year"), inline="{0}.year", category="date",
          doc="The year of a date.", example="YEAR(close_date)"),
        F("MONTH", ("date",), "number", rt.month, _sql_year("month"), inline="{0}.month", category="date",
          doc="The month of a date (1-12).", example="MONTH(close_date)"),
        F("DAY", ("date",), "number", rt.day, _sql_year("day"), inline="{0}.day", category="date",
          doc="The day of the month (1-31).", example="DAY(close_date)"),
        F("WEEKDAY", ("date",), "number", rt.weekday, _sql_year("dow"), category="date",
          doc="Day of the week: 1 = Sunday ... 7 = Saturday.", example="WEEKDAY(close_date) = 1"),
        F("ADDMONTHS", ("date", "number"), "date", rt.addmonths, _sql_addmonths, category="date", can_fail=True,
          doc="Adds n months; a month-end date stays at the month end, a day the target month lacks "
              "becomes its last day.", example="ADDMONTHS(close_date, 1)"),
        # picklists --------------------------------------------------------------------------------
        F("ISPICKVAL", ("picklist", "text"), "boolean", lambda p, v: p == v, _sql_ispickval,
          inline="({0} == {1})", category="picklist", check=_check_option_literal,
          doc="TRUE if the picklist's value is the text.", example="ISPICKVAL(stage, 'won')"),
        F("INCLUDES", ("multipicklist", "text"), "boolean", lambda m, v: v in m, _sql_includes,
          inline="({1} in {0})", category="picklist", check=_check_option_literal,
          doc="TRUE if the multi-select picklist includes the value.", example="INCLUDES(regions, 'emea')"),
    ]


_DEFAULT: FunctionRegistry | None = None


def default_registry() -> FunctionRegistry:
    """The built-in functions only (what ``evaluate`` and ``compile`` use when given no registry)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FunctionRegistry(builtin_functions())
    return _DEFAULT


def registry_from_plugins(pm) -> FunctionRegistry:
    """A registry from every ``crm_formula_functions`` implementation (the core plugin gives the built-ins)."""
    registry = FunctionRegistry()
    for functions in pm.hook.crm_formula_functions():
        for fn in functions or ():
            registry.register(fn)
    return registry
