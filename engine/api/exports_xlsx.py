"""The XLSX writer of exports (``engine/api/exports.py`` reads the rows).

openpyxl's write-only workbook writes each row to a temporary file as it comes, so memory stays flat
whatever the number of rows; the finished file (a zip, which cannot be sent before its sheet is
complete) is then streamed from disk in chunks and removed. Cells are typed: numbers and amounts as
numbers (an amount formatted with its currency's symbol and decimals when ``money``), dates and
date-times as Excel dates (local times of the caller's zone, which Excel cannot store), yes/no as
booleans, everything else as text: a text that starts like a formula is a string cell with Excel's
quote prefix, never a formula. The header row is bold and frozen; widths follow the field types.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from typing import Any, Iterator

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from .exports import ExportColumn, ExportOptions, needs_escape

CHUNK = 64 * 1024
#: Column widths (in characters) by kind of cell; text columns follow their field's length.
WIDTHS = {"number": 14, "money": 16, "date": 12, "datetime": 20, "boolean": 8}
DATE_FORMATS = {"date": "yyyy-mm-dd", "datetime": "yyyy-mm-dd hh:mm:ss"}

__all__ = ["xlsx_chunks"]


def xlsx_chunks(title: str, columns: list[ExportColumn], rows: Iterator[list[Any]],
                options: ExportOptions) -> Iterator[bytes]:
    """The bytes of an XLSX file with one sheet named ``title``: a bold header, then ``rows``."""
    handle, path = tempfile.mkstemp(prefix="crm-export-", suffix=".xlsx")
    os.close(handle)
    try:
        _write(path, title, columns, rows, options)
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                yield chunk
    finally:
        os.unlink(path)


def _write(path: str, title: str, columns: list[ExportColumn], rows: Iterator[list[Any]],
           options: ExportOptions) -> None:
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title=_sheet_title(title))
    for i, col in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = _width(col)
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for col in columns:
        cell = WriteOnlyCell(sheet, value=col.header)
        cell.data_type, cell.font = "s", bold
        header.append(cell)
    sheet.append(header)
    formats: dict[str, str] = {}
    for row in rows:
        sheet.append([_cell(sheet, col, value, options, formats) for col, value in zip(columns, row)])
    book.save(path)


def _cell(sheet, col: ExportColumn, value: Any, options: ExportOptions, formats: dict[str, str]) -> Any:
    if value is None:
        return None
    if col.raw_id:
        return value if isinstance(value, int) else _text_cell(sheet, str(value))
    if col.kind == "money":
        amount, code = value
        cell = WriteOnlyCell(sheet, value=amount)
        if options.money:
            cell.number_format = formats.get(code) or formats.setdefault(code, _money_format(code, options.lang))
        return cell
    if isinstance(value, datetime):
        cell = WriteOnlyCell(sheet, value=value.replace(tzinfo=None))
        cell.number_format = DATE_FORMATS["datetime"]
        return cell
    if col.kind in ("number", "date", "boolean"):
        return value
    return _text_cell(sheet, str(value))


def _text_cell(sheet, text: str) -> Any:
    """A string cell (never a formula: openpyxl would take a leading ``=`` as one)."""
    if not needs_escape(text):
        return text
    cell = WriteOnlyCell(sheet, value=text)
    cell.data_type = "s"
    cell.quotePrefix = True
    return cell


def _money_format(code: str, lang: str) -> str:
    """An Excel number format with the currency's symbol in ``lang`` and its decimals (``"CN¥"#,##0.00``)."""
    from babel.numbers import get_currency_precision, get_currency_symbol

    from engine.fields.numeric import LOCALES

    symbol = get_currency_symbol(code, locale=LOCALES.get(lang, LOCALES["en"])).replace('"', "")
    digits = get_currency_precision(code)
    number = "#,##0" + ("." + "0" * digits if digits else "")
    return f'"{symbol}"{number};-"{symbol}"{number}'


def _width(col: ExportColumn) -> float:
    if col.raw_id:
        return 10
    if col.kind in WIDTHS:
        return max(WIDTHS[col.kind], min(len(col.header) + 2, 40))
    length = int(col.field.prop("max_length") or 255)
    return max(min(length, 40), min(len(col.header) + 2, 40), 10)


def _sheet_title(title: str) -> str:
    """A sheet name Excel accepts: at most 31 characters, none of ``[]:*?/\\``."""
    cleaned = "".join("_" if ch in "[]:*?/\\" else ch for ch in title).strip("'")
    return cleaned[:31] or "Export"
