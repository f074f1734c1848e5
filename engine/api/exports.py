"""Exports of a list query, as people see the list: every page, walked by keyset, written as it is read.

One reading of the rows (``export_rows``) and two writers: CSV (``csv_lines``, text streamed line by
line) and XLSX (``engine/api/exports_xlsx.py``). A value is exported as the list shows it:

* a lookup, user (owner) or reference column: the title of the record it points at (with the
  caller's rights: a record they may not read shows as ``#id``); ``ids=True`` adds a column
  ``<header>.id`` after it with the id itself (``entity:id`` for a reference);
* a picklist: the option's label in ``lang`` (labels joined by ``;`` for a multi-picklist);
* a date-time: in the caller's time zone, ISO 8601 with its offset (``2026-12-07 17:30:00+08:00``);
* an amount: ``money=True`` as people read it in its currency (``CN¥1,234.50``), else the plain number;
* a number, date or yes/no: the field type's CSV form (typed cells in XLSX).

Headers are the field names (``headers="name"``) or the labels in ``lang`` (``headers="label"``):
the importer maps both (by name, and by label in every language of the model).

Text a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return) is written with a leading ``'`` in CSV (OWASP's advice against CSV injection) and as a
string cell with Excel's quote prefix in XLSX (the value itself unchanged).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone, tzinfo
from typing import Any, Callable, Iterator

from engine.fields.numeric import currencies_of, format_money, is_amount
from engine.metadata.model import Entity, Field
from engine.storage.query import SYSTEM_TYPES, ListQuery, system_field
from engine.storage.records import Context, RecordService
from engine.storage.titles import SYSTEM_LABELS, pointer_titles

PAGE = 500
MAX_ROWS = 1_000_000
#: First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-]\d+(\.\d+)?")

__all__ = ["ExportColumn", "ExportOptions", "FORMULA_START", "csv_lines", "export_rows", "needs_escape", "spreadsheet_safe"]


@dataclass(frozen=True)
class ExportOptions:
    """How an export shows values: ``lang`` (en, zh) for labels and amounts, ``zone`` for date-times,
    ``money`` (amounts with their currency, else plain numbers), ``ids`` (an id column after each
    pointer), ``headers`` (``name`` or ``label``), ``currency`` (the site's, for amounts without one),
    ``translate`` (English interface text -> ``lang``, for the system columns' labels)."""

    lang: str = "en"
    zone: tzinfo = timezone.utc
    money: bool = False
    ids: bool = False
    headers: str = "name"
    currency: str = "USD"
    translate: Callable[[str], str] = str


@dataclass(frozen=True)
class ExportColumn:
    """One column of the file: a field's shown value, or (``ids``) the raw id of the pointer before it.

    ``kind`` says how the XLSX writer types the cell: text, number, money, date, datetime, boolean;
    ``pointer`` is the entity a lookup or user column points at (None for a reference: its values
    name theirs; False for any other column)."""

    header: str
    field: Field
    kind: str
    raw_id: bool = False
    pointer: str | None | bool = False

    @property
    def name(self) -> str:
        return self.field.name


def needs_escape(text: str) -> bool:
    """Whether a spreadsheet would run ``text`` as a formula (a plain signed number, ``-5`` or
    ``+1.5``, is read as that number: nothing to escape)."""
    return text.startswith(FORMULA_START) and not _SIGNED_NUMBER.fullmatch(text)


def export_rows(records: RecordService, ent: Entity, q: ListQuery, names: list[str], context: Context,
                options: ExportOptions) -> tuple[list[ExportColumn], Iterator[list[Any]]]:
    """The columns of ``names`` and an iterator of rows of shown values (None for blank). The first
    page is read before anything is returned, so a bad query raises here (a 400, not a broken file)."""
    columns = _columns(ent, names, options)
    q = replace(q, limit=PAGE, columns=None, count=False)
    first = records.list(q, context=context)
    shown = _Shown(records, ent, columns, context, options)

    def rows() -> Iterator[list[Any]]:
        page, sent = first, 0
        while True:
            yield from shown.page(page.records)
            sent += len(page.records)
            if page.next_cursor is None or sent >= MAX_ROWS:
                return
            page = records.list(replace(q, cursor=page.next_cursor), context=context)

    return columns, rows()


def csv_lines(columns: list[ExportColumn], rows: Iterator[list[Any]], options: ExportOptions) -> Iterator[str]:
    """The CSV text, a page of lines at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(c.header) for c in columns])
    count = 0
    for row in rows:
        writer.writerow([_csv_cell(c, v, options) for c, v in zip(columns, row)])
        count += 1
        if count % PAGE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# -- columns and values ------------------------------------------------------------------------------

def _columns(ent: Entity, names: list[str], options: ExportOptions) -> list[ExportColumn]:
    out = []
    for name in names:
        field = ent.fields.get(name) or system_field(name)
        header, pointer = _header(ent, name, options), _pointer(field, name)
        out.append(ExportColumn(header, field, _kind(field), pointer=pointer))
        if options.ids and pointer is not False:
            out.append(ExportColumn(f"{header}.id", field, "text" if pointer is None else "number", raw_id=True,
                                    pointer=pointer))
    return out


def _header(ent: Entity, name: str, options: ExportOptions) -> str:
    if options.headers != "label":
        return name
    if name in ent.fields:
        return ent.fields[name].label.get(options.lang)
    return options.translate(SYSTEM_LABELS.get(name, name))


def _pointer(field: Field, name: str) -> str | None | bool:
    """The target entity of a pointer column (None for a reference), False for any other column."""
    if field.type_name == "reference":
        return None
    if field.target:
        return field.target
    if SYSTEM_TYPES.get(name) == "user":
        return "user"
    return False


def _kind(field: Field) -> str:
    if is_amount(field):
        return "money"
    kind = field.type_name
    if kind == "formula":
        kind = str(field.prop("returns") or "text")
    if kind in ("integer", "number", "percent", "currency", "rollup"):
        return "number"
    if kind in ("date", "datetime", "boolean"):
        return kind
    return "text"


class _Shown:
    """Turns a page of records into rows of shown values (titles, labels, local times)."""

    def __init__(self, records, ent: Entity, columns: list[ExportColumn], context, options: ExportOptions):
        self.records, self.ent, self.columns, self.context, self.options = records, ent, columns, context, options
        self.pointers = [(c.name, c.pointer) for c in columns if not c.raw_id and c.pointer is not False]
        self.amounts = any(c.kind == "money" for c in columns)
        self.labels = {c.name: {o.value: o.label.get(options.lang) for o in c.field.options}
                       for c in columns if c.field.type_name in ("picklist", "multipicklist")}

    def page(self, rows: list[dict]) -> Iterator[list[Any]]:
        titles = pointer_titles(self.records, self.pointers, rows, self.context) if self.pointers else {}
        codes = currencies_of(self.records, self.ent, rows, self.context) if self.amounts else {}
        for record in rows:
            yield [self._value(c, record, titles, codes) for c in self.columns]

    def _value(self, col: ExportColumn, record: dict, titles: dict, codes: dict) -> Any:
        value = record.get(col.name)
        if value is None or value == "" or value == []:
            return None
        field = col.field
        if col.raw_id:
            return f"{value.entity}:{value.id}" if col.pointer is None else value
        if col.pointer is not False:
            key = (value.entity, value.id) if col.pointer is None else (col.pointer, value)
            return titles.get(key) or f"#{key[1]}"
        if col.name in self.labels:
            labels = self.labels[col.name]
            if isinstance(value, (list, tuple)):
                return ";".join(labels.get(v, str(v)) for v in value)
            return labels.get(value, str(value))
        if col.kind == "money":
            return (value, codes.get(record.get("id")) or field.prop("currency") or self.options.currency)
        if col.kind == "datetime" and isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(self.options.zone)
        if col.kind in ("number", "date", "boolean"):
            return value
        return field.type.format_csv(field, value)


def _csv_cell(col: ExportColumn, value: Any, options: ExportOptions) -> str:
    if value is None:
        return ""
    if col.kind == "money" and not col.raw_id:
        amount, code = value
        return format_money(amount, code, options.lang) if options.money else col.field.type.format_csv(col.field, amount)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if col.raw_id:
        return str(value)
    if col.kind == "number":
        return col.field.type.format_csv(col.field, value)
    return spreadsheet_safe(str(value))


def spreadsheet_safe(text: str) -> str:
    """``text`` a spreadsheet shows as text: a quote before what it would run as a formula (OWASP)."""
    return "'" + text if needs_escape(text) else text
