"""Cells of an import file -> values of fields, in the formats of the file's locale.

* Numbers: ``1,234.56`` (en, zh, ja...) or ``1.234,56`` / ``1 234,56`` (de, fr, es, it, nl, pt, ru...);
  a currency sign or a percent sign around the number is dropped. XLSX numbers are taken as they are.
* Dates: ISO ``2026-12-31`` always; then by locale ``12/31/2026`` (en), ``31/12/2026`` (fr, es, it, pt,
  en-gb), ``31.12.2026`` (de, ru...), ``2026/12/31`` and ``2026年12月31日`` (zh, ja). A column whose
  rows use two formats is an error naming the row (``01/02/2026`` could be either day first or not).
* Picklists: by value or by label in any language, loosely (see ``mapping.fold``); a multipicklist
  cell separates its values with ``;`` ``,`` ``、`` or ``，``.
* Booleans: yes/no, true/false, 1/0, 是/否, ja/nein, oui/non, x.
* Text is kept literally, also a cell starting with ``= + - @``: it is stored as text and never
  evaluated here; exports (engine/api/exports.py) are where such text is neutralised, with a quote
  before it, which an import takes off again (``'=A1`` is imported as ``=A1``).

Lookups are not converted here: ``lookups.py`` resolves them a chunk at a time.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from engine.api.exports import needs_escape

from .mapping import fold

DECIMAL_COMMA = {"de", "fr", "es", "it", "nl", "pt", "ru", "pl", "sv", "da", "fi", "nb", "cs", "tr", "id", "vi"}
_SIGNS = re.compile(r"^[\s$€£¥￥₹%]+|[\s$€£¥￥₹%]+$|^(?:USD|EUR|CNY|RMB|GBP|JPY)\s*|\s*(?:USD|EUR|CNY|RMB|GBP|JPY)$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
TRUE = {"1", "true", "yes", "y", "x", "是", "对", "真", "ja", "oui", "si", "sí", "on"}
FALSE = {"0", "false", "no", "n", "否", "不", "假", "nein", "non", "off", ""}
NUMERIC = {"integer", "number", "currency", "percent"}
SPLIT = re.compile(r"\s*[;,、，]\s*")


class CellError(ValueError):
    """A cell that is not a value of its field."""


def language(locale: str | None) -> str:
    return (locale or "en").replace("_", "-").lower().split("-")[0]


def date_formats(locale: str | None) -> list[tuple[str, str]]:
    """(name, strptime format) accepted for dates in ``locale``, ISO first."""
    loc = (locale or "en").replace("_", "-").lower()
    lang = language(loc)
    formats = [("YYYY-MM-DD", "%Y-%m-%d")]
    if lang in ("zh", "ja", "ko"):
        formats += [("YYYY/MM/DD", "%Y/%m/%d"), ("YYYY年MM月DD日", "%Y年%m月%d日"), ("YYYY.MM.DD", "%Y.%m.%d")]
    elif lang == "en" and loc not in ("en-gb", "en-au", "en-nz", "en-in", "en-ie"):
        formats += [("MM/DD/YYYY", "%m/%d/%Y")]
    elif lang in ("de", "ru", "pl", "cs", "fi", "nb", "da", "tr"):
        formats += [("DD.MM.YYYY", "%d.%m.%Y")]
    else:
        formats += [("DD/MM/YYYY", "%d/%m/%Y"), ("DD.MM.YYYY", "%d.%m.%Y")]
    return formats


class Converter:
    """Converts the cells of one import for its fields; remembers each column's date format."""

    def __init__(self, fields: dict[str, Any], locale: str | None = None):
        self.fields = fields
        self.locale = locale
        self.decimal_comma = language(locale) in DECIMAL_COMMA
        self.formats = date_formats(locale)
        self.column_format: dict[str, tuple[str, int]] = {}
        self._options: dict[str, dict[str, str]] = {}

    def value(self, column: str, name: str, cell: Any, row: int) -> Any:
        """The value of field ``name`` for ``cell`` (None for an empty cell); ``CellError`` if none."""
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            return None
        f = self.fields.get(name)
        kind = f.type_name if f is not None else "text"
        if kind in NUMERIC:
            return self.number(cell, integer=kind == "integer")
        if kind in ("date", "datetime"):
            return self.when(column, cell, row, kind)
        if kind == "boolean":
            if isinstance(cell, bool):
                return cell
            text = fold(cell)
            if text in TRUE:
                return True
            if text in FALSE:
                return False
            raise CellError(f"{cell!r} is not yes or no")
        if kind == "picklist":
            return self.option(name, f, cell)
        if kind == "multipicklist":
            return [self.option(name, f, part) for part in SPLIT.split(str(cell).strip()) if part]
        return self.text(cell)

    @staticmethod
    def text(cell: Any) -> str:
        """Text as written (numbers of a spreadsheet without a trailing ``.0``)."""
        if isinstance(cell, float) and cell.is_integer():
            return str(int(cell))
        if isinstance(cell, datetime):
            return cell.isoformat(sep=" ")
        if not isinstance(cell, str):
            return str(cell)
        text = cell.strip()
        # The quote an export puts before text a spreadsheet would run ('=1+2, '+86 138...) comes
        # off again, so an export imported back is unchanged (a spreadsheet hides it the same way).
        return text[1:] if text.startswith("'") and needs_escape(text[1:]) else text

    def number(self, cell: Any, *, integer: bool) -> Any:
        if isinstance(cell, bool):
            raise CellError(f"{cell!r} is not a number")
        if isinstance(cell, (int, float, Decimal)):
            value = Decimal(str(cell))
        else:
            text = _SIGNS.sub("", str(cell).strip()).replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
            if self.decimal_comma:
                text = text.replace(".", "").replace("'", "").replace(",", ".")
            else:
                text = text.replace(",", "").replace("'", "")
            if not _NUMBER.match(text):
                example = "1.234,56" if self.decimal_comma else "1,234.56"
                raise CellError(f"{cell!r} is not a number (this import reads numbers like {example})")
            try:
                value = Decimal(text)
            except InvalidOperation:
                raise CellError(f"{cell!r} is not a number") from None
        if integer:
            if value != value.to_integral_value():
                raise CellError(f"{cell!r} is not a whole number")
            return int(value)
        return value

    def when(self, column: str, cell: Any, row: int, kind: str) -> Any:
        if isinstance(cell, datetime):
            return cell.date() if kind == "date" else (cell if cell.tzinfo else cell.replace(tzinfo=timezone.utc))
        if isinstance(cell, date):
            return cell if kind == "date" else datetime.combine(cell, time(), timezone.utc)
        text = str(cell).strip()
        day, _, clock = text.partition(" ") if kind == "datetime" else (text, "", "")
        if kind == "datetime" and "T" in text:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
                return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
            except ValueError:
                raise CellError(f"{text!r} is not a date and time") from None
        for name, fmt in self.formats:
            try:
                parsed = datetime.strptime(day, fmt).date()
            except ValueError:
                continue
            first = self.column_format.setdefault(column, (name, row))
            if first[0] != name:
                raise CellError(f"{text!r} is written {name} but row {first[1]} of this column is written "
                                f"{first[0]}: use one date format per column")
            if kind == "date":
                return parsed
            try:
                hours = time.fromisoformat(clock) if clock else time()
            except ValueError:
                raise CellError(f"{clock!r} is not a time of day (HH:MM or HH:MM:SS)") from None
            return datetime.combine(parsed, hours, hours.tzinfo or timezone.utc)
        accepted = ", ".join(n for n, _ in self.formats)
        raise CellError(f"{text!r} is not a date (accepted: {accepted})")

    def option(self, name: str, f: Any, cell: Any) -> str:
        index = self._options.get(name)
        if index is None:
            index = self._options[name] = {}
            for option in f.options:
                index.setdefault(fold(option.value), option.value)
                for text in option.label.texts.values():
                    index.setdefault(fold(text), option.value)
        value = index.get(fold(self.text(cell)))
        if value is None:
            shown = ", ".join(o.value for o in f.options[:8])
            raise CellError(f"{cell!r} is no option of {name} (values or labels in any language: {shown}...)")
        return value
