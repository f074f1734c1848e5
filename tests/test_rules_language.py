"""The formula language in Python: syntax, precedence, types, every function and operator with
blanks, wrong types and runtime errors, the public entry points, the plugin hook and `crm eval`."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

import engine.rules as rules
from engine.plugins import hookimpl, make_plugin_manager
from engine.rules import evaluate

NOW = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


def error_of(expression, record=None, **kw) -> rules.RuleError:
    with pytest.raises(rules.RuleError) as info:
        evaluate(expression, record or {}, **kw)
    return info.value


# -- syntax and precedence -------------------------------------------------------------------------------
@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", D(7)), ("(1 + 2) * 3", D(9)), ("7 - 2 - 1", D(4)), ("12 / 2 / 3", D(2)), ("2 * 3 ^ 2", D(18)),
    ("-2 ^ 2", D(-4)), ("2 ^ 3 ^ 2", D(512)), ("2 ^ -1", D("0.5")), ("- - 3", D(3)), ("+3", D(3)),
    ('"a" & "b" & "c"', "abc"), ('"n" & TEXT(1 + 2)', "n3"), ("1 + 2 = 3", True), ("(1 < 2) = TRUE", True),
    ("TRUE OR FALSE AND FALSE", True), ("(TRUE OR FALSE) AND FALSE", False), ("NOT FALSE AND FALSE", False),
    ("NOT (1 > 2)", True), ("!TRUE || TRUE", True), ("TRUE && !FALSE", True), ("1 == 1 && 2 != 3", True),
    ("1 <> 1", False), ("3 IN (1, 2, 3)", True), ("3 NOT IN (1, 2)", True), ("NOT 3 IN (3)", False),
    ("if(true, 'x', 'y')", "x"), ("Len('abc')", D(3)), ("and(TRUE, TRUE)", True), ("Or(FALSE, FALSE)", False),
    ("1 /* a comment */ + 1", D(2)), ("'it\\'s' & \"\\\"q\\\"\"", "it's\"q\""), ("'a\\nb'", "a\nb"),
    ("1.50 + .5", D(2)), ("  1\n+\n2  ", D(3)),
])
def test_operators_and_precedence(expression, expected):
    result = evaluate(expression)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("expression, line, column, fragment", [
    ("1 +", 1, 4, "ends too early"),
    ("a = = b", 1, 5, "unexpected '='"),
    ('"abc', 1, 1, "no closing"),
    ("amount >\n  > 5", 2, 3, "unexpected '>'"),
    ("1 2", 1, 3, "unexpected '2'"),
    ("1 < 2 = TRUE", 1, 7, "unexpected '='"),
    ("IF(a, b", 1, 8, "ends too early"),
    ("a # b", 1, 3, "unexpected character '#'"),
    ("$account.name", 1, 1, "only $user"),
    ("'a\\q'", 1, 3, "unknown escape"),
    ("", 1, 1, "empty"),
])
def test_syntax_errors_name_their_position(expression, line, column, fragment):
    exc = error_of(expression, {"a": 1, "b": 2, "amount": 1})
    assert exc.kind == "syntax" and isinstance(exc, rules.RuleSyntaxError)
    assert (exc.line, exc.column) == (line, column), str(exc)
    assert fragment in exc.message
    assert exc.pointer().endswith("^")


# -- types --------------------------------------------------------------------------------------------------
RECORD = {"amount": D("1500.00"), "name": "Acme", "due": date(2026, 3, 10), "flag": True, "tags": ["a", "b"],
          "stage": "won", "at": datetime(2026, 3, 1, 8, tzinfo=timezone.utc)}
FIELDS = {"stage": "picklist", "amount": "currency", "tags": "multipicklist"}


@pytest.mark.parametrize("expression, column, fragment", [
    ('1 = "1"', 3, "cannot compare a number with text"),
    ("amount + name", 8, "needs numbers, not text (use & to join text)"),
    ("amount & 'x'", 1, "& joins text"),
    ("stage & 'x'", 1, "& joins text, but this side is a picklist"),
    ("IF(amount, 1, 2)", 4, "the condition of IF must be TRUE or FALSE, not a currency amount"),
    ("amount AND flag", 1, "must be TRUE or FALSE"),
    ("NOT amount", 5, "must be TRUE or FALSE"),
    ("IF(flag, 1, 'x')", 13, "must all be of one type"),
    ("LEN(amount)", 5, "argument 1 of LEN must be text, not a currency amount"),
    ("LEN(stage)", 5, "use TEXT() for a picklist"),
    ("LEFT(name)", 1, "LEFT takes 2 arguments, got 1"),
    ("FIND('a')", 1, "FIND takes 2 to 3 arguments"),
    ("MIN()", 1, "at least 1"),
    ("CASE(stage, 'won', 1)", 1, "CASE takes a value, then value/result pairs"),
    ("NOSUCH(1)", 1, "unknown function NOSUCH"),
    ("ROUDN(1, 1)", 1, "did you mean ROUND?"),
    ("due + due", 5, "a date + a date is not allowed"),
    ("due - at", 5, "a date and a date/time cannot be mixed"),
    ("due > 5", 5, "cannot compare a date with a number"),
    ("flag > FALSE", 1, "can only be compared with = and <>"),
    ("stage > 'a'", 1, "a picklist can only be compared with = and <>"),
    ("tags = 'a'", 1, "use INCLUDES()"),
    ("INCLUDES(stage, 'a')", 10, "must be a multi-select picklist"),
    ("ISPICKVAL(name, 'a')", 11, "must be a picklist"),
    ("-name", 1, "unary - needs a number"),
    ("1 IN ('a')", 3, "cannot compare a number with text"),
    ("MIN(1, due)", 1, "one kind"),
    ("PRIORVALUE(1)", 12, "takes a field of the record itself"),
    ("ISCHANGED(account.name)", 11, "takes a field of the record itself"),
    ("REGEX(name, '[a-')", 13, "not a valid regular expression"),
])
def test_type_errors_name_their_position(expression, column, fragment):
    exc = error_of(expression, RECORD, fields=FIELDS)
    assert exc.kind in ("type", "runtime"), exc
    assert fragment in exc.message, exc.message
    assert exc.column == column, str(exc)


def test_unknown_fields_point_at_the_segment_and_suggest():
    exc = error_of("amount > 0 AND acount.name = 'x'", {"amount": 1, "account": {"name": "A"}})
    assert exc.kind == "unknown_field" and isinstance(exc, rules.UnknownFieldError)
    assert exc.column == 16
    exc = error_of("account.nmae = 'x'", {"account": {"name": "A"}})
    assert exc.kind == "unknown_field" and exc.column == 9


def test_unknown_fields_in_a_model_and_paths_through_non_lookups(crm):
    with pytest.raises(rules.UnknownFieldError) as info:
        rules.compile("amount > 0 AND acount.name = 'x'", "opportunity", crm.model)
    assert info.value.column == 16 and "did you mean 'account'" in info.value.message
    with pytest.raises(rules.UnknownFieldError) as info:
        rules.compile("name.first = 'x'", "opportunity", crm.model)
    assert "opportunity.name is not a lookup" in info.value.message and info.value.column == 6
    with pytest.raises(rules.UnknownFieldError) as info:
        rules.compile("account.owner.nope", "opportunity", crm.model)
    assert "user (reached through account.owner) has no field 'nope'" in info.value.message
    assert info.value.column == 15


def test_picklist_constants_must_be_options(crm):
    with pytest.raises(rules.RuleTypeError) as info:
        rules.compile("stage = 'wonn'", "opportunity", crm.model)
    assert "'wonn' is not an option of stage" in info.value.message and info.value.column == 9
    for bad in ("ISPICKVAL(stage, 'x')", "stage IN ('won', 'x')", "CASE(stage, 'x', 1, 0)", "'x' <> stage"):
        with pytest.raises(rules.RuleTypeError, match="is not an option"):
            rules.compile(bad, "opportunity", crm.model)
    assert rules.compile("stage = ''", "opportunity", crm.model).type == "boolean"


# -- blanks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("expression, expected", [
    ("amount + 1", None), ("amount * 0", None), ("-amount", None), ("amount / 2", None), ("amount ^ 2", None),
    ("amount > 1", False), ("amount < 1", False), ("NOT(amount > 1)", True), ("amount = NULL", True),
    ("amount = 0", False), ("amount <> 0", True), ("amount = other", True), ("amount IN (1, NULL)", True),
    ("name & 'x'", "x"), ("name = ''", True), ("LEN(name)", D(0)), ("name < 'a'", True), ("ISBLANK(name)", True),
    ("ISBLANK(amount)", True), ("ISBLANK(due)", True), ("ISNULL(amount)", True), ("ISNULL(name)", False),
    ("BLANKVALUE(amount, 5)", D(5)), ("BLANKVALUE(name, 'n/a')", "n/a"), ("NULLVALUE(amount, 5)", D(5)),
    ("NULLVALUE(name, 'n/a')", ""), ("due + 1", None), ("due > TODAY()", False), ("flag", False),
    ("flag = FALSE", True), ("ISBLANK(flag)", False), ("TEXT(amount)", ""), ("LEFT('abc', amount)", ""),
    ("ROUND(amount, 2)", None), ("MAX(amount, 1)", None), ("YEAR(due)", None), ("ISBLANK(tags)", True),
    ("INCLUDES(tags, 'a')", False), ("ISPICKVAL(stage, '')", True), ("stage = ''", True),
    ("IF(ISBLANK(amount), 0, amount)", D(0)), ("CASE(amount, NULL, 'blank', 'other')", "blank"),
])
def test_blank_fields_are_blanks(expression, expected):
    record = {"amount": None, "other": None, "name": None, "due": None, "flag": None, "tags": None, "stage": None}
    fields = {"amount": "currency", "other": "number", "name": "text", "due": "date", "flag": "boolean",
              "tags": "multipicklist", "stage": "picklist"}
    assert evaluate(expression, record, fields=fields, now=NOW) == expected


def test_blank_as_zero():
    fields = {"amount": "currency", "qty": "integer"}
    record = {"amount": None, "qty": None}
    assert evaluate("amount + qty + 1", record, fields=fields, blank_as_zero=True) == D(1)
    assert evaluate("ISBLANK(amount)", record, fields=fields, blank_as_zero=True) is False
    assert evaluate("amount + 1", record, fields=fields) is None
    assert evaluate("amount > -1", record, fields=fields, blank_as_zero=True) is True


def test_missing_fields_are_errors_unless_declared():
    assert error_of("amount > 1").kind == "unknown_field"
    assert evaluate("ISBLANK(amount)", {}, fields={"amount": "number"}) is True
    assert evaluate("account.name & '!'", {}, fields={"account.name": "text"}) == "!"


# -- every function ----------------------------------------------------------------------------------------------
FUNCTION_CASES = [
    # logical
    ("IF(1 > 2, 'a', 'b')", "b"), ("IF(TRUE, 1, NULL)", D(1)), ("IF(FALSE, 1, NULL)", None),
    ("CASE(2, 1, 'one', 2, 'two', 'many')", "two"), ("CASE('x', 'a', 1, 2)", D(2)),
    ("AND(TRUE, 1 < 2, 'a' = 'a')", True), ("AND(TRUE)", True), ("OR(FALSE, FALSE, TRUE)", True),
    ("NOT(TRUE)", False), ("ISBLANK('')", True), ("ISBLANK(' ')", False), ("ISBLANK(0)", False),
    ("ISNULL(NULL)", True), ("BLANKVALUE('', 'x')", "x"), ("BLANKVALUE(3, 4)", D(3)), ("NULLVALUE(NULL, 2)", D(2)),
    # text
    ("LEN('Acme')", D(4)), ("LEN('')", D(0)), ("LEFT('Acme Inc', 4)", "Acme"), ("LEFT('Acme', 10)", "Acme"),
    ("LEFT('Acme', 0)", ""), ("LEFT('Acme', -1)", ""), ("LEFT('Acme', 2.9)", "Ac"), ("RIGHT('Acme Inc', 3)", "Inc"),
    ("RIGHT('Acme', 10)", "Acme"), ("RIGHT('Acme', 0)", ""), ("MID('Acme Inc', 6, 3)", "Inc"),
    ("MID('Acme', 0, 2)", "Ac"), ("MID('Acme', 3, 10)", "me"), ("MID('Acme', 2, -1)", ""),
    ("UPPER('acme é')", "ACME É"), ("LOWER('ACME')", "acme"), ("TRIM('  a b \t')", "a b"), ("TRIM('')", ""),
    ("CONTAINS('Acme', 'cm')", True), ("CONTAINS('Acme', 'CM')", False), ("CONTAINS('Acme', '')", True),
    ("BEGINS('Acme', 'Ac')", True), ("BEGINS('Acme', 'ac')", False), ("BEGINS('Acme', '')", True),
    ("FIND('c', 'Acme')", D(2)), ("FIND('x', 'Acme')", D(0)), ("FIND('', 'Acme')", D(0)),
    ("FIND('a', 'banana', 3)", D(4)), ("FIND('a', 'banana', 0)", D(2)), ("FIND('a', 'banana', 99)", D(0)),
    ("SUBSTITUTE('a-b-c', '-', '/')", "a/b/c"), ("SUBSTITUTE('abc', '', 'x')", "abc"),
    ("SUBSTITUTE('aaa', 'a', '')", ""), ("TEXT(1.50)", "1.5"), ("TEXT(100)", "100"), ("TEXT(-0.250)", "-0.25"),
    ("TEXT(0.00)", "0"), ("TEXT(DATE(2026, 3, 1))", "2026-03-01"),
    ("TEXT(DATETIMEVALUE('2026-03-01 17:00:00'))", "2026-03-01 17:00:00Z"), ("TEXT(TRUE)", "true"),
    ("TEXT('x')", "x"), ("VALUE('12.5')", D("12.5")), ("VALUE(' -3 ')", D(-3)), ("VALUE('1e3')", D(1000)),
    ("VALUE('')", None), ("LPAD('42', 5, '0')", "00042"), ("LPAD('my_company.com', 14, 'z')", "my_company.com"),
    ("LPAD('my_company.com', 15, 'z')", "zmy_company.com"), ("LPAD('mycompany.com', 2)", "my"),
    ("LPAD('ab', 5)", "   ab"), ("LPAD('ab', 6, 'xyz')", "xyzxab"), ("LPAD('ab', 5, '')", "ab"),
    ("LPAD('ab', -1)", ""), ("RPAD('ab', 5, 'xy')", "abxyx"), ("RPAD('abc', 2)", "ab"), ("RPAD('a', 3)", "a  "),
    ("REGEX('123-4567', '[0-9]{3}-[0-9]{4}')", True), ("REGEX('x123-4567', '[0-9]{3}-[0-9]{4}')", False),
    ("REGEX('123-45678', '[0-9]{3}-[0-9]{4}')", False), ("REGEX('', '.*')", True),
    ("ISNUMBER('1.5')", True), ("ISNUMBER('-2')", True), ("ISNUMBER('1.5a')", False), ("ISNUMBER('')", False),
    ("ISNUMBER(' 7 ')", True),
    # math
    ("ABS(-3.5)", D("3.5")), ("ABS(2)", D(2)), ("ROUND(1.5, 0)", D(2)), ("ROUND(1.2345, 0)", D(1)),
    ("ROUND(-1.5, 0)", D(-2)), ("ROUND(225.49823, 2)", D("225.50")), ("ROUND(1234.5, -2)", D(1200)),
    ("ROUND(-2.5, 0)", D(-3)), ("ROUND(2.345, 2)", D("2.35")), ("FLOOR(2.5)", D(2)), ("FLOOR(-2.5)", D(-2)),
    ("FLOOR(3)", D(3)), ("CEILING(2.5)", D(3)), ("CEILING(-2.5)", D(-3)), ("CEILING(-2)", D(-2)),
    ("CEILING(0.001)", D(1)), ("MIN(3, 1, 2)", D(1)), ("MAX(3, 1, 2)", D(3)), ("MIN(5)", D(5)),
    ("MAX(DATE(2026, 1, 1), DATE(2025, 1, 1))", date(2026, 1, 1)), ("MOD(7, 3)", D(1)), ("MOD(-7, 2)", D(-1)),
    ("MOD(7, -2)", D(1)), ("MOD(5.5, 2)", D("1.5")), ("SQRT(16)", D(4)), ("SQRT(2)", D("1.41421356")),
    ("EXP(1)", D("2.71828183")), ("EXP(0)", D(1)), ("LN(EXP(2))", D(2)), ("LN(1)", D(0)), ("LOG(1000)", D(3)),
    ("LOG(2)", D("0.30103000")), ("10 / 4", D("2.5")), ("1 / 3", D("0.33333333")), ("2 / 3", D("0.66666667")),
    ("-2 / 3", D("-0.66666667")), ("0.1 + 0.2", D("0.3")), ("0.1 * 3 = 0.3", True), ("2 ^ 10", D(1024)),
    ("1.1 ^ 2", D("1.21")), ("4 ^ 0.5", D(2)), ("0 ^ 0", D(1)),
    # date
    ("TODAY()", date(2026, 3, 1)), ("NOW()", NOW), ("DATE(2024, 2, 29)", date(2024, 2, 29)),
    ("DATEVALUE('2026-03-01')", date(2026, 3, 1)), ("DATEVALUE('2026-03-01 23:30:00')", date(2026, 3, 1)),
    ("DATEVALUE(DATETIMEVALUE('2026-03-01 23:30:00'))", date(2026, 3, 1)), ("DATEVALUE('')", None),
    ("DATETIMEVALUE('2026-03-01 10:00:00')", datetime(2026, 3, 1, 10, tzinfo=timezone.utc)),
    ("DATETIMEVALUE('2026-03-01T10:00:00+02:00')", datetime(2026, 3, 1, 8, tzinfo=timezone.utc)),
    ("DATETIMEVALUE(DATE(2026, 3, 1))", datetime(2026, 3, 1, tzinfo=timezone.utc)),
    ("YEAR(DATE(2024, 2, 29))", D(2024)), ("MONTH(DATE(2024, 2, 29))", D(2)), ("DAY(DATE(2024, 2, 29))", D(29)),
    ("WEEKDAY(DATE(2026, 3, 1))", D(1)), ("WEEKDAY(DATE(2026, 3, 7))", D(7)), ("WEEKDAY(DATE(2026, 3, 2))", D(2)),
    ("ADDMONTHS(DATE(2024, 1, 31), 1)", date(2024, 2, 29)), ("ADDMONTHS(DATE(2023, 2, 28), 1)", date(2023, 3, 31)),
    ("ADDMONTHS(DATE(2024, 3, 15), -2)", date(2024, 1, 15)), ("ADDMONTHS(DATE(2024, 2, 29), 12)", date(2025, 2, 28)),
    ("ADDMONTHS(DATE(2024, 1, 30), 1)", date(2024, 2, 29)), ("ADDMONTHS(DATE(2024, 4, 30), 1)", date(2024, 5, 31)),
    ("ADDMONTHS(DATE(2024, 12, 15), 1)", date(2025, 1, 15)), ("ADDMONTHS(DATE(2024, 1, 15), 1.9)", date(2024, 2, 15)),
    ("DATE(2026, 3, 1) + 1", date(2026, 3, 2)), ("1 + DATE(2026, 3, 1)", date(2026, 3, 2)),
    ("DATE(2026, 3, 1) - 1", date(2026, 2, 28)), ("DATE(2026, 3, 1) + 1.9", date(2026, 3, 2)),
    ("DATE(2026, 3, 1) - 1.9", date(2026, 2, 28)), ("DATE(2026, 3, 1) - DATE(2026, 2, 1)", D(28)),
    ("DATETIMEVALUE('2026-03-01 10:00:00') + 0.5", datetime(2026, 3, 1, 22, tzinfo=timezone.utc)),
    ("DATETIMEVALUE('2026-03-01 10:00:00') - 1", datetime(2026, 2, 28, 10, tzinfo=timezone.utc)),
    ("DATETIMEVALUE('2026-03-02 10:00:00') - DATETIMEVALUE('2026-03-01 04:00:00')", D("1.25")),
    ("NOW() - DATETIMEVALUE('2026-03-01 09:00:00')", D("0.02083333")),
    # picklists
    ("ISPICKVAL(stage, 'won')", True), ("ISPICKVAL(stage, 'lost')", False), ("stage = 'won'", True),
    ("stage IN ('lost', 'won')", True), ("TEXT(stage)", "won"), ("CASE(stage, 'won', 1, 0)", D(1)),
    ("INCLUDES(tags, 'a')", True), ("INCLUDES(tags, 'c')", False), ("ISPICKVAL(PRIORVALUE(stage), 'won')", True),
]


@pytest.mark.parametrize("expression, expected", FUNCTION_CASES)
def test_functions(expression, expected):
    result = evaluate(expression, {"stage": "won", "tags": ["a", "b"]}, fields={"stage": "picklist"}, now=NOW)
    assert result == expected and type(result) is type(expected), result


def test_every_builtin_function_has_a_case():
    tested = {name for name in rules.default_registry().names()
              if any(name + "(" in e.upper() for e, _ in FUNCTION_CASES)}
    assert set(rules.default_registry().names()) - tested <= {"ISNEW", "ISCHANGED", "PRIORVALUE"}


@pytest.mark.parametrize("expression, fragment, column", [
    ("1 / x", "division by zero", 3), ("MOD(5, x)", "MOD by zero", 1), ("SQRT(-1)", "negative", 1),
    ("LN(0)", "not positive", 1), ("LOG(-5)", "not positive", 1), ("VALUE('abc')", "not a number", 1),
    ("DATE(2023, 2, 29)", "not a valid date", 1), ("DATEVALUE('2026-13-01')", "not a date", 1),
    ("DATETIMEVALUE('soon')", "not a date and time", 1), ("REGEX('a', pattern)", "not a valid regular", 1),
    ("x ^ -1", "division by zero", 3), ("(-8) ^ 0.5", "fractional power", 6),
    ("IF(TRUE, 1, 2) + 10 / x", "division by zero", 21), ("DATE(9999, 12, 31) + 1", "out of range", 20),
    ("ADDMONTHS(DATE(9999, 12, 1), 1)", "out of range", 1), ("EXP(1000000)", "too large", 1),
])
def test_runtime_errors(expression, fragment, column):
    exc = error_of(expression, {"x": 0, "pattern": "[a-"})
    assert exc.kind == "runtime" and isinstance(exc, rules.RuleRuntimeError)
    assert fragment in exc.message, exc.message
    assert exc.column == column, str(exc)


def test_a_value_of_the_wrong_type_in_the_record_is_a_runtime_error_not_a_crash():
    compiled = rules.compile_with("LEN(name)", rules.DictSchema({"name": "x"}))
    with pytest.raises(rules.RuleRuntimeError, match="TypeError"):
        compiled.evaluate({"name": 5})


# -- context: user, prior, is_new, now, related records ---------------------------------------------------------------
def test_isnew_ischanged_priorvalue():
    record, prior = {"stage": "won", "amount": D(5), "owner": 2}, {"stage": "lost", "amount": D(5), "owner": 1}
    assert evaluate("ISCHANGED(stage)", record, prior=prior) is True
    assert evaluate("ISCHANGED(amount)", record, prior=prior) is False
    assert evaluate("ISCHANGED(stage)", record, is_new=True, prior=prior) is False
    assert evaluate("ISCHANGED(stage)", record) is False  # no prior record given
    assert evaluate("PRIORVALUE(stage)", record, prior=prior) == "lost"
    assert evaluate("PRIORVALUE(stage)", record, is_new=True) == "won"  # on create: the current value
    assert evaluate("ISNEW()", record, is_new=True) is True and evaluate("ISNEW()", record) is False
    assert evaluate("ISCHANGED(t)", {"t": ""}, prior={"t": None}, fields={"t": "text"}) is False
    assert evaluate("ISCHANGED(n)", {"n": None}, prior={"n": D(0)}, fields={"n": "number"}) is True
    assert evaluate("ISCHANGED(owner_id)", {"owner_id": {"id": 2}}, prior={"owner_id": 2}) is False
    assert evaluate("PRIORVALUE(amount) > amount", {"amount": D(5)}, prior={"amount": D(9)}) is True


def test_user_today_and_now():
    user = {"id": 7, "role": "sales", "email": "ann@example.com"}
    assert evaluate("owner_id = $user.id AND $user.role = 'sales'", {"owner_id": 7}, user=user) is True
    assert evaluate("$User.email & ''", {}, user=user) == "ann@example.com"
    assert evaluate("ISBLANK($user.team)", {}, user=user) is True
    assert evaluate("$user.id", {}) is None  # no user: blank
    assert evaluate("TODAY() + 1", now=date(2026, 1, 31)) == date(2026, 2, 1)
    assert evaluate("NOW()", now=datetime(2026, 1, 31, 12)) == datetime(2026, 1, 31, 12, tzinfo=timezone.utc)
    tz = timezone(timedelta(hours=9))
    assert evaluate("TODAY()", now=datetime(2026, 2, 1, 3, tzinfo=tz)) == date(2026, 1, 31)  # TODAY() is in UTC
    assert abs(evaluate("NOW()") - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_related_records_are_nested_dicts():
    record = {"account": {"id": 3, "name": "Acme", "owner": {"email": "ann@example.com"}}}
    assert evaluate("account.name & ' / ' & account.owner.email", record) == "Acme / ann@example.com"
    assert evaluate("account.owner_id.email", record) == "ann@example.com"  # owner and owner_id are one
    assert evaluate("account = 3", record) is True  # a nested record stands for its id
    assert evaluate("account.name", {"account": None}, fields={"account.name": "text"}) == ""
    assert evaluate("account.name", {}, related={"account": {"name": "Beta"}}) == "Beta"
    with pytest.raises(rules.RuleRuntimeError, match="needs the related account record"):
        rules.compile_with("account.name", rules.DictSchema({}, {"account.name": "text"})).evaluate({"account": 3})


# -- compile against a model -------------------------------------------------------------------------------------
def test_compile_against_the_base_crm(crm):
    model = crm.model
    compiled = rules.compile("amount * probability / 100", "opportunity", model)
    assert compiled.type == "currency" and compiled.fields == {"amount", "probability"}
    assert compiled.evaluate({"amount": D("1000.00"), "probability": D("25.00")}) == D("250.00")
    assert rules.compile("stage = 'won' AND amount > 0", "opportunity", model).type == "boolean"
    assert rules.compile("close_date + 3", "opportunity", model).type == "date"
    assert rules.compile("TEXT(stage)", "opportunity", model).type == "text"
    assert rules.compile("account", "opportunity", model).type == "id"
    owner = rules.compile("owner.email & account.owner.name & owner_id.role", "opportunity", model)
    assert owner.fields == {"owner_id.email", "account.owner_id.name", "owner_id.role"}
    assert owner.uses == {"related"}
    assert rules.compile("ISCHANGED(stage) AND $user.role = 'sales' AND TODAY() > close_date", "opportunity",
                         model).uses == {"prior", "user", "now"}
    assert rules.compile("created_at < NOW() AND version > 0 AND id > 0", "opportunity", model).type == "boolean"


def test_compiled_expressions_are_cached_per_model_entity_and_text(crm, monkeypatch):
    from engine.rules import compiler

    calls = []
    real_parse = compiler.parse
    monkeypatch.setattr(compiler, "parse", lambda text: calls.append(text) or real_parse(text))
    first = rules.compile("amount > 12345 AND stage = 'won'", "opportunity", crm.model)
    again = rules.compile("amount > 12345 AND stage = 'won'", "opportunity", crm.model)
    assert first is again and len(calls) == 1
    other = rules.compile("amount > 12345 AND stage = 'won'", "opportunity", crm.model, blank_as_zero=True)
    assert other is not first
    for _ in range(1000):  # nothing is parsed per record
        first.evaluate({"amount": D(20000), "stage": "won"})
    assert len(calls) == 2


def test_evaluate_infers_types_per_call():
    assert evaluate("x & ''", {"x": "1"}) == "1"
    assert evaluate("x + 1", {"x": 1}) == D(2)
    assert evaluate("x + 1", {"x": 1.5}) == D("2.5")  # floats become the decimal they print as
    assert evaluate("x", {"x": "2026-01-31"}, fields={"x": "date"}) == date(2026, 1, 31)
    assert evaluate("x * 2", {"x": "1.25"}, fields={"x": "currency"}) == D("2.50")
    assert evaluate("INCLUDES(x, 'b')", {"x": "a;b"}, fields={"x": "multipicklist"}) is True
    with pytest.raises(rules.RuleTypeError, match="is not a date"):
        evaluate("x", {"x": "soon"}, fields={"x": "date"})
    with pytest.raises(rules.RuleError, match="unknown type"):
        evaluate("x", {"x": 1}, fields={"x": "money"})


def test_numbers_come_back_as_decimal_and_booleans_as_bool():
    assert type(evaluate("LEN('abc')")) is D
    assert type(evaluate("i + 1", {"i": 1}, fields={"i": "integer"})) is D
    assert evaluate("1 > 0") is True


def test_the_generated_python_is_compiled_once_not_evaluated_per_record():
    compiled = rules.compile_with("amount > 1000 AND status = 'qualified'",
                                  rules.DictSchema({"amount": D(1), "status": "x"}, {"status": "picklist"}))
    assert compiled.evaluate.__code__.co_filename.startswith("<formula")
    assert "eval(" not in compiled.python_source
    assert compiled.evaluate({"amount": D(1001), "status": "qualified"}) is True


# -- metadata checks ---------------------------------------------------------------------------------------------------
def test_check_entity_rules_reports_every_bad_expression(make_runtime, config_root):
    (config_root / "base" / "deal.yaml").write_text(textwrap.dedent("""
        entity: deal
        title: name
        fields:
          name: {type: text}
          amount: {type: currency}
          stage: {type: picklist, options: [open, won, lost]}
          reason: {type: text}
        validations:
          - {name: positive, error_when: "amount < 0", message: "no"}
          - {name: broken, error_when: "amount <", message: "no"}
          - {name: typed, error_when: "amount & 'x' = 'y'", message: "no"}
          - {name: not_boolean, error_when: "amount + 1", message: "no"}
          - {name: unknown, error_when: "stage = 'won' AND amont > 0", message: "no"}
    """).lstrip(), encoding="utf-8")
    from engine.metadata import MetadataError

    with pytest.raises(MetadataError) as info:   # the loader runs check_entity_rules: the model does not load
        make_runtime(config_root=config_root, migrate=False)
    found = {(p.location.path, p.location.line) for p in info.value.problems}
    assert found == {("validations/1/error_when", 10), ("validations/2/error_when", 11),
                     ("validations/3/error_when", 12), ("validations/4/error_when", 13)}
    text = str(info.value)
    assert "syntax error" in text and "deal.validations.3.error_when: type error" in text
    unknown = next(p for p in info.value.problems if "amont" in p.message)
    assert "unknown field error at column 19" in unknown.message


def test_the_base_crm_has_no_bad_expressions(crm):
    assert rules.check_entity_rules(crm.model) == []


# -- plugins -----------------------------------------------------------------------------------------------------------
class ReversePlugin:
    """A plugin adding REVERSE(text) (Python only) and DOUBLE(number) (Python and SQL)."""

    @hookimpl
    def crm_formula_functions(self):
        import sqlalchemy as sa

        def double_sql(sc, args):
            return sc.num.mul(args[0], sc.constant(D(2), "number"), args[0].type)

        return [rules.Function("REVERSE", ("text",), "text", lambda s: s[::-1], doc="Reversed text."),
                rules.Function("double", ("number",), lambda types: types[0], lambda x: x * 2, double_sql),
                rules.Function("SHOUT", ("text",), "text", str.upper, lambda sc, a: sa.func.upper(a[0].expr))]


def test_plugins_add_formula_functions_through_the_hook(crm):
    pm = make_plugin_manager(entry_point_plugins=False, extra=(ReversePlugin(),))
    registry = rules.registry_from_plugins(pm)
    assert {"REVERSE", "DOUBLE", "IF", "ROUND"} <= set(registry.names())
    assert evaluate("reverse('abc') & TEXT(DOUBLE(2.5))", registry=registry) == "cba5"
    compiled = rules.compile("DOUBLE(amount) > 10 AND SHOUT(name) = 'DEAL'", "opportunity", crm.model,
                             registry=registry)
    assert compiled.sql_capable
    assert compiled.evaluate({"amount": D(6), "name": "deal"}) is True
    assert not rules.compile("REVERSE(name) = 'x'", "opportunity", crm.model, registry=registry).sql_capable
    with pytest.raises(rules.RuleTypeError, match="unknown function REVERSE"):
        rules.compile("REVERSE(name) = 'x'", "opportunity", crm.model)  # not in the default registry


def test_plugin_functions_run_in_sql(crm):
    import sqlalchemy as sa

    pm = make_plugin_manager(entry_point_plugins=False, extra=(ReversePlugin(),))
    registry = rules.registry_from_plugins(pm)
    account = crm.records.create("account", {"name": "Acme"})
    crm.records.create("opportunity", {"name": "deal", "account": account["id"], "amount": "6",
                                       "close_date": "2099-01-01"})
    crm.records.create("opportunity", {"name": "other", "account": account["id"], "amount": "4",
                                       "close_date": "2099-01-01"})
    compiled = rules.compile("DOUBLE(amount) > 10 AND SHOUT(name) = 'DEAL'", "opportunity", crm.model,
                             registry=registry)
    scope = rules.Scope(crm.records.metadata, "opportunity", crm.model, dialect=crm.db.dialect)
    with crm.db.read() as conn:
        names = [r.name for r in conn.execute(sa.select(scope.table.c.name).where(compiled.where(scope)))]
    assert names == ["deal"]


def test_the_core_plugin_registers_the_builtins_and_names_are_unique():
    pm = make_plugin_manager(entry_point_plugins=False)
    [core] = [i for i in pm.hook.crm_formula_functions.get_hookimpls() if i.plugin_name == "core"]
    assert {f.name for f in core.function()} == set(rules.default_registry().names())

    class Twice:
        @hookimpl
        def crm_formula_functions(self):
            return [rules.Function("LEN", ("text",), "number", len)]

    with pytest.raises(ValueError, match="registered twice"):
        rules.registry_from_plugins(make_plugin_manager(entry_point_plugins=False, extra=(Twice(),)))
    with pytest.raises(ValueError, match="invalid function name"):
        rules.Function("no spaces", ("text",), "text", str)


# -- crm eval ----------------------------------------------------------------------------------------------------------
def test_crm_eval_prints_the_result_or_the_error(monkeypatch):
    from engine.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["eval", "amount * 2 + 1", "--record", '{"amount": 2.25}'])
    assert result.exit_code == 0 and result.output.strip() == "5.50"
    result = runner.invoke(main, ["eval", "ADDMONTHS(d, 1)", "--record", '{"d": "2024-01-31"}',
                                  "--fields", '{"d": "date"}'])
    assert result.output.strip() == "2024-02-29"
    result = runner.invoke(main, ["eval", "TODAY() - 1", "--now", "2026-03-01"])
    assert result.output.strip() == "2026-02-28"
    result = runner.invoke(main, ["eval", 'amount & "x"', "--record", '{"amount": 1}'])
    assert result.exit_code == 1
    assert "type error at line 1, column 1" in result.output and result.output.rstrip().endswith("^")
    result = runner.invoke(main, ["eval", "1 / x", "--record", '{"x": 0}'])
    assert result.exit_code == 1 and "runtime error" in result.output and "division by zero" in result.output
    result = runner.invoke(main, ["eval", "1 +"])
    assert result.exit_code == 1 and "syntax error" in result.output
    result = runner.invoke(main, ["eval", "1", "--record", "{oops"])
    assert result.exit_code == 1 and "invalid JSON" in result.output


def test_crm_eval_against_an_entity_of_the_model(monkeypatch):
    from engine.cli import main

    monkeypatch.setenv("CRM_PLUGIN_DIRS", "")
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "IF(stage = 'won', amount * probability / 100, 0)", "--entity",
                                  "opportunity", "--record", '{"stage": "won", "amount": "200", "probability": 50}'])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "100.00000000"  # a division: 8 decimal places
    result = runner.invoke(main, ["eval", "stage = 'wonn'", "--entity", "opportunity"])
    assert result.exit_code == 1 and "is not an option of stage" in result.output


def test_every_function_is_documented():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "formulas.md").read_text(encoding="utf-8")
    missing = [name for name in rules.default_registry().names() if f"`{name}(" not in text]
    assert missing == []


SAMPLE = {"number": "2", "text": "'a'", "boolean": "TRUE", "date": "DATE(2026, 1, 31)",
          "datetime": "DATETIMEVALUE('2026-01-31 10:00:00')", "picklist": "stage", "multipicklist": "tags"}
WRONG = {"number": "'a'", "text": "1", "boolean": "1", "date": "1", "datetime": "1", "picklist": "'won'",
         "multipicklist": "'a'"}


def _good(kind: str) -> str:
    return SAMPLE[kind.split("|")[0] if kind != "any" else "number"]


def _wrong(kind: str) -> str | None:
    if kind == "any":
        return None
    parts = kind.split("|")
    for candidate in ("'a'", "1", "TRUE", "DATE(2026, 1, 1)"):
        typ = {"'a'": "text", "1": "number", "TRUE": "boolean", "DATE(2026, 1, 1)": "date"}[candidate]
        if typ not in parts:
            return candidate
    return None


def _calls(spec, make):
    args = [_good(spec.kind_of(i)) for i in range(max(spec.minimum, 1) if spec.args else 0)]
    if spec.name == "ROUND":
        args = ["2.5", "0"]
    for i in range(len(args)):
        replacement = make(spec.kind_of(i))
        if replacement is not None:
            yield i, f"{spec.name}({', '.join(args[:i] + [replacement] + args[i + 1:])})"


ORDINARY = [f for f in rules.default_registry() if not f.special]


@pytest.mark.parametrize("spec", ORDINARY, ids=lambda f: f.name)
def test_every_function_refuses_an_argument_of_the_wrong_type(spec):
    for i, call in _calls(spec, _wrong):
        exc = error_of(call, {"stage": "won", "tags": ["a"]}, fields={"stage": "picklist"})
        assert exc.kind == "type" and f"argument {i + 1} of {spec.name}" in exc.message, (call, exc)


@pytest.mark.parametrize("spec", ORDINARY, ids=lambda f: f.name)
def test_every_function_gives_blank_for_a_blank_argument(spec):
    record = {"stage": "won", "tags": ["a"], "n": None, "d": None, "t": None, "dt": None}
    fields = {"stage": "picklist", "n": "number", "d": "date", "t": "text", "dt": "datetime"}
    blank_of = {"number": "n", "date": "d", "datetime": "dt", "text": "t", "any": "n"}
    checked = 0
    for i, call in _calls(spec, lambda kind: blank_of.get(kind.split("|")[0])):
        result = evaluate(call, record, fields=fields, now=NOW)
        kind = spec.kind_of(i).split("|")[0]
        rtype = rules.compile_with(call, rules.DictSchema(record, fields)).type
        if kind == "text":  # a blank text is "" and goes into the function like any text
            assert result is not None or rtype in ("number", "date", "datetime"), call
        elif rtype in ("text", "picklist"):
            assert result == "", call
        elif rtype == "boolean":
            assert result is False, call
        else:
            assert result is None, call
        checked += 1
    assert checked or not spec.args


@pytest.mark.parametrize("text", ["plain", "it's", 'say "hi"', "back\\slash", "line\nbreak\tand\rreturn",
                                  "'); DROP TABLE x; --", "", "中文 ü"])
def test_a_text_literal_reads_back_as_the_same_text(text):
    assert rules.evaluate(rules.text_literal(text), {}) == text
