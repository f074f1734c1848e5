"""Numeric field types: integer, number, currency, percent (all exact; no floats)."""

from __future__ import annotations

from engine.messages import Msg
from abc import abstractmethod
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from .base import INT64_MAX, FieldType, FieldValueError
from .sqltypes import ExactDecimal



def _bound(field, key: str) -> Decimal | None:
    value = field.prop(key)
    return None if value is None else Decimal(str(value))


class _Numeric(FieldType):
    common = FieldType.common | {"min", "max"}
    formula_type = "number"
    widget = "number"

    def check(self, field, entity, report):
        for key in ("min", "max"):
            if field.prop(key) is not None:
                try:
                    Decimal(str(field.prop(key)))
                except InvalidOperation:
                    report(key, f"{key} must be a number")
                    return
        low, high = _bound(field, "min"), _bound(field, "max")
        if low is not None and high is not None and low > high:
            report("min", f"min {low} is greater than max {high}")
        super().check(field, entity, report)

    def coerce(self, field, value):
        return field.coerce(value)

    def coercer(self, field):
        low, high = _bound(field, "min"), _bound(field, "max")
        convert = self.converter(field)
        if low is None and high is None:
            return convert

        def coerce(value):
            number = convert(value)
            if low is not None and number < low:
                raise FieldValueError("min", Msg("must be at least {low}", low=low))
            if high is not None and number > high:
                raise FieldValueError("max", Msg("must be at most {high}", high=high))
            return number

        return coerce

    @abstractmethod
    def converter(self, field):
        """Raw input -> number of this type, before the min/max bounds."""

    @staticmethod
    def to_decimal(value: Any) -> Decimal:
        if isinstance(value, bool):
            raise FieldValueError("type", "expected a number, got a boolean")
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            result = Decimal(repr(value))  # the shortest text that round-trips, not the binary expansion
        elif isinstance(value, str):
            try:
                result = Decimal(value.strip().replace(",", "")) if value.strip() else None
            except InvalidOperation:
                result = None
            if result is None:
                raise FieldValueError("type", Msg("{value} is not a number", value=repr(value)))
        else:
            raise FieldValueError("type", f"expected a number, got {type(value).__name__}")
        if not result.is_finite():
            raise FieldValueError("type", Msg("must be a finite number"))
        return result


class IntegerType(_Numeric):
    name = "integer"
    #: ``sequence: {within: <lookup>}``: numbered 1, 2, 3 per parent on create (engine/storage/derived.py).
    props = {"sequence": {"type": "object", "required": ["within"], "additionalProperties": False,
                          "properties": {"within": {"type": "string"}}}}

    def column_type(self, field):
        return sa.BigInteger()

    def signature(self, field):
        return ["integer"]

    def converter(self, field):
        return self.to_int

    def to_int(self, value):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            dec = self.to_decimal(value)
            if dec != dec.to_integral_value():
                raise FieldValueError("type", Msg("{value} is not a whole number", value=repr(value)))
            if dec.adjusted() > 18:  # checked before int(): "1e999999999" would build a huge integer
                raise FieldValueError("max", "is out of the 64-bit integer range")
            number = int(dec)
        if abs(number) > INT64_MAX:
            raise FieldValueError("max", "is out of the 64-bit integer range")
        return number

    def json_schema(self, field):
        schema = {"type": "integer"}
        for key, word in (("min", "minimum"), ("max", "maximum")):
            bound = _bound(field, key)  # may be written as a string; the schema needs a number
            if bound is not None:
                schema[word] = int(bound) if bound == bound.to_integral_value() else float(bound)
        return schema


class NumberType(_Numeric):
    """Exact decimal with ``precision`` digits in all, ``scale`` after the point."""

    name = "number"
    props = {"precision": {"type": "integer", "minimum": 1, "maximum": 38},
             "scale": {"type": "integer", "minimum": 0, "maximum": 18}}
    default_precision, default_scale = 18, 4

    def dims(self, field) -> tuple[int, int]:
        return (int(field.prop("precision", self.default_precision)),
                int(field.prop("scale", self.default_scale)))

    def check(self, field, entity, report):
        precision, scale = self.dims(field)
        if scale > precision:
            report("scale", f"scale {scale} is greater than precision {precision}")
            return
        if precision > 18:
            report("precision", "precision above 18 digits cannot be stored exactly on every database")
            return
        super().check(field, entity, report)

    def column_type(self, field):
        return ExactDecimal(*self.dims(field))

    def signature(self, field):
        return ["decimal", *self.dims(field)]

    def widens(self, old, new):
        # Same scale, more digits: every old value fits. A new scale would rewrite stored values.
        return old[0] == new[0] == "decimal" and new[2] == old[2] and new[1] >= old[1]

    def converter(self, field):
        precision, scale = self.dims(field)
        quantum, digits, to_decimal = Decimal(1).scaleb(-scale), precision - scale, self.to_decimal
        too_long = f"has more than {digits} digits before the decimal point"

        def convert(value):
            try:
                dec = to_decimal(value).quantize(quantum, rounding=ROUND_HALF_UP)
            except InvalidOperation:  # more digits than the decimal context holds, e.g. "1e30"
                raise FieldValueError("max", too_long) from None
            if dec.adjusted() >= digits:
                raise FieldValueError("max", too_long)
            return dec

        return convert

    def to_json(self, field, value):
        return format(value, "f")  # str() gives "1E-8" for scales above 6

    def json_schema(self, field):
        precision, scale = self.dims(field)
        return {"type": "string", "format": "decimal",
                "pattern": rf"^-?\d{{1,{max(1, precision - scale)}}}(\.\d{{1,{scale}}})?$" if scale else rf"^-?\d{{1,{precision}}}$",
                "description": f"exact decimal, {scale} places"}


class CurrencyType(NumberType):
    name = "currency"
    formula_type = "currency"
    widget = "currency"
    default_precision, default_scale = 18, 2


class PercentType(NumberType):
    """A percentage written as 0-100 (50 means 50 %)."""

    name = "percent"
    formula_type = "percent"
    widget = "percent"
    default_precision, default_scale = 7, 2


TYPES = (IntegerType(), NumberType(), CurrencyType(), PercentType())


#: Locales Babel formats numbers and amounts with, per UI language.
LOCALES = {"en": "en_US", "zh": "zh_Hans_CN"}


def format_money(value: Any, code: str, lang: str = "en") -> str:
    """An amount as people read it in ``lang``, with the symbol and decimals of the ISO currency
    ``code`` (CLDR, through Babel): ``$1,234.50``, ``CN¥1,234.50`` (``¥1,234.50`` in Chinese), ``¥1,235``
    for yen (no decimals). Rounded half up to the currency's digits, as a person would."""
    from babel.numbers import format_currency, get_currency_precision

    code = str(code or "").upper()
    digits = get_currency_precision(code)
    amount = _Numeric.to_decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    return format_currency(amount, code, locale=LOCALES.get(lang, LOCALES["en"]), currency_digits=True)


def is_amount(field) -> bool:
    """A currency field, or a formula or rollup whose value is an amount."""
    if field.type_name == "formula":
        return field.prop("returns") == "currency"
    if field.type_name == "rollup":   # a sum of amounts (or of formulas giving amounts)
        return field.source is not None and (field.prop("function") or "COUNT") != "COUNT" \
            and is_amount(field.source)
    return field.type_name == "currency"


def currencies_of(records, ent, rows: list[dict], context) -> dict[int, str]:
    """``{record id: ISO code}`` of ``rows`` from the entity's ``currency:`` key: a field of the record
    (``currency_code``) or of the record it looks up (``quote.currency_code``), read through
    ``records`` (the record service) with the caller's ``context``. A row whose code is blank or
    unreadable is left out: its amounts are in the site's currency (``CRM_CURRENCY``)."""
    source = ent.props.get("currency")
    rows = [r for r in rows if r.get("id") is not None]
    if not source or not rows:
        return {}
    head, _dot, tail = str(source).partition(".")
    missing = [r["id"] for r in rows if head not in r]   # a page read with only its columns
    found = records.fetch_many(ent.name, missing, context=context) if missing else {}
    codes = {r["id"]: (r[head] if head in r else (found.get(r["id"]) or {}).get(head)) for r in rows}
    if tail:
        parents = records.fetch_many(ent.fields[head].target, set(codes.values()) - {None}, context=context)
        codes = {rid: (parents.get(pid) or {}).get(tail) for rid, pid in codes.items()}
    return {rid: str(code) for rid, code in codes.items() if code not in (None, "")}
