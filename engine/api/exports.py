"""CSV export of a list query: every page, walked by keyset, written as it is read."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Iterator

from engine.fields.numeric import currencies_of, format_money, is_amount
from engine.metadata.model import Entity
from engine.storage.query import ListQuery, system_field
from engine.storage.records import Context, RecordService

PAGE = 500
MAX_ROWS = 1_000_000


def export_csv(records: RecordService, ent: Entity, q: ListQuery, columns: list[str],
               context: Context, money: tuple[str, str] | None = None) -> Iterator[str]:
    """Lines of CSV: a header of ``columns``, then one line per record, each value in its field
    type's CSV form. The first page is read before anything is sent, so a bad query is a 400.
    ``money=(lang, site currency)``: amounts as people read them, with the symbol and decimals of
    the record's currency (the entity's ``currency:`` key, else the site's)."""
    fields = [ent.fields.get(name) or system_field(name) for name in columns]
    q = replace(q, limit=PAGE, columns=None, count=False)
    page = records.list(q, context=context)
    amounts = {i for i, f in enumerate(fields) if money is not None and is_amount(f)}

    def cells(record: dict, codes: dict) -> list[str]:
        out = [f.type.format_csv(f, record.get(f.name)) for f in fields]
        for i in amounts:
            if record.get(fields[i].name) is not None:
                out[i] = format_money(record[fields[i].name], codes.get(record["id"]) or money[1], money[0])
        return out

    def lines() -> Iterator[str]:
        nonlocal page
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        sent = 0
        while True:
            codes = currencies_of(records, ent, page.records, context) if amounts else {}
            for record in page.records:
                writer.writerow(cells(record, codes))
            sent += len(page.records)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if page.next_cursor is None or sent >= MAX_ROWS:
                return
            page = records.list(replace(q, cursor=page.next_cursor), context=context)

    return lines()

