"""The built-in field types: what users rely on for each of them.

* coercion of raw input (JSON, form, CSV text) into checked, normalised Python values, and the
  ``FieldValueError`` (stable ``code``, readable ``message``) for input a field cannot take;
* the JSON form, the JSON Schema and the CSV round trip;
* storage through the real database (SQLite or PostgreSQL, whichever ``DATABASE_URL`` selects);
* the checks each type makes on its metadata, reported with file and line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import jsonschema
import marshmallow as ma
import pytest
import sqlalchemy as sa

from engine.fields import FieldValueError, builtin_types
from engine.fields.relation import Ref
from engine.metadata import Label, Location, MetadataError
from engine.metadata.model import Field
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

TYPES = {t.name: t for t in builtin_types()}
BUILTIN = ("text", "textarea", "integer", "number", "currency", "percent", "boolean", "date", "datetime",
           "email", "phone", "url", "picklist", "multipicklist", "lookup", "user", "reference",
           "autonumber", "json")
UTC = timezone.utc
SYSTEM = Context(system=True)


def fld(type_name: str, **props) -> Field:
    """A field of ``type_name`` with ``props``, as the loader would build it."""
    return Field(name="f", type=TYPES[type_name], label=Label.of(None, "f"),
                 props=MappingProxyType({"type": type_name, **props}), origin=Location("test", "test.yaml", 1))


def coerce(type_name: str, value, **props):
    return TYPES[type_name].coerce(fld(type_name, **props), value)


def refused(type_name: str, value, **props) -> FieldValueError:
    with pytest.raises(FieldValueError) as info:
        coerce(type_name, value, **props)
    return info.value


def test_every_builtin_type_is_registered():
    assert set(BUILTIN) <= set(TYPES)


# -- coercion: good input is accepted and normalised ------------------------------------------------

GOOD = [
    # (type, props, raw input, expected value)
    ("text", {}, "Acme Ltd", "Acme Ltd"),
    ("text", {"max_length": 5}, "abcde", "abcde"),
    ("text", {"pattern": r"[A-Z]{3}"}, "ABC", "ABC"),
    ("textarea", {}, "line 1\nline 2", "line 1\nline 2"),
    ("textarea", {}, "x" * 10_000, "x" * 10_000),
    ("integer", {}, 42, 42),
    ("integer", {}, "42", 42),
    ("integer", {}, " -7 ", -7),
    ("integer", {}, "1,000", 1000),
    ("integer", {}, 3.0, 3),
    ("integer", {}, Decimal("5"), 5),
    ("integer", {"min": 0, "max": 10}, 10, 10),
    ("integer", {}, 2**63 - 1, 2**63 - 1),
    ("number", {}, "1.23456", Decimal("1.2346")),
    ("number", {}, "2.00005", Decimal("2.0001")),  # half-up, not banker's rounding
    ("number", {"precision": 10, "scale": 3}, 7, Decimal("7.000")),
    ("number", {"precision": 10, "scale": 0}, "2.5", Decimal("3")),
    ("number", {"precision": 5, "scale": 2}, "999.99", Decimal("999.99")),
    ("number", {}, "1e2", Decimal("100.0000")),
    ("currency", {}, 0.1, Decimal("0.10")),
    ("currency", {}, "0.125", Decimal("0.13")),
    ("currency", {}, "-0.125", Decimal("-0.13")),
    ("currency", {}, 2.675, Decimal("2.68")),  # the float's binary expansion is 2.67499999...
    ("currency", {}, "1,234.5", Decimal("1234.50")),
    ("currency", {}, Decimal("19.999"), Decimal("20.00")),
    ("currency", {"min": 0}, "0", Decimal("0.00")),
    ("percent", {}, "12.345", Decimal("12.35")),
    ("percent", {"min": 0, "max": 100}, 100, Decimal("100.00")),
    ("boolean", {}, True, True),
    ("boolean", {}, False, False),
    ("boolean", {}, 1, True),
    ("boolean", {}, 0, False),
    ("boolean", {}, " TRUE ", True),
    ("boolean", {}, "yes", True),
    ("boolean", {}, "Off", False),
    ("boolean", {}, "0", False),
    ("date", {}, "2026-01-31", date(2026, 1, 31)),
    ("date", {}, " 2024-02-29 ", date(2024, 2, 29)),
    ("date", {}, date(2026, 1, 31), date(2026, 1, 31)),
    ("date", {"min": "2026-01-01", "max": "2026-12-31"}, "2026-12-31", date(2026, 12, 31)),
    ("datetime", {}, "2026-01-31T09:00:00+08:00", datetime(2026, 1, 31, 1, 0, tzinfo=UTC)),
    ("datetime", {}, "2026-01-31T09:00:00Z", datetime(2026, 1, 31, 9, 0, tzinfo=UTC)),
    ("datetime", {}, "2026-01-31T23:30:00.250-05:00", datetime(2026, 2, 1, 4, 30, 0, 250000, tzinfo=UTC)),
    ("datetime", {}, datetime(2026, 1, 31, 9, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 1, 31, 7, tzinfo=UTC)),
    ("email", {}, " Foo.Bar@Example.COM ", "foo.bar@example.com"),
    ("email", {}, "a+tag@sub.example.org", "a+tag@sub.example.org"),
    ("phone", {}, " +1 (555) 123-4567 ext. 89 ", "+1 (555) 123-4567 ext. 89"),
    ("phone", {}, "020 7946 0958", "020 7946 0958"),
    ("url", {}, " https://example.com/a?b=c#d ", "https://example.com/a?b=c#d"),
    ("url", {}, "HTTP://EXAMPLE.COM", "HTTP://EXAMPLE.COM"),
    ("picklist", {"options": ["new", "won", "lost"]}, "won", "won"),
    ("picklist", {"options": [{"value": "a", "label": "Alpha"}, "b"]}, "a", "a"),
    ("multipicklist", {"options": ["red", "green", "blue"]}, ["blue", "red"], ["red", "blue"]),
    ("multipicklist", {"options": ["red", "green", "blue"]}, "blue; red", ["red", "blue"]),
    ("multipicklist", {"options": ["red", "green", "blue"]}, ["red", "red"], ["red"]),
    ("multipicklist", {"options": ["red", "green", "blue"]}, ("green",), ["green"]),
    ("multipicklist", {"options": ["red", "green", "blue"]}, [], []),
    ("lookup", {"to": "account"}, 5, 5),
    ("lookup", {"to": "account"}, " 12 ", 12),
    ("lookup", {"to": "account"}, {"id": 7, "name": "Acme"}, 7),
    ("user", {}, 3, 3),
    ("user", {}, "3", 3),
    ("reference", {}, "account:5", Ref("account", 5)),
    ("reference", {}, {"entity": "account", "id": 5}, Ref("account", 5)),
    ("reference", {}, {"entity": "account", "id": "5"}, Ref("account", 5)),
    ("reference", {"to": ["account", "contact"]}, Ref("contact", 9), Ref("contact", 9)),
    ("autonumber", {"pattern": "Q-{YYYY}-{0000}"}, "Q-2026-0001", "Q-2026-0001"),
    ("json", {}, {"a": [1, 2.5, None, True], "b": {"c": "d"}}, {"a": [1, 2.5, None, True], "b": {"c": "d"}}),
    ("json", {}, [1, "two"], [1, "two"]),
    ("json", {}, "just text", "just text"),
]


@pytest.mark.parametrize("type_name, props, raw, expected", GOOD,
                         ids=[f"{g[0]}-{i}" for i, g in enumerate(GOOD)])
def test_coerce_accepts_and_normalises(type_name, props, raw, expected):
    value = coerce(type_name, raw, **props)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, Decimal):  # same digits after the point, not just an equal number
        assert value.as_tuple().exponent == expected.as_tuple().exponent
        assert str(value) == str(expected)
    if isinstance(expected, datetime):
        assert value.utcoffset() == timedelta(0)


def test_float_becomes_the_decimal_people_wrote_not_the_binary_expansion():
    assert str(coerce("currency", 0.1)) == "0.10"
    assert str(coerce("number", 0.1, precision=30, scale=18)) == "0.100000000000000000"
    assert coerce("currency", 0.1) + coerce("currency", 0.2) == Decimal("0.30")


def test_coerce_is_idempotent():
    for type_name, props, raw, _ in GOOD:
        once = coerce(type_name, raw, **props)
        assert coerce(type_name, once, **props) == once, type_name


# -- coercion: bad input is refused with a code and a message naming the problem ----------------------

BAD = [
    # (type, props, raw input, code, words the message must contain)
    ("text", {"max_length": 5}, "abcdef", "max_length", "5 characters"),
    ("text", {}, "x" * 256, "max_length", "255"),
    ("text", {}, 5, "type", "expected text"),
    ("text", {"pattern": r"[A-Z]{3}"}, "ABCD", "pattern", "[A-Z]{3}"),
    ("textarea", {"max_length": 10}, "x" * 11, "max_length", "10"),
    ("integer", {}, 1.5, "type", "whole number"),
    ("integer", {}, "1.5", "type", "whole number"),
    ("integer", {}, "ten", "type", "not a number"),
    ("integer", {}, True, "type", "boolean"),
    ("integer", {}, [1], "type", "list"),
    ("integer", {}, 2**63, "max", "64-bit"),
    ("integer", {}, "1e30", "max", "64-bit"),
    ("integer", {"min": 1}, 0, "min", "at least 1"),
    ("integer", {"max": 10}, 11, "max", "at most 10"),
    ("number", {"precision": 5, "scale": 2}, "1234.5", "max", "3 digits before the decimal point"),
    ("number", {"precision": 5, "scale": 2}, "999.995", "max", "3 digits"),  # rounds up to 1000.00
    ("number", {}, "NaN", "type", "finite"),
    ("number", {}, float("inf"), "type", "finite"),
    ("number", {}, "Infinity", "type", "finite"),
    ("number", {}, "12abc", "type", "not a number"),
    ("number", {}, "", "type", "not a number"),
    ("number", {}, False, "type", "boolean"),
    ("currency", {}, "1e16", "max", "16 digits"),
    ("currency", {}, "1e30", "max", "digits"),
    ("currency", {"min": 0}, "-0.01", "min", "at least 0"),
    ("currency", {"max": "99.99"}, "100", "max", "at most 99.99"),
    ("percent", {"min": 0, "max": 100}, 150, "max", "at most 100"),
    ("percent", {}, "100000", "max", "5 digits"),
    ("boolean", {}, "maybe", "type", "'maybe'"),
    ("boolean", {}, 2, "type", "true or false"),
    ("boolean", {}, 1.0, "type", "true or false"),
    ("date", {}, "2026-13-01", "format", "'2026-13-01' is not a date"),
    ("date", {}, "2026-02-30", "format", "not a date"),
    ("date", {}, "31/01/2026", "format", "YYYY-MM-DD"),
    ("date", {}, datetime(2026, 1, 31, 9, tzinfo=UTC), "type", "date and time"),
    ("date", {}, 20260131, "type", "int"),
    ("date", {"min": "2026-01-01"}, "2025-12-31", "min", "on or after 2026-01-01"),
    ("date", {"max": "2026-12-31"}, "2027-01-01", "max", "on or before 2026-12-31"),
    ("datetime", {}, "2026-01-31T09:00:00", "timezone", "timezone offset"),
    ("datetime", {}, "2026-01-31", "timezone", "timezone"),
    ("datetime", {}, datetime(2026, 1, 31, 9), "timezone", "timezone"),
    ("datetime", {}, "next tuesday", "format", "ISO 8601"),
    ("datetime", {}, date(2026, 1, 31), "type", "date"),
    ("datetime", {}, 1767225600, "type", "int"),
    ("email", {}, "foo", "format", "e-mail"),
    ("email", {}, "foo@bar", "format", "e-mail"),
    ("email", {}, "a b@example.com", "format", "e-mail"),
    ("email", {}, "a@@example.com", "format", "e-mail"),
    ("phone", {}, "call me", "format", "phone number"),
    ("phone", {}, "12", "format", "phone number"),
    ("phone", {}, "+1 555 CALL NOW", "format", "phone number"),
    ("url", {}, "mailto:ann@example.com", "format", "http(s) URL"),   # a bare example.com gets https:// (normalised)
    ("url", {}, "ftp://example.com/file", "format", "URL"),
    ("url", {}, "https://exa mple.com", "format", "URL"),
    ("url", {}, "javascript:alert(1)", "format", "URL"),
    ("picklist", {"options": ["new", "won"]}, "lost", "choice", "'lost' is not one of: new, won"),
    ("picklist", {"options": ["new", "won"]}, "Won", "choice", "new, won"),
    ("picklist", {"options": ["1", "2"]}, 1, "type", "int"),
    ("multipicklist", {"options": ["red", "green"]}, ["red", "purple"], "choice", "'purple' is not one of: red, green"),
    ("multipicklist", {"options": ["red", "green"]}, "red;purple", "choice", "purple"),
    ("multipicklist", {"options": ["red", "green"]}, 5, "type", "list"),
    ("lookup", {"to": "account"}, 0, "type", "positive integer"),
    ("lookup", {"to": "account"}, -3, "type", "positive integer"),
    ("lookup", {"to": "account"}, "abc", "type", "record id"),
    ("lookup", {"to": "account"}, 1.5, "type", "record id"),
    ("lookup", {"to": "account"}, True, "type", "record id"),
    ("user", {}, {"name": "no id"}, "type", "record id"),
    ("reference", {}, "account", "type", "entity:id"),
    ("reference", {}, 5, "type", "entity:id"),
    ("reference", {}, "account:0", "type", "positive integer"),
    ("reference", {}, "account:x", "type", "record id"),
    ("reference", {}, {"entity": "account"}, "type", "record id"),
    ("reference", {"to": ["account"]}, "contact:5", "choice", "only to: account"),
    ("autonumber", {"pattern": "{0000}"}, 5, "type", "text"),
    ("json", {}, {"a": {1, 2}}, "type", "not JSON"),
    ("json", {}, object(), "type", "not JSON"),
    ("json", {}, {"a": float("nan")}, "type", "not JSON"),
    ("json", {}, [float("inf")], "type", "not JSON"),
]


@pytest.mark.parametrize("type_name, props, raw, code, words", BAD,
                         ids=[f"{b[0]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_coerce_refuses_bad_input(type_name, props, raw, code, words):
    error = refused(type_name, raw, **props)
    assert error.code == code
    assert words in error.message
    assert str(error) == error.message


def test_huge_exponent_is_refused_quickly_not_computed():
    # int(Decimal("1e999999999")) would build a billion-digit integer and hang the worker; run it
    # in a child process so that a regression fails this test instead of hanging the suite.
    script = (
        "from types import MappingProxyType as M\n"
        "from engine.fields import builtin_types, FieldValueError\n"
        "from engine.metadata import Label, Location\n"
        "from engine.metadata.model import Field\n"
        "codes = []\n"
        "for t in builtin_types():\n"
        "    if t.name in ('integer', 'number', 'currency', 'percent'):\n"
        "        f = Field('f', t, Label.of(None, 'f'), M({'type': t.name}), Location('t', 't', 1))\n"
        "        for raw in ('1e999999999', '-1e999999999'):\n"
        "            try:\n"
        "                t.coerce(f, raw)\n"
        "            except FieldValueError as exc:\n"
        "                codes.append(exc.code)\n"
        "print(' '.join(codes))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["max"] * 8
    assert refused("integer", "1e-999999999").code == "type"  # 0.000...1 is not whole
    assert coerce("currency", "1e-999999999") == Decimal("0.00")


# -- JSON form, JSON Schema, CSV ------------------------------------------------------------------

SAMPLES = [
    # (type, props, value, JSON form)
    ("text", {}, "Acme; \"quoted\", comma", "Acme; \"quoted\", comma"),
    ("textarea", {}, "line 1\nline 2", "line 1\nline 2"),
    ("integer", {}, -42, -42),
    ("integer", {}, 2**63 - 1, 2**63 - 1),
    ("number", {}, Decimal("1234.5000"), "1234.5000"),
    ("number", {"precision": 18, "scale": 8}, Decimal("0.00000001"), "0.00000001"),
    ("number", {"precision": 18, "scale": 8}, Decimal("0E-8"), "0.00000000"),
    ("number", {"precision": 4, "scale": 4}, Decimal("0.5000"), "0.5000"),
    ("number", {"precision": 10, "scale": 0}, Decimal("12"), "12"),
    ("currency", {}, Decimal("0.10"), "0.10"),
    ("currency", {}, Decimal("-1234567.89"), "-1234567.89"),
    ("percent", {}, Decimal("12.50"), "12.50"),
    ("boolean", {}, True, True),
    ("boolean", {}, False, False),
    ("date", {}, date(2026, 1, 31), "2026-01-31"),
    ("datetime", {}, datetime(2026, 1, 31, 1, 2, 3, tzinfo=UTC), "2026-01-31T01:02:03+00:00"),
    ("datetime", {}, datetime(2026, 1, 31, 1, 2, 3, 456000, tzinfo=UTC), "2026-01-31T01:02:03.456000+00:00"),
    ("email", {}, "foo@example.com", "foo@example.com"),
    ("phone", {}, "+44 20 7946 0958", "+44 20 7946 0958"),
    ("url", {}, "https://example.com/a?b=c,d", "https://example.com/a?b=c,d"),
    ("picklist", {"options": ["new", "won"]}, "won", "won"),
    ("multipicklist", {"options": ["red", "green", "blue"]}, ["red", "blue"], ["red", "blue"]),
    ("multipicklist", {"options": ["red", "green", "blue"]}, ["green"], ["green"]),
    ("lookup", {"to": "account"}, 17, 17),
    ("user", {}, 3, 3),
    ("reference", {}, Ref("account", 5), {"entity": "account", "id": 5}),
    ("autonumber", {"pattern": "Q-{YYYY}-{0000}"}, "Q-2026-0042", "Q-2026-0042"),
    ("json", {}, {"a": [1, 2.5, None, True], "é": "ü"}, {"a": [1, 2.5, None, True], "é": "ü"}),
    ("json", {}, [1, "two"], [1, "two"]),
    ("json", {}, "text", "text"),
    ("json", {}, 3, 3),
]
SAMPLE_IDS = [f"{s[0]}-{i}" for i, s in enumerate(SAMPLES)]


def test_samples_cover_every_builtin_type():
    assert {s[0] for s in SAMPLES} == set(BUILTIN)


@pytest.mark.parametrize("type_name, props, value, json_form", SAMPLES, ids=SAMPLE_IDS)
def test_to_json(type_name, props, value, json_form):
    out = TYPES[type_name].to_json(fld(type_name, **props), value)
    assert out == json_form
    assert type(out) is type(json_form)


@pytest.mark.parametrize("type_name, props, value, json_form", SAMPLES, ids=SAMPLE_IDS)
def test_json_form_matches_the_json_schema_and_coerces_back(type_name, props, value, json_form):
    field = fld(type_name, **props)
    schema = field.type.json_schema(field)
    jsonschema.Draft202012Validator.check_schema(schema)
    for pattern in _patterns(schema):
        re.compile(pattern)
    jsonschema.validate(field.type.to_json(field, value), schema)
    assert field.type.coerce(field, json_form) == value


def _patterns(schema):
    if isinstance(schema, dict):
        if isinstance(schema.get("pattern"), str):
            yield schema["pattern"]
        for v in schema.values():
            yield from _patterns(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _patterns(v)


@pytest.mark.parametrize("type_name, props, value, json_form", SAMPLES, ids=SAMPLE_IDS)
def test_csv_round_trip(type_name, props, value, json_form):
    field = fld(type_name, **props)
    text = field.type.format_csv(field, value)
    assert isinstance(text, str)
    back = field.type.parse_csv(field, text)
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("type_name", BUILTIN)
def test_csv_empty_cell_is_none(type_name):
    props = {"options": ["a"]} if "picklist" in type_name else {"to": "account"} if type_name == "lookup" else {}
    field = fld(type_name, **props)
    assert field.type.format_csv(field, None) == ""
    assert field.type.parse_csv(field, "") is None


def test_csv_forms_people_read_and_write():
    assert TYPES["boolean"].format_csv(fld("boolean"), True) == "true"
    assert TYPES["boolean"].parse_csv(fld("boolean"), "Yes") is True
    assert TYPES["currency"].format_csv(fld("currency"), Decimal("1234.50")) == "1234.50"
    assert TYPES["currency"].parse_csv(fld("currency"), " 1,234.5 ") == Decimal("1234.50")
    colors = fld("multipicklist", options=["red", "green", "blue"])
    assert TYPES["multipicklist"].format_csv(colors, ["red", "blue"]) == "red;blue"
    assert TYPES["multipicklist"].parse_csv(colors, "blue;red") == ["red", "blue"]
    assert TYPES["reference"].format_csv(fld("reference"), Ref("account", 5)) == "account:5"
    assert TYPES["json"].format_csv(fld("json"), {"a": "ü"}) == '{"a": "ü"}'
    assert TYPES["date"].parse_csv(fld("date"), " 2026-01-31 ") == date(2026, 1, 31)
    with pytest.raises(FieldValueError) as info:
        TYPES["json"].parse_csv(fld("json"), "{not json")
    assert info.value.code == "format"
    with pytest.raises(FieldValueError):
        TYPES["json"].parse_csv(fld("json"), "NaN")  # json.loads takes it; JSON does not
    with pytest.raises(FieldValueError) as info:
        TYPES["integer"].parse_csv(fld("integer"), "1.5")
    assert info.value.code == "type"


def test_json_schema_shapes():
    def schema(type_name, **props):
        return TYPES[type_name].json_schema(fld(type_name, **props))

    cur = schema("currency")
    assert cur["type"] == "string" and cur["format"] == "decimal"
    assert re.fullmatch(cur["pattern"], "-1234.50") and re.fullmatch(cur["pattern"], "0.1")
    assert not re.fullmatch(cur["pattern"], "1.234") and not re.fullmatch(cur["pattern"], "1e3")
    assert schema("number", precision=10, scale=0)["pattern"] == r"^-?\d{1,10}$"
    assert schema("integer", min=0, max=10) == {"type": "integer", "minimum": 0, "maximum": 10}
    assert schema("integer", min="5")["minimum"] == 5  # min may be written as a string
    assert schema("text", max_length=40) == {"type": "string", "maxLength": 40}
    assert schema("email") == {"type": "string", "format": "email", "maxLength": 255}
    assert schema("url")["format"] == "uri"
    assert schema("boolean") == {"type": "boolean"}
    assert schema("date") == {"type": "string", "format": "date"}
    assert schema("datetime") == {"type": "string", "format": "date-time"}
    assert schema("picklist", options=["new", {"value": "won", "label": "Won"}]) == {"type": "string", "enum": ["new", "won"]}
    assert schema("multipicklist", options=["a", "b"]) == {
        "type": "array", "uniqueItems": True, "items": {"type": "string", "enum": ["a", "b"]}}
    assert schema("lookup", to="account")["type"] == "integer"
    assert schema("reference")["required"] == ["entity", "id"]
    assert schema("json") == {}


def test_marshmallow_field_delegates_to_the_type():
    amount = fld("currency", required=True, label="Amount")
    mf = amount.type.marshmallow_field(amount)
    assert mf.required and not mf.allow_none
    assert mf.deserialize("0.125") == Decimal("0.13")
    assert mf.serialize("x", {"x": Decimal("0.10")}) == "0.10"
    with pytest.raises(ma.ValidationError) as info:
        mf.deserialize("lots")
    assert "not a number" in str(info.value)
    optional = fld("date", default="2026-01-01")
    mf = optional.type.marshmallow_field(optional)
    assert not mf.required and mf.allow_none and mf.deserialize(None) is None


def test_signatures_and_widening():
    text, ta = TYPES["text"], TYPES["textarea"]
    s40, s80 = text.signature(fld("text", max_length=40)), text.signature(fld("text", max_length=80))
    assert s40 == ["string", 40]
    assert text.widens(s40, s80) and not text.widens(s80, s40)
    assert text.widens(s40, ta.signature(fld("textarea")))
    num = TYPES["number"]
    n10_2, n12_2, n12_3 = (num.signature(fld("number", precision=p, scale=s)) for p, s in ((10, 2), (12, 2), (12, 3)))
    assert n10_2 == ["decimal", 10, 2]
    assert num.widens(n10_2, n12_2) and not num.widens(n12_2, n10_2)
    assert not num.widens(n10_2, n12_3)  # a new scale rewrites every stored value
    assert TYPES["currency"].signature(fld("currency")) == ["decimal", 18, 2]
    assert TYPES["percent"].signature(fld("percent")) == ["decimal", 7, 2]
    pick = TYPES["picklist"]
    assert pick.widens(pick.signature(fld("picklist", options=["a"])), pick.signature(fld("picklist", options=["a" * 100])))
    assert TYPES["lookup"].signature(fld("lookup", to="account")) == ["ref", "account"]
    assert TYPES["integer"].widens(["integer"], ["integer"])
    assert not TYPES["integer"].widens(["integer"], ["string", 255])


def test_autonumber_format():
    field = fld("autonumber", pattern="Q-{YYYY}{MM}{DD}-{YY}-{0000}")
    assert field.type.format(field, 7, date(2026, 3, 4)) == "Q-20260304-26-0007"
    assert field.type.format(field, 123456, date(2026, 3, 4)) == "Q-20260304-26-123456"
    plain = fld("autonumber")
    assert plain.type.format(plain, 42, date(2026, 1, 1)) == "42"


# -- storage through the real database -------------------------------------------------------------

GADGET = """
    entity: gadget
    label: Gadget
    title: name
    fields:
      name:     {type: text, max_length: 40}
      notes:    {type: textarea}
      qty:      {type: integer, min: 0}
      weight:   {type: number, precision: 12, scale: 3}
      fine:     {type: number, precision: 18, scale: 8}
      amount:   {type: currency}
      discount: {type: percent}
      active:   {type: boolean}
      due:      {type: date}
      at:       {type: datetime}
      email:    {type: email}
      phone:    {type: phone}
      site:     {type: url}
      stage:    {type: picklist, options: [new, won, lost], default: new}
      tags:     {type: multipicklist, options: [red, green, blue]}
      parent:   {type: lookup, to: gadget}
      helper:   {type: user}
      about:    {type: reference, to: [gadget, user]}
      code:     {type: autonumber, pattern: "Q-{YYYY}-{0000}"}
      extra:    {type: json}
"""


@pytest.fixture
def gadgets(make_runtime, write_tree, config_root):
    assert write_tree(config_root.name, {"base/gadget.yaml": GADGET}) == config_root
    return make_runtime(config_root=config_root)


def test_currency_sums_exactly_in_sql(gadgets):
    gadgets.records.create("gadget", {"name": "a", "amount": 0.10}, context=SYSTEM)
    gadgets.records.create("gadget", {"name": "b", "amount": "0.20"}, context=SYSTEM)
    table = gadgets.records.table("gadget")
    with gadgets.db.read() as conn:
        total = conn.execute(sa.select(sa.func.sum(table.c.amount))).scalar_one()
        matched = conn.execute(sa.select(sa.func.count()).where(table.c.amount == Decimal("0.10"))).scalar_one()
    assert isinstance(total, Decimal)
    assert total == Decimal("0.30") and str(total) == "0.30"
    assert matched == 1
    assert [r["amount"] for r in gadgets.records.query("gadget", where={"amount": Decimal("0.20")})] == [Decimal("0.20")]


def test_sql_comparisons_with_decimals_mean_the_same_on_every_database(gadgets):
    for amount in ("0.10", "0.12", "0.13", "-0.13"):
        gadgets.records.create("gadget", {"amount": amount}, context=SYSTEM)
    table = gadgets.records.table("gadget")

    def amounts(condition):
        with gadgets.db.read() as conn:
            return sorted(conn.execute(sa.select(table.c.amount).where(condition)).scalars())

    # a float filter means the decimal it prints as, not its binary expansion
    assert [r["amount"] for r in gadgets.records.query("gadget", where={"amount": 0.1})] == [Decimal("0.10")]
    assert amounts(table.c.amount == 0.12) == [Decimal("0.12")]
    # a value finer than the column's scale is compared exactly, not rounded to the scale first
    assert amounts(table.c.amount == Decimal("0.125")) == []
    assert amounts(table.c.amount >= Decimal("0.125")) == [Decimal("0.13")]
    assert amounts(table.c.amount < Decimal("-0.125")) == [Decimal("-0.13")]
    assert amounts(table.c.amount.in_([0.1, Decimal("0.13")])) == [Decimal("0.10"), Decimal("0.13")]
    assert amounts(table.c.amount.between(0.1, 0.125)) == [Decimal("0.10"), Decimal("0.12")]


def test_sql_writes_round_half_up_on_every_database(gadgets):
    # A value written to the column without coerce() (e.g. by an engine hook) is rounded the way
    # PostgreSQL's NUMERIC rounds, and the way coerce() rounds: half away from zero.
    ids = [gadgets.records.create("gadget", {"name": str(i)}, context=SYSTEM)["id"] for i in range(3)]
    table = gadgets.records.table("gadget")
    with gadgets.db.write() as conn:
        for rid, value in zip(ids, (Decimal("0.125"), Decimal("-0.125"), 0.1)):
            conn.execute(table.update().where(table.c.id == rid).values(amount=value))
    assert [gadgets.records.get("gadget", rid)["amount"] for rid in ids] == [
        Decimal("0.13"), Decimal("-0.13"), Decimal("0.10")]


def test_values_come_back_with_their_type(gadgets):
    rec = gadgets.records
    user = rec.create("user", {"name": "Ann", "email": "ann@example.com"}, context=SYSTEM)
    first = rec.create("gadget", {"name": "first"}, context=SYSTEM)
    raw = {
        "name": "Widget", "notes": "multi\nline ü", "qty": "12", "weight": "1.23456", "fine": "0.00000001",
        "amount": 0.1, "discount": "12.345", "active": "yes", "due": "2026-01-31",
        "at": "2026-01-31T09:00:00.123456+08:00", "email": "Bob@Example.COM", "phone": "+1 555 0100",
        "site": "https://example.com", "tags": ["blue", "red"], "parent": first["id"], "helper": str(user["id"]),
        "about": f"user:{user['id']}", "extra": {"k": [1, 2.5, None, True], "s": "ü"},
    }
    created = rec.create("gadget", raw, context=SYSTEM)
    expected = {
        "name": "Widget", "notes": "multi\nline ü", "qty": 12, "weight": Decimal("1.235"),
        "fine": Decimal("0.00000001"), "amount": Decimal("0.10"), "discount": Decimal("12.35"), "active": True,
        "due": date(2026, 1, 31), "at": datetime(2026, 1, 31, 1, 0, 0, 123456, tzinfo=UTC),
        "email": "bob@example.com", "phone": "+1 555 0100", "site": "https://example.com",
        "stage": "new", "tags": ["red", "blue"], "parent": first["id"], "helper": user["id"],
        "about": Ref("user", user["id"]), "extra": {"k": [1, 2.5, None, True], "s": "ü"},
    }
    loaded = rec.get("gadget", created["id"])
    for record in (created, loaded):
        for name, value in expected.items():
            assert record[name] == value, name
            assert type(record[name]) is type(value), name
        assert record["at"].utcoffset() == timedelta(0)
    for name in ("weight", "fine", "amount", "discount"):
        assert str(loaded[name]) == str(expected[name]), name

    # update changes what it is given, and the same types come back
    updated = rec.update("gadget", created["id"], {"amount": "-5", "tags": "green", "active": False,
                                                     "at": datetime(2026, 7, 1, 12, tzinfo=timezone(timedelta(hours=-4))),
                                                     "about": {"entity": "gadget", "id": first["id"]},
                                                     "due": None})
    loaded = rec.get("gadget", created["id"])
    for record in (updated, loaded):
        assert record["amount"] == Decimal("-5.00") and str(record["amount"]) == "-5.00"
        assert record["tags"] == ["green"]
        assert record["active"] is False
        assert record["at"] == datetime(2026, 7, 1, 16, tzinfo=UTC) and record["at"].utcoffset() == timedelta(0)
        assert record["about"] == Ref("gadget", first["id"])
        assert record["due"] is None
    assert loaded["version"] == 2


def test_record_service_reports_field_errors_by_code(gadgets):
    with pytest.raises(ValidationFailed) as info:
        gadgets.records.create("gadget", {
            "name": "x" * 41, "qty": 1.5, "amount": "1e30", "active": "maybe", "due": "2026-13-01",
            "at": "2026-01-31T09:00:00", "email": "nope", "stage": "open", "tags": ["pink"],
            "extra": {"bad": float("nan")}}, context=SYSTEM)
    codes = {e.field: e.code for e in info.value.errors}
    assert codes == {"name": "max_length", "qty": "type", "amount": "max", "active": "type", "due": "format",
                     "at": "timezone", "email": "format", "stage": "choice", "tags": "choice", "extra": "type"}
    with pytest.raises(ValidationFailed) as info:
        gadgets.records.create("gadget", {"qty": -1}, context=SYSTEM)
    assert [(e.field, e.code) for e in info.value.errors] == [("qty", "min")]
    with pytest.raises(ValidationFailed) as info:
        gadgets.records.create("gadget", {"code": "Q-1999-0001"})
    assert [(e.field, e.code) for e in info.value.errors] == [("code", "readonly")]
    assert gadgets.records.query("gadget") == []


def test_extreme_values_are_stored_exactly(gadgets):
    rec = gadgets.records
    values = {"qty": 2**63 - 1, "amount": "9999999999999999.99", "weight": "-999999999.999",
              "discount": "99999.99", "fine": "9999999999.99999999"}
    created = rec.create("gadget", values, context=SYSTEM)
    loaded = rec.get("gadget", created["id"])
    assert loaded["qty"] == 2**63 - 1
    assert loaded["amount"] == Decimal("9999999999999999.99")
    assert loaded["weight"] == Decimal("-999999999.999")
    assert loaded["discount"] == Decimal("99999.99")
    assert loaded["fine"] == Decimal("9999999999.99999999")


def test_autonumbers_follow_the_pattern_and_increase(gadgets):
    year = date.today().year
    codes = [gadgets.records.create("gadget", {"name": f"g{i}"}, context=SYSTEM)["code"] for i in range(3)]
    assert codes == [f"Q-{year}-0001", f"Q-{year}-0002", f"Q-{year}-0003"]
    stored = [r["code"] for r in gadgets.records.query("gadget", order_by=("id",))]
    assert stored == codes


def test_autonumber_start(make_runtime, write_tree, config_root):
    (config_root / "base" / "ticket.yaml").write_text(
        'entity: ticket\nfields:\n  number: {type: autonumber, pattern: "T{00000}", start: 1000}\n', encoding="utf-8")
    rt = make_runtime(config_root=config_root)
    numbers = [rt.records.create("ticket", {}, context=SYSTEM)["number"] for _ in range(2)]
    assert numbers == ["T01000", "T01001"]


# -- metadata-time checks --------------------------------------------------------------------------

def load_problems(make_runtime, config_root, yaml_text: str) -> list:
    import textwrap

    (config_root / "base" / "x.yaml").write_text(textwrap.dedent(yaml_text).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    return info.value.problems


def only_problem(problems, line: int, *words: str):
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert Path(problem.location.file).name == "x.yaml"
    assert problem.location.line == line, str(problem)
    for word in words:
        assert word in problem.message, problem.message
    return problem


def test_metadata_default_must_be_an_option(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          stage:
            type: picklist
            options: [new, won, lost]
            default: open
    """)
    only_problem(problems, 6, "deal.stage", "default 'open'", "not one of: new, won, lost")


def test_metadata_default_of_other_types_is_checked(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          amount: {type: currency, default: lots}
          due:
            type: date
            default: "2026-02-30"
          flag:
            type: boolean
            default: maybe
    """)
    assert sorted(p.location.line for p in problems) == [3, 6, 9]
    assert all("default" in p.message for p in problems)


def test_metadata_property_that_does_not_apply(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          name:
            type: text
            options: [a, b]
    """)
    only_problem(problems, 5, "'options'", "does not apply to a text field")


def test_metadata_scale_greater_than_precision(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          ratio:
            type: number
            precision: 4
            scale: 6
    """)
    only_problem(problems, 6, "scale 6 is greater than precision 4")


def test_metadata_precision_too_large(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          ratio:
            type: number
            precision: 30
    """)
    only_problem(problems, 5, "precision above 18")


def test_metadata_min_greater_than_max(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          qty:
            type: integer
            min: 10
            max: 1
    """)
    only_problem(problems, 5, "min 10 is greater than max 1")


def test_metadata_date_bounds_must_be_dates(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          due:
            type: date
            min: soon
          start:
            type: date
            min: "2026-12-31"
            max: "2026-01-01"
    """)
    assert [(p.location.line, "min" in p.message) for p in problems] == [(5, True), (8, True)]
    assert "not a date" in problems[0].message
    assert "after max" in problems[1].message or "greater than max" in problems[1].message


def test_metadata_lookup_needs_to(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          account:
            type: lookup
            label: Account
    """)
    only_problem(problems, 4, "lookup field needs the property 'to'")


def test_metadata_lookup_to_unknown_entity(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          account:
            type: lookup
            to: acount
    """)
    only_problem(problems, 5, "'acount'", "not declared")


def test_metadata_autonumber_needs_one_counter(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          code:
            type: autonumber
            pattern: "D-{YYYY}"
          other:
            type: autonumber
            pattern: "D-{000}-{00}"
    """)
    assert [p.location.line for p in problems] == [5, 8]
    assert all("exactly one counter" in p.message for p in problems)


def test_metadata_picklist_checks(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          stage:
            type: picklist
            options: [new, won, new]
          colors:
            type: multipicklist
            options: [red, "red;blue"]
          empty:
            type: picklist
            options: []
    """)
    by_line = {p.location.line: p.message for p in problems}
    assert "'new' is listed twice" in by_line[5]
    assert ";" in by_line[8]
    assert 11 in by_line


def test_metadata_text_pattern_must_compile(make_runtime, config_root):
    problems = load_problems(make_runtime, config_root, """
        entity: deal
        fields:
          code:
            type: text
            pattern: "[A-Z"
    """)
    only_problem(problems, 5, "not a valid regular expression")
