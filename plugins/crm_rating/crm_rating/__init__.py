"""An example plugin: a ``rating`` field type, 1 to ``stars`` stars (default 5), with its form widget.

It registers the type only; a site (or an industry) uses it in its metadata::

    entity: account
    fields:
      satisfaction: {type: rating, stars: 5, label: {en: Satisfaction}}

What the type knows, as every field type does (docs/plugins.md, "Writing a field type"): its column
(a small integer), how input becomes a value (``4``, ``"4"`` or ``"★★★★"``; anything else, or a
number of stars out of range, is a field error), its JSON Schema and marshmallow field (the API),
its formula type (``number``: ``satisfaction >= 4`` works in rules, filters and reports), its CSV
form (the number; ``★★★★`` is read too) and its widget (``templates/ui/widgets/rating.html``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from engine.fields import FieldType, FieldValueError
from engine.plugins import hookimpl

STAR = "★"
DEFAULT_STARS = 5


class RatingType(FieldType):
    """A whole number of stars, 1 to the field's ``stars``; blank means not rated."""

    name = "rating"
    props = {"stars": {"type": "integer", "minimum": 2, "maximum": 10,
                       "description": f"the highest rating (default {DEFAULT_STARS})"}}
    formula_type = "number"
    widget = "rating"

    @staticmethod
    def stars(field) -> int:
        return int(field.prop("stars", DEFAULT_STARS))

    def column_type(self, field):
        return sa.SmallInteger()

    def signature(self, field):
        return ["smallint"]          # `stars` does not change the column: no migration step

    def coerce(self, field, value):
        return field.coerce(value)   # the checks are built once per field, in coercer

    def coercer(self, field):
        top = self.stars(field)
        out_of_range = f"must be between 1 and {top} stars"

        def coerce(value):
            if isinstance(value, str):
                text = value.strip()
                value = len(text) if text and text == STAR * len(text) else text
                if isinstance(value, str):
                    if not (text.isascii() and text.isdigit()):
                        raise FieldValueError("type", f"expected a number of stars, got {value!r}")
                    value = int(text) if len(text) < 4 else top + 1
            if isinstance(value, bool) or not isinstance(value, int):
                raise FieldValueError("type", f"expected a whole number of stars, got {type(value).__name__}")
            if not 1 <= value <= top:
                raise FieldValueError("max" if value > top else "min", out_of_range)
            return value

        return coerce

    def json_schema(self, field):
        return {"type": "integer", "minimum": 1, "maximum": self.stars(field),
                "description": f"1 to {self.stars(field)} stars"}


@hookimpl
def crm_field_types():
    return [RatingType()]


@hookimpl
def crm_template_dirs():
    return [Path(__file__).parent / "templates"]
