"""CSV export of a list query: every page, walked by keyset, written as it is read."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from typing import Iterator

from engine.metadata.model import Entity
from engine.storage.query import ListQuery, system_field
from engine.storage.records import Context, RecordService

PAGE = 500
MAX_ROWS = 1_000_000


def export_csv(records: RecordService, ent: Entity, q: ListQuery, columns: list[str],
               context: Context) -> Iterator[str]:
    """Lines of CSV: a header of ``columns``, then one line per record, each value in its field
    type's CSV form. The first page is read before anything is sent, so a bad query is a 400."""
    fields = [ent.fields.get(name) or system_field(name) for name in columns]
    q = replace(q, limit=PAGE, columns=None, count=False)
    page = records.list(q, context=context)

    def lines() -> Iterator[str]:
        nonlocal page
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        sent = 0
        while True:
            for record in page.records:
                writer.writerow([f.type.format_csv(f, record.get(f.name)) for f in fields])
            sent += len(page.records)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if page.next_cursor is None or sent >= MAX_ROWS:
                return
            page = records.list(replace(q, cursor=page.next_cursor), context=context)

    return lines()
