"""Files of records: upload (checked, scanned, stored), list, open, delete; the ``_crm_file`` table.

One row per stored file: the record it belongs to (``entity``, ``record_id``), the file field it fills
(``field``; empty for an attachment), the name as given (made safe: no path, no control characters),
the type sniffed from its first bytes, its size and SHA-256, who uploaded it and when, and the random
``key`` of its bytes in the store. Whoever calls these checks the caller's rights first (``api.py``).

An upload is copied in chunks to a temporary file (counting its size: past the limit it stops and is
refused), sniffed, offered to the ``crm_scan_file`` hooks, then put in the store; the row and the
``file_uploaded`` audit row are written in one transaction. Nothing is read into memory whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.security.audit import audit
from engine.storage.tables import Id

from .storage import CHUNK, new_key

TABLE = "_crm_file"
#: Extensions an attachment may have when the site names none (CRM_FILES_TYPES).
DEFAULT_TYPES = ("pdf", "png", "jpg", "jpeg", "gif", "webp", "txt", "csv", "docx", "xlsx", "pptx", "doc", "xls",
                 "ppt", "odt", "ods", "zip", "eml", "msg")
#: What the first bytes of a file with each extension must be (sniffed, not the client's Content-Type).
EXPECTED = {
    "pdf": {"application/pdf"}, "png": {"image/png"}, "jpg": {"image/jpeg"}, "jpeg": {"image/jpeg"},
    "gif": {"image/gif"}, "webp": {"image/webp"}, "txt": {"text/plain"}, "csv": {"text/plain"},
    "eml": {"text/plain"}, "docx": {"application/zip"}, "xlsx": {"application/zip"}, "pptx": {"application/zip"},
    "odt": {"application/zip"}, "ods": {"application/zip"}, "zip": {"application/zip"},
    "doc": {"application/x-ole-storage"}, "xls": {"application/x-ole-storage"},
    "ppt": {"application/x-ole-storage"}, "msg": {"application/x-ole-storage"},
}
#: The type a download is served as, by extension, once the sniffed type agreed.
SERVED = {"pdf": "application/pdf", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
          "gif": "image/gif", "webp": "image/webp", "txt": "text/plain; charset=utf-8", "csv": "text/csv; charset=utf-8",
          "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
          "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
          "zip": "application/zip", "doc": "application/msword", "xls": "application/vnd.ms-excel"}
#: Shown in the browser (never HTML or SVG: they could run script on the site's origin).
INLINE = frozenset({"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
MAX_NAME = 200


def define_table(metadata: sa.MetaData) -> sa.Table:
    table = sa.Table(TABLE, metadata,
                     sa.Column("id", Id, primary_key=True, autoincrement=True),
                     sa.Column("key", sa.String(80), nullable=False, unique=True),
                     sa.Column("entity", sa.String(64), nullable=False),
                     sa.Column("record_id", sa.BigInteger()),
                     sa.Column("field", sa.String(64), nullable=False, default=""),
                     sa.Column("name", sa.String(255), nullable=False),
                     sa.Column("mime", sa.String(100), nullable=False),
                     sa.Column("size", sa.BigInteger(), nullable=False),
                     sa.Column("sha256", sa.String(64), nullable=False),
                     sa.Column("uploaded_by", sa.BigInteger()),
                     sa.Column("uploaded_at", UtcDateTime(), nullable=False))
    sa.Index("ix__crm_file_record", table.c.entity, table.c.record_id)
    return table


class FileRefused(Exception):
    """An upload refused: ``message`` names the limit (shown to the user as it is); ``status`` for the API."""

    def __init__(self, message: str, *, code: str = "refused", status: int = 422):
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class Limits:
    """What an upload may be: at most ``max_size`` bytes, one of ``types`` (extensions)."""

    max_size: int
    types: tuple[str, ...]


def safe_name(name: str | None) -> str:
    """The name as shown and offered on download: the last part of any path, no control characters,
    no leading dots or spaces; ``FileRefused`` when nothing usable is left."""
    text = unicodedata.normalize("NFC", str(name or ""))
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C")
    text = text.strip().lstrip(". ").strip()
    if len(text) > MAX_NAME:
        stem, dot, ext = text.rpartition(".")
        text = (stem[:MAX_NAME - len(ext) - 1] + "." + ext) if dot and len(ext) <= 10 else text[:MAX_NAME]
    if not text or "." not in text.strip("."):
        raise FileRefused(f"the file name {str(name or '')[:80]!r} is not usable: give the file a name with an "
                          "extension such as .pdf", code="name")
    return text


def extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def sniff(head: bytes) -> str:
    """The type the first bytes say (a small magic-number table: what the allowed types need)."""
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "application/zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "application/x-ole-storage"
    if b"\x00" in head:
        return "application/octet-stream"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:   # not merely a character cut at the end of the sample
            return "application/octet-stream"
        text = head[:exc.start].decode("utf-8")
    lowered = text.lstrip("\ufeff \t\r\n").lower()
    if lowered.startswith(("<!doctype html", "<html", "<script", "<head", "<body", "<iframe")) or "<script" in lowered:
        return "text/html"
    if lowered.startswith("<svg") or ("<svg" in lowered and lowered.startswith("<?xml")):
        return "image/svg+xml"
    return "text/plain"


def human_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


class FileService:
    """The files of one runtime: its store, its limits, its table."""

    def __init__(self, runtime, store):
        self.runtime, self.store = runtime, store
        settings = runtime.settings
        self.default_limits = Limits(settings.files_max_size, settings.files_types or DEFAULT_TYPES)
        self.tmp = Path(settings.var_dir) / "tmp"

    @property
    def table(self) -> sa.Table:
        return self.runtime.records.metadata.tables[TABLE]

    def limits_of(self, ent, field: str = "") -> Limits:
        """A file field's ``max_size`` / ``types`` (docs/metadata.md#file-fields), else the site's."""
        if not field:
            return self.default_limits
        f = ent.fields[field]
        return Limits(f.prop("max_size") or self.default_limits.max_size,
                      tuple(t.lower().lstrip(".") for t in (f.prop("types") or ())) or self.default_limits.types)

    # -- writes --------------------------------------------------------------------------------
    def upload(self, ent, record_id: int | None, source: BinaryIO, name: str | None, *, user_id: int | None,
               field: str = "") -> dict:
        limits = self.limits_of(ent, field)
        clean = safe_name(name)
        ext = extension(clean)
        if ext not in limits.types:
            raise FileRefused(f"{clean}: files of type .{ext} are not allowed here (allowed: "
                              f"{', '.join('.' + t for t in limits.types)})", code="type", status=415)
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        try:
            digest, size, head = hashlib.sha256(), 0, b""
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > limits.max_size:
                        raise FileRefused(f"{clean} is larger than the limit of {human_size(limits.max_size)}",
                                          code="size", status=413)
                    if len(head) < 4096:
                        head += chunk[:4096 - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise FileRefused(f"{clean} is empty", code="empty")
            mime = sniff(head)
            expected = EXPECTED.get(ext)
            if mime in ("text/html", "image/svg+xml") or (expected is not None and mime not in expected):
                raise FileRefused(f"{clean}: the content is not a .{ext} file (it looks like {mime}); "
                                  f"allowed: {', '.join('.' + t for t in limits.types)}", code="type", status=415)
            for verdict in self.runtime.pm.hook.crm_scan_file(name=clean, mime=mime, path=tmp):
                if verdict:
                    raise FileRefused(f"{clean} was refused by the virus scan: {verdict}", code="scan")
            key = new_key()
            with open(tmp, "rb") as stored:
                self.store.put(key, stored)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        row = dict(key=key, entity=ent.name, record_id=record_id, field=field, name=clean,
                   mime=SERVED.get(ext, mime), size=size, sha256=digest.hexdigest(), uploaded_by=user_id,
                   uploaded_at=datetime.now(timezone.utc))
        records = self.runtime.records
        try:
            with records.db.write() as conn:
                row["id"] = conn.execute(self.table.insert().values(**row)).inserted_primary_key[0]
                audit(records, "file_uploaded", user_id=user_id, entity=ent.name, record_id=record_id, conn=conn,
                      detail={"file": row["id"], "name": clean, "size": size, "field": field or None})
        except BaseException:
            self.store.delete(key)
            raise
        return row

    def delete(self, row: dict, *, user_id: int | None) -> None:
        records = self.runtime.records
        with records.db.write() as conn:
            conn.execute(self.table.delete().where(self.table.c.id == row["id"]))
            audit(records, "file_deleted", user_id=user_id, entity=row["entity"], record_id=row["record_id"],
                  conn=conn, detail={"file": row["id"], "name": row["name"], "field": row["field"] or None})
        self.store.delete(row["key"])

    def forget_record(self, entity: str, record_id: int) -> int:
        """Remove every file of a deleted record (rows, then bytes)."""
        return self._remove(sa.and_(self.table.c.entity == entity, self.table.c.record_id == record_id))

    def remove_ids(self, file_ids: list[int]) -> int:
        return self._remove(self.table.c.id.in_(file_ids))

    def _remove(self, condition) -> int:
        with self.runtime.records.db.write() as conn:
            keys = [r.key for r in conn.execute(sa.select(self.table.c.key).where(condition))]
            if keys:
                conn.execute(self.table.delete().where(condition))
        for key in keys:
            self.store.delete(key)
        return len(keys)

    def sweep(self, *, limit: int = 500) -> int:
        """Files whose record is gone (deleted by a bulk delete, which runs no write hooks) are removed."""
        records, removed = self.runtime.records, 0
        with records.db.read() as conn:
            pairs = conn.execute(sa.select(self.table.c.entity, self.table.c.record_id)
                                 .where(self.table.c.record_id.is_not(None)).distinct().limit(limit)).all()
        gone: dict[str, list[int]] = {}
        by_entity: dict[str, set[int]] = {}
        for entity, record_id in pairs:
            by_entity.setdefault(entity, set()).add(record_id)
        with records.db.read() as conn:
            for entity, ids in by_entity.items():
                if entity not in records.model.entities:
                    gone[entity] = sorted(ids)
                    continue
                table = records.table(entity)
                alive = {r[0] for r in conn.execute(sa.select(table.c.id).where(table.c.id.in_(sorted(ids))))}
                gone[entity] = sorted(ids - alive)
        for entity, ids in gone.items():
            if ids:
                removed += self._remove(sa.and_(self.table.c.entity == entity, self.table.c.record_id.in_(ids)))
        return removed

    # -- reads ---------------------------------------------------------------------------------
    def of_record(self, entity: str, record_id: int, *, field: str = "") -> list[dict]:
        t = self.table
        with self.runtime.records.db.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.entity == entity, t.c.record_id == record_id, t.c.field == field)
                                .order_by(t.c.uploaded_at.desc(), t.c.id.desc())).all()
        return [dict(r._mapping) for r in rows]

    def find(self, file_id: int) -> dict | None:
        with self.runtime.records.db.read() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == file_id)).first()
        return dict(row._mapping) if row is not None else None
