"""Text-like field types: text, textarea, email, phone, url."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import sqlalchemy as sa

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
        normalise, validate = self.normalise, self.validate

        def coerce(value: Any) -> str:
            if not isinstance(value, str):
                raise FieldValueError("type", f"expected text, got {type(value).__name__}")
            problem = unsafe_text(value)
            if problem:
                raise FieldValueError("encoding", problem)
            value = normalise(value)
            if len(value) > limit:
                raise FieldValueError("max_length", f"longer than {limit} characters")
            if pattern is not None and not pattern.fullmatch(value):
                raise FieldValueError("pattern", f"does not match the pattern {text}")
            validate(value)
            return value

        return coerce

    def normalise(self, value: str) -> str:
        return value

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
        return value.strip().lower()


class PhoneType(_FormattedText):
    name = "phone"
    widget = "phone"
    default_length = 40
    format = re.compile(r"\+?[0-9 ()./-]{4,30}( ?(x|ext\.?) ?[0-9]{1,6})?")
    format_error = "is not a phone number (digits, spaces, + ( ) - . and ext)"


class UrlType(_FormattedText):
    name = "url"
    widget = "url"
    default_length = 2000
    format = re.compile(r"https?://[^\s/$.?#][^\s]*", re.IGNORECASE)
    format_error = "is not an http(s) URL"
    json_format = "uri"


TYPES = (TextType(), TextareaType(), EmailType(), PhoneType(), UrlType())
