"""Text-like field types: text, textarea, email, phone, url.

Each normalises what it is given before checking it, so what is stored is one form of the value:
text is trimmed (a textarea loses only surrounding blank lines and trailing spaces); an e-mail address
is checked with email-validator (syntax only, never DNS) and lower-cased; a URL without a scheme gets
``https://``; a phone field that declares ``normalise: e164`` is parsed with phonenumbers (numbers
written without ``+country`` read in the field's ``region``) and stored as E.164 (``+8613800138000``).
"""

from __future__ import annotations

from engine.messages import Msg
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, ClassVar

import phonenumbers
import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email

from .base import FieldType, FieldValueError, unsafe_text

DEFAULT_LENGTH = 255


class TextType(FieldType):
    name = "text"
    props = {"pattern": {"type": "string"},
             "encrypted": {"type": "boolean"}}   # AES-GCM at rest (engine/storage/crypto.py)
    common = FieldType.common | {"max_length"}
    formula_type = "text"
    widget = "text"
    default_length = DEFAULT_LENGTH

    def length(self, field) -> int:
        return int(field.prop("max_length") or self.default_length)

    def column_type(self, field):
        return sa.String(self.length(field))

    def signature(self, field):
        return ["encrypted", self.length(field)] if field.prop("encrypted") else ["string", self.length(field)]

    def widens(self, old, new):
        return old[0] == "string" and (new[0] == "clob" or (new[0] == "string" and new[1] >= old[1]))

    def check(self, field, entity, report):
        if field.prop("encrypted"):   # ciphertext cannot be compared, sorted or indexed in the database
            for prop in ("unique", "indexed", "searchable", "track_history"):
                if field.prop(prop):
                    report(prop, f"an encrypted field cannot be {prop.replace('_', ' ')}"
                                 + (" (history would keep its values in clear)" if prop == "track_history" else ""))
        pattern = field.prop("pattern")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                report("pattern", f"pattern is not a valid regular expression: {exc}")
        super().check(field, entity, report)

    def coerce(self, field, value: Any) -> str:
        return field.coerce(value)

    def coercer(self, field):
        limit = self.length(field)
        text = field.prop("pattern")
        pattern = re.compile(text) if text else None
        normalise, validate = self.normaliser(field), self.validate

        def coerce(value: Any) -> str:
            if not isinstance(value, str):
                raise FieldValueError("type", f"expected text, got {type(value).__name__}")
            problem = unsafe_text(value)
            if problem:
                raise FieldValueError("encoding", problem)
            value = normalise(value)
            if len(value) > limit:
                raise FieldValueError("max_length", Msg("longer than {limit} characters", limit=limit))
            if pattern is not None and not pattern.fullmatch(value):
                raise FieldValueError("pattern", Msg("does not match the pattern {pattern}", pattern=text))
            validate(value)
            return value

        return coerce

    def normaliser(self, field) -> Callable[[str], str]:
        """The function that brings a value of ``field`` to its stored form (raises ``FieldValueError``)."""
        return self.normalise

    def normalise(self, value: str) -> str:
        return value.strip()

    def validate(self, value: str) -> None:
        """Format check of the specialised types."""

    def json_schema(self, field):
        return {"type": "string", "maxLength": self.length(field)}

    def parse_csv(self, field, text):
        return None if text == "" else self.coerce(field, text)


class TextareaType(TextType):
    name = "textarea"
    widget = "textarea"
    default_length = 32000

    def column_type(self, field):
        return sa.Text()

    def signature(self, field):
        return ["encrypted", self.length(field)] if field.prop("encrypted") else ["clob"]

    def widens(self, old, new):
        return new == ["clob"] and old[0] in ("string", "clob")   # from text; a decimal must be converted

    def json_schema(self, field):
        return {"type": "string", "maxLength": self.length(field)}

    def normalise(self, value: str) -> str:
        # Indentation inside a note may be meant; blank lines around it and trailing spaces never are.
        return value.rstrip().lstrip("\r\n")


class _FormattedText(TextType):
    """Text that must match a format: stripped, then checked against ``format``."""

    props = {"encrypted": {"type": "boolean"}}
    format: ClassVar[re.Pattern]
    format_error: ClassVar[str]
    json_format: ClassVar[str | None] = None

    def normalise(self, value):
        return value.strip()

    def validate(self, value):
        if not self.format.fullmatch(value):
            raise FieldValueError("format", self.format_error)

    def json_schema(self, field):
        schema = {"type": "string", "maxLength": self.length(field)}
        return {**schema, "format": self.json_format} if self.json_format else schema


class EmailType(_FormattedText):
    name = "email"
    widget = "email"
    format = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
    format_error = "is not an e-mail address"
    json_format = "email"

    def normalise(self, value):
        # Lower-cased whole: mail systems ignore case in practice, and a CRM matches people by
        # address (duplicates, logins, unique keys), where Ann@x.com and ann@x.com are one person.
        value = value.strip()
        if _PLAIN_EMAIL.fullmatch(value) and len(value) <= 254 and value.rpartition(".")[2].lower() not in _SPECIAL:
            return value.lower()   # the common case, which email-validator accepts as it is, 100 times faster
        try:
            return validate_email(value, check_deliverability=False).normalized.lower()
        except EmailNotValidError as exc:
            raise FieldValueError("format", Msg("is not an e-mail address: {reason}", reason=str(exc))) from None

    def validate(self, value):
        """Checked by ``normalise`` already (email-validator)."""


#: Addresses email-validator takes unchanged (besides case): ASCII atoms, a domain of letter-digit-hyphen
#: labels and a TLD of letters. Anything else goes through the library.
_PLAIN_EMAIL = re.compile(r"(?=[^@]{1,64}@)[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
                          r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
_SPECIAL = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


class PhoneType(_FormattedText):
    """A phone number. Declared ``normalise: e164``, it is parsed with phonenumbers and stored in E.164
    (``+14155550100``, an extension kept as `` ext. 12``): a number without ``+country`` is read in the
    field's ``region`` (ISO 3166 code, e.g. ``CN``), and one that cannot be parsed, or is not a valid
    number, is refused. Without ``normalise`` it is free text of digits, spaces, ``+ ( ) - .`` and ``ext``."""

    name = "phone"
    widget = "phone"
    default_length = 40
    props = {**_FormattedText.props, "normalise": {"enum": ["e164"]},
             "region": {"type": "string", "pattern": "^[A-Z]{2}$"}}
    format = re.compile(r"\+?[0-9 ()./-]{4,30}( ?(x|ext\.?) ?[0-9]{1,6})?")
    format_error = "is not a phone number (digits, spaces, + ( ) - . and ext)"

    def check(self, field, entity, report):
        region = field.prop("region")
        if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
            report("region", f"region {region!r} is not a region phonenumbers knows (an ISO 3166 code such as CN, US)")
        if region is not None and field.prop("normalise") is None:
            report("region", "region applies to a phone field that declares normalise: e164")
        super().check(field, entity, report)

    def normaliser(self, field):
        if field.prop("normalise") != "e164":
            return self.normalise
        return _e164(field.prop("region"))



#: A plainly written number: an optional +, digits and the usual separators (no letters, no "(0)").
_PLAIN_PHONE = re.compile(r"\+?[\d \-.()/]+")
_REGIONS: dict[str, Any] = {}


def _region_rules(region: str):
    """(country code, international prefix, national-prefix pattern) of a region from phonenumbers'
    metadata, or None when its national prefix needs a transform (then ``parse`` decides)."""
    cached = _REGIONS.get(region)
    if cached is None and region not in _REGIONS:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        ok = meta is not None and meta.national_prefix_transform_rule is None
        cached = _REGIONS[region] = (meta.country_code, meta.international_prefix,
                                     re.compile(meta.national_prefix_for_parsing or "(?!)")) if ok else None
    return cached


def fast_e164(raw: str, region: str | None) -> str | None:
    """E.164 of a plainly written number without running ``phonenumbers.parse`` (about 0.2 ms a call,
    which an import of a million leads with two phones each would pay twice): "+" and the digits; or,
    in the region's rules from phonenumbers' metadata, its international prefix or its national prefix
    taken off and its country code put on. None: anything else (letters, extensions, "(0)", a national
    prefix that is a carrier code), which ``parse`` reads. It checks lengths, not validity."""
    if "(0)" in raw or not _PLAIN_PHONE.fullmatch(raw):
        return None
    digits = "".join(ch for ch in raw if ch.isdigit())
    if raw.startswith("+"):
        return "+" + digits if 8 <= len(digits) <= 15 else None
    rules = _region_rules(region) if region else None
    if rules is None:
        return None
    code, international, national = rules
    if international and digits.startswith("00") and re.fullmatch(international, "00"):
        rest = digits[2:]
        return "+" + rest if 8 <= len(rest) <= 15 else None
    found = national.match(digits)
    if found is not None:
        if any(found.groups()):       # a carrier code or a transform: parse knows
            return None
        digits = digits[found.end():]
    return f"+{code}{digits}" if 6 <= len(digits) <= 14 else None


def e164(value: str, region: str | None, *, strict: bool = True) -> str:
    """``value`` as E.164, read in ``region`` (an ISO country code) when it has no ``+country``.

    ``strict`` (a phone field's normalisation): with `` ext. N`` when it has an extension;
    ``FieldValueError`` when phonenumbers cannot parse it or it is no valid number. Not strict (the
    forms duplicate rules compare, ``engine.matching.e164``): a plainly written number through
    ``fast_e164``, else what ``parse`` reads when it is a possible number, else its digits; never an
    error, so two spellings of one number give one string."""
    text = value.strip()
    region = (region or "").upper() or None
    if not strict:
        if not text:
            return ""
        fast = fast_e164(text, region)
        if fast is not None:
            return fast
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if not strict:
            return _digits(text)
        hint = "" if text.startswith("+") or region else " (write it with +country code)"
        raise FieldValueError("format", f"is not a phone number: {exc._msg}{hint}") from None
    if not strict:
        if not phonenumbers.is_possible_number(number):
            return _digits(text)
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        where = phonenumbers.region_code_for_number(number) or region or "any region"
        raise FieldValueError("format", Msg("is not a valid phone number for {region}", region=where))
    out = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return f"{out} ext. {number.extension}" if number.extension else out


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _e164(region: str | None) -> Callable[[str], str]:
    @lru_cache(maxsize=4096)   # imports repeat switchboard numbers; parsing is ~0.1 ms
    def normalise(value: str) -> str:
        return e164(value, region) if value.strip() else ""
    return normalise


class UrlType(_FormattedText):
    name = "url"
    widget = "url"
    default_length = 2000
    format = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
    format_error = "is not an http(s) URL"
    json_format = "uri"

    def normalise(self, value):
        value = value.strip()
        if value and not _SCHEME.match(value):   # www.example.com: people leave the scheme out
            value = "https://" + value
        return value


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


TYPES = (TextType(), TextareaType(), EmailType(), PhoneType(), UrlType())
