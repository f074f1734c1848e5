"""The import engine behind the CLI, the API and the wizard: ``ImportService`` (``runtime.extensions["imports"]``).

``start(...)`` checks the file and the mapping at once (a bad file or mapping is refused before any
job exists), copies the file under ``<var dir>/imports/`` and records a queued job; ``run(id)``
executes it: the file is streamed in chunks of ``CHUNK`` rows, each chunk is written through
``records.bulk`` with the importing user's ``Context`` (permissions, field rights, validation rules,
required fields, automations, history, rollups) in one transaction together with its outcome rows
and the job's ``checkpoint``. A job that dies is run again from its checkpoint: committed rows are
never written twice, and none is lost. A dry run takes the same path and rolls every chunk back,
keeping only the counts and the rejected rows. ``cancel`` stops a running job after its current
chunk; ``revert`` (revert.py) undoes a finished one.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine import failpoints
from engine.storage.context import Context
from engine.storage.errors import Refused

from .chunk import ChunkWriter, Outcome
from .lookups import UNRESOLVED
from .mapping import Mapping, MappingError, check_mapping, complete
from .readers import open_table
from .tables import CANCELLED, COUNTS, DONE, FAILED, QUEUED, RUNNING

#: Rows per chunk (one transaction each); CRM_IMPORT_CHUNK for tests and tuning.
CHUNK = int(os.environ.get("CRM_IMPORT_CHUNK", "1000") or 1000)
MODES = ("create", "update", "upsert")
#: A running job whose heartbeat is older than this is taken to have died (its process killed).
STALE = timedelta(minutes=2)
MAX_MB = int(os.environ.get("CRM_IMPORT_MAX_MB", "200") or 200)


class ImportError_(Refused):
    """An import refused as asked (``Refused``): ``status`` the HTTP status, ``code`` its kind,
    ``field`` the option or column at fault."""

    def __init__(self, message: str, *, status: int = 422, field: str | None = None, code: str = "import"):
        super().__init__(status, code, message, field=field)
        self.code = code


class _DryRun(Exception):
    """Leaves a dry run's chunk transaction (rolls it back)."""


#: What a row that matches a duplicate rule may do (``Options.duplicates``, chunk.py).
DUPLICATES = ("error", "skip", "create", "update")


@dataclass
class Options:
    """What an import was asked to do (stored with the job as JSON)."""

    mode: str = "create"
    key: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    locale: str | None = None
    unresolved: str = "error"
    #: What a row to create that matches a duplicate rule does: error | skip | create | update (chunk.py).
    duplicates: str = "error"
    automations: bool = True
    mapping: dict | None = None
    #: Data rows in the file (counted when the job starts; the progress' total).
    rows: int | None = None

    def as_json(self) -> dict:
        return dict(self.__dict__)


class ImportService:
    def __init__(self, runtime):
        self.runtime = runtime
        self.records = runtime.records
        self.db = runtime.records.db
        tables = runtime.records.metadata.tables
        self.jobs, self.rows, self.mappings = (tables["_crm_import"], tables["_crm_import_row"],
                                               tables["_crm_import_mapping"])
        self.folder = Path(runtime.settings.var_dir) / "imports"
        self.worker = None   # set by plugin.py: the background worker (jobs.py)

    # -- starting -----------------------------------------------------------------------------------
    def open(self, path: str | Path, options: Options, name: str | None = None):
        return open_table(path, name=name, encoding=options.encoding, delimiter=options.delimiter,
                          sheet=options.sheet, max_bytes=MAX_MB * 1024 * 1024)

    def check(self, entity: str, options: Options, headers: list[str], access: Any) -> Mapping:
        """The mapping this import will use, after checking it and the options against the entity."""
        ent = self.records.model.entities.get(entity)
        if ent is None:
            raise ImportError_(f"there is no entity {entity!r}", status=404, field="entity")
        if options.mode not in MODES:
            raise ImportError_(f"mode must be one of {', '.join(MODES)}", field="mode")
        if options.unresolved not in UNRESOLVED:
            raise ImportError_(f"unresolved must be one of {', '.join(UNRESOLVED)}", field="unresolved")
        if options.duplicates not in DUPLICATES:
            raise ImportError_(f"duplicates must be one of {', '.join(DUPLICATES)}", field="duplicates")
        if options.key is not None and (options.key not in ent.fields or not ent.fields[options.key].unique):
            raise ImportError_(f"key {options.key!r} must be a unique field of {entity}", field="key")
        if options.mode == "upsert" and options.key is None:
            raise ImportError_("upsert needs --key: a unique field (an external id...)", field="key")
        if not options.automations and access is not None and not access.admin:
            raise ImportError_("only an administrator may import without automations", status=403,
                               field="automations")
        try:
            mapping = complete(ent, headers, Mapping.from_json(options.mapping) if options.mapping else None)
            check_mapping(ent, headers, mapping, access)
        except MappingError as exc:
            raise ImportError_(exc.message, field=exc.column or exc.field, code="mapping") from None
        mapped = set(mapping.columns.values())
        if options.mode == "update" and (options.key or "id") not in mapped:
            raise ImportError_(f"an update needs a column mapped to {options.key or 'id'}", field="key")
        if options.mode == "upsert" and options.key not in mapped:
            raise ImportError_(f"an upsert needs a column mapped to its key {options.key}", field="key")
        return mapping

    def start(self, path: str | Path, entity: str, options: Options, *, user_id: int | None, access: Any = None,
              dry_run: bool = False, name: str | None = None, run: bool = True) -> int:
        """Check the file and options, keep a copy of the file, record the job; queue it (``run``)."""
        if access is not None:
            for op in ("import", *{"create": ("create",), "update": ("update",)}.get(options.mode,
                                                                                      ("create", "update"))):
                if entity in self.records.model.entities:
                    access.require(entity, op)
        name = name or Path(path).name
        table = self.open(path, options, name)
        mapping = self.check(entity, options, table.headers, access)
        options.mapping = mapping.as_json()
        options.encoding, options.delimiter, options.sheet = table.encoding, table.delimiter, table.sheet
        options.rows = sum(1 for _ in table.rows())
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = self.folder / f"{uuid.uuid4().hex}{Path(name).suffix.lower()}"
        shutil.copyfile(path, kept)
        now = datetime.now(timezone.utc)
        with self.db.write() as conn:
            job_id = conn.execute(self.jobs.insert().values(
                user_id=user_id, entity=entity, status=QUEUED, dry_run=dry_run, options=options.as_json(),
                file_name=name[:255], file_path=str(kept), created_at=now)).inserted_primary_key[0]
            if not options.automations:
                from engine.security.audit import audit

                audit(self.records, "admin_bypass", user_id=user_id, entity=entity, conn=conn,
                      detail={"import": job_id, "skipped": "automations"})
        if run and self.worker is not None:
            self.worker.submit(job_id)
        return job_id

    # -- running ------------------------------------------------------------------------------------
    def claim(self, job_id: int) -> dict | None:
        """Take job ``job_id`` to run it: queued, or running with a stale heartbeat (its runner died)."""
        now = datetime.now(timezone.utc)
        j = self.jobs
        with self.db.write() as conn:
            taken = conn.execute(j.update().where(j.c.id == job_id, sa.or_(
                j.c.status == QUEUED, sa.and_(j.c.status == RUNNING, sa.or_(j.c.heartbeat.is_(None),
                                                                            j.c.heartbeat < now - STALE))))
                                 .values(status=RUNNING, heartbeat=now,
                                         started_at=sa.func.coalesce(j.c.started_at, now))).rowcount
            if taken != 1:
                return None
            return dict(conn.execute(sa.select(j).where(j.c.id == job_id)).one()._mapping)

    def run(self, job_id: int, *, force: bool = False, progress=None) -> dict:
        """Run (or resume) job ``job_id`` to its end; ``force`` takes a running job at once (``crm import
        resume`` after a crash). ``progress(done)`` is called after each chunk. Returns the job."""
        job = self.claim(job_id)
        if job is None and force:
            with self.db.write() as conn:
                conn.execute(self.jobs.update().where(self.jobs.c.id == job_id, self.jobs.c.status == RUNNING)
                             .values(heartbeat=None))
            job = self.claim(job_id)
        if job is None:
            return self.get(job_id)
        try:
            self._run(job, progress)
        except Exception as exc:   # noqa: BLE001 - the job records why it stopped
            self._finish(job_id, FAILED, error=str(exc))
        return self.get(job_id)

    def _run(self, job: dict, progress) -> None:
        options = Options(**job["options"])
        user_id = job["user_id"]
        access = None
        if user_id is not None:
            from engine.security.permissions import access_for

            access = access_for(self.records, user_id)
        context = Context(user_id=user_id, access=access, automations=options.automations)
        table = self.open(job["file_path"], options, job["file_name"])
        writer = ChunkWriter(self.records, job["entity"], table.headers, Mapping.from_json(options.mapping),
                             mode=options.mode, key=options.key, unresolved=options.unresolved,
                             locale=options.locale, context=context, runtime=self.runtime,
                             duplicates=options.duplicates)
        if job["dry_run"]:   # unique values across its chunks (each is rolled back)
            writer.dry_uniques = {}
        done, started = job["checkpoint"], time.monotonic()
        chunk: list = []
        for item in table.rows(skip=done):
            chunk.append(item)
            if len(chunk) >= CHUNK:
                if not self._chunk(job, writer, chunk, started):
                    return
                done += len(chunk)
                chunk = []
                if progress is not None:
                    progress(done)
        if chunk and not self._chunk(job, writer, chunk, started):
            return
        if progress is not None:
            progress(done + len(chunk))
        self._finish(job["id"], DONE)

    def _chunk(self, job: dict, writer: ChunkWriter, chunk: list, started: float) -> bool:
        """Write one chunk with its outcomes and checkpoint; False when the job was cancelled."""
        j = self.jobs
        with self.db.read() as conn:
            if conn.execute(sa.select(j.c.cancel).where(j.c.id == job["id"])).scalar():
                self._finish(job["id"], CANCELLED)
                return False
        outcomes: list[Outcome] = []
        try:
            with self.db.write() as conn:
                outcomes = writer.write(conn, chunk)
                if job["dry_run"]:
                    raise _DryRun
                self._record(conn, job, outcomes, started)
        except _DryRun:
            with self.db.write() as conn:
                self._record(conn, job, outcomes, started)
        failpoints.hit("import:after-chunk")
        return True

    def _record(self, conn, job: dict, outcomes: list[Outcome], started: float) -> None:
        """The outcome rows (a dry run keeps only the rejected ones), counts and checkpoint of a chunk."""
        keep = [o for o in outcomes if o.status == "error" or (not job["dry_run"] and o.status != "unchanged")]
        if keep:
            conn.execute(self.rows.insert(), [
                {"import_id": job["id"], "row": o.row, "status": o.status, "record_id": o.record_id,
                 "version": o.version, "previous": o.previous,
                 "cells": o.cells if o.status == "error" else None,
                 "errors": o.errors or None} for o in keep])
        counts = {c: 0 for c in COUNTS}
        for o in outcomes:
            counts["failed" if o.status == "error" else o.status] += 1
        j = self.jobs
        conn.execute(j.update().where(j.c.id == job["id"]).values(
            checkpoint=j.c.checkpoint + len(outcomes), heartbeat=datetime.now(timezone.utc),
            **{c: j.c[c] + n for c, n in counts.items() if n}))

    def _finish(self, job_id: int, status: str, *, error: str | None = None) -> None:
        j = self.jobs
        now = datetime.now(timezone.utc)
        with self.db.write() as conn:
            started = conn.execute(sa.select(j.c.started_at).where(j.c.id == job_id)).scalar()
            conn.execute(j.update().where(j.c.id == job_id).values(
                status=status, error=error, finished_at=now, heartbeat=now,
                seconds=(now - started).total_seconds() if started else 0))

    def cancel(self, job_id: int) -> dict:
        j = self.jobs
        with self.db.write() as conn:
            conn.execute(j.update().where(j.c.id == job_id, j.c.status.in_((QUEUED, RUNNING))).values(cancel=True))
            conn.execute(j.update().where(j.c.id == job_id, j.c.status == QUEUED).values(status=CANCELLED))
        return self.get(job_id)

    def resume_stale(self) -> int:
        """Run again every job whose runner died (the scheduler calls this): how many were resumed."""
        j = self.jobs
        cutoff = datetime.now(timezone.utc) - STALE
        with self.db.read() as conn:
            ids = list(conn.execute(sa.select(j.c.id).where(sa.or_(   # (a fresh queued job is its starter's)
                sa.and_(j.c.status == QUEUED, j.c.created_at < cutoff),
                sa.and_(j.c.status == RUNNING, j.c.heartbeat < cutoff)))).scalars())
        for job_id in ids:
            if self.worker is not None:
                self.worker.submit(job_id)
        return len(ids)

    # -- reading ------------------------------------------------------------------------------------
    def get(self, job_id: int) -> dict | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(self.jobs).where(self.jobs.c.id == job_id)).first()
        return dict(row._mapping) if row is not None else None

    def list(self, *, user_id: int | None = None, limit: int = 50) -> list[dict]:
        stmt = sa.select(self.jobs).order_by(self.jobs.c.id.desc()).limit(limit)
        if user_id is not None:
            stmt = stmt.where(self.jobs.c.user_id == user_id)
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def first_errors(self, job_id: int, per_column: int = 5, scan: int = 500) -> dict[str, list[dict]]:
        """Up to ``per_column`` errors per column (of the first ``scan`` rejected rows)."""
        r = self.rows
        out: dict[str, list[dict]] = {}
        with self.db.read() as conn:
            stmt = (sa.select(r.c.row, r.c.errors).where(r.c.import_id == job_id, r.c.status == "error")
                    .order_by(r.c.row).limit(scan))
            for row, errors in conn.execute(stmt):
                for e in errors or ():
                    bucket = out.setdefault(e.get("column") or "(row)", [])
                    if len(bucket) < per_column:
                        bucket.append({"row": row, "field": e.get("field"), "message": e.get("message")})
        return out


def progress_of(job: dict) -> dict:
    """Rows done, rate (rows/s) and seconds left of a job (as the API and the CLI show them)."""
    done = job["checkpoint"]
    elapsed = job["seconds"] if job["finished_at"] else (
        (datetime.now(timezone.utc) - job["started_at"]).total_seconds() if job["started_at"] else 0)
    rate = done / elapsed if elapsed > 0 else None
    total = (job["options"] or {}).get("rows")
    left = (total - done) / rate if rate and total else None
    return {"rows_done": done, "rows_total": total, "rate": round(rate, 1) if rate else None,
            "seconds_left": round(left, 1) if left is not None else None}
