"""A test plugin: a ``colour`` field type with its own UI widget, and a ``brand_colour`` field on account."""

from __future__ import annotations

import re
from pathlib import Path

from engine.fields import FieldValueError
from engine.fields.text import TextType
from engine.plugins import hookimpl

_HEX = re.compile(r"#[0-9a-f]{6}")


class ColourType(TextType):
    name = "colour"
    props = {}
    widget = "colour"
    default_length = 7

    def normalise(self, value: str) -> str:
        return value.strip().lower()

    def validate(self, value: str) -> None:
        if not _HEX.fullmatch(value):
            raise FieldValueError("format", "is not a colour like #1a2b3c")


@hookimpl
def crm_field_types():
    return [ColourType()]


@hookimpl
def crm_metadata_dirs():
    return [Path(__file__).parent / "metadata"]


@hookimpl
def crm_template_dirs():
    return [Path(__file__).parent / "templates"]
