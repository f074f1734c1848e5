"""Undoing an import, and the file of its rejected rows.

``revert(service, job_id, context)`` deletes the records the import created and gives the records
it updated their previous values back, each through the record service with the caller's rights
and the version the import left (``Conflict``: the record changed since, and is left alone with
that reason). Records are handled newest row first, each in its own transaction, so one refusal
never blocks the others; the answer lists every refusal with its row and reason, and the job is
``reverted`` when nothing was refused (else it stays ``done`` and can be reverted again later).

``error_rows_csv(service, job_id)`` streams the rejected rows: the file's own columns as read, plus
``error`` (``field (column): message; ...``): fix the cells, delete the ``error`` column or not
(an import maps no column called ``error``), and import the file again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import sqlalchemy as sa

from engine.api.exports import spreadsheet_safe
from engine.storage.context import Context
from engine.storage.errors import (
    Conflict,
    DeleteRestricted,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)

from .readers import open_table
from .tables import DONE, REVERTED

PAGE = 1000


class RevertRefused(ValueError):
    def __init__(self, message: str, status: int = 409):
        self.message, self.status = message, status
        super().__init__(message)


def revert(service, job_id: int, context: Context) -> dict:
    job = service.get(job_id)
    if job is None:
        raise RevertRefused(f"there is no import {job_id}", 404)
    if job["dry_run"]:
        raise RevertRefused("a dry run wrote nothing: there is nothing to revert")
    if job["status"] == REVERTED:
        raise RevertRefused(f"import {job_id} is already reverted")
    if job["status"] != DONE and job["status"] not in ("cancelled", "failed"):
        raise RevertRefused(f"import {job_id} is {job['status']}: cancel it or wait for its end before reverting")
    records, r = service.records, service.rows
    entity = job["entity"]
    reverted, refused = 0, []
    last = None
    while True:
        stmt = (sa.select(r.c.row, r.c.status, r.c.record_id, r.c.version, r.c.previous)
                .where(r.c.import_id == job_id, r.c.status.in_(("created", "updated")))
                .order_by(r.c.row.desc()).limit(PAGE))
        if last is not None:
            stmt = stmt.where(r.c.row < last)
        with service.db.read() as conn:
            page = conn.execute(stmt).all()
        if not page:
            break
        last = page[-1].row
        for row, status, record_id, version, previous in page:
            reason = _undo(records, entity, status, record_id, version, previous, context)
            if reason is None:
                reverted += 1
                with service.db.write() as conn:
                    conn.execute(r.update().where(r.c.import_id == job_id, r.c.row == row).values(status="reverted"))
            else:
                refused.append({"row": row, "record_id": record_id, "reason": reason})
    if not refused:
        with service.db.write() as conn:
            conn.execute(service.jobs.update().where(service.jobs.c.id == job_id).values(status=REVERTED))
    return {"reverted": reverted, "refused": refused}


def _undo(records, entity, status, record_id, version, previous, context) -> str | None:
    """Undo one row's write; None when done, else why it was refused."""
    try:
        if status == "created":
            records.delete(entity, record_id, version=version, context=context)
        else:
            values = {k: v for k, v in (previous or {}).items() if not k.startswith("_")}
            records.update(entity, record_id, values, version=version, context=context)
    except Conflict as exc:
        return f"changed since the import (the import left version {exc.expected}, it is now {exc.current})"
    except NotFound:
        return "deleted since the import"
    except DeleteRestricted as exc:
        return f"other records point at it: {exc}"
    except (PermissionDenied, ValidationFailed) as exc:
        return str(exc)
    return None


def error_rows_csv(service, job_id: int) -> Iterator[str]:
    """The rejected rows as CSV text (UTF-8 with a BOM, so spreadsheet programs read it right)."""
    job = service.get(job_id)
    headers = _headers(service, job)
    r = service.rows
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*headers, "error"])
    yield "\ufeff" + _drain(buffer)
    last = 0
    while True:
        with service.db.read() as conn:
            page = conn.execute(sa.select(r.c.row, r.c.cells, r.c.errors)
                                .where(r.c.import_id == job_id, r.c.status == "error", r.c.row > last)
                                .order_by(r.c.row).limit(PAGE)).all()
        if not page:
            return
        for row, cells, errors in page:
            why = "; ".join(f"{e.get('field') or 'row'}{' (' + e['column'] + ')' if e.get('column') else ''}: "
                            f"{e.get('message')}" for e in errors or ())
            writer.writerow([*(spreadsheet_safe(str(c)) if c is not None else "" for c in (cells or [])),
                             spreadsheet_safe(why)])
            last = row
        yield _drain(buffer)


def _headers(service, job) -> list[str]:
    from .service import Options

    options = Options(**job["options"])
    try:
        return open_table(job["file_path"], name=job["file_name"], encoding=options.encoding,
                          delimiter=options.delimiter, sheet=options.sheet).headers
    except Exception:   # noqa: BLE001 - the file is gone: the mapping still names the columns
        return list((options.mapping or {}).get("columns", {}))


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
