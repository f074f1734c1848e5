"""The ``file`` field type: a field holding one stored file (the id of its ``_crm_file`` row).

A client uploads the file first (``POST /api/v1/{entity}/_files/{field}``, checked against the
field's ``max_size`` and ``types``), then sets the field to the id it got back on create or update.
The write hook below accepts only an id uploaded for this entity and field, by this user (or already
this record's); after the write the file belongs to the record. A replaced or cleared file is removed
once the update commits.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.fields.base import FieldType, FieldValueError, whole_number
from engine.storage.errors import FieldError

from .service import TABLE


class FileType(FieldType):
    name = "file"
    formula_type = "number"
    widget = "file"
    props = {"max_size": {"type": "integer", "minimum": 1},
             "types": {"type": "array", "items": {"type": "string", "pattern": r"^\.?[A-Za-z0-9]{1,10}$"},
                       "minItems": 1}}
    common = frozenset({"type", "label", "help", "required", "readonly", "track_history", "renamed_from",
                        "required_when", "visible_when", "readonly_when"})

    def column_type(self, field):
        return sa.BigInteger()

    def signature(self, field):
        return ["file"]

    def coerce(self, field, value):
        if isinstance(value, bool):
            raise FieldValueError("type", "expected the id of an uploaded file")
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, str) and whole_number(value.strip()):
            return whole_number(value.strip())
        raise FieldValueError("type", "expected the id of an uploaded file (POST the file to _files/<field> first)")

    def json_schema(self, field):
        return {"type": "integer", "minimum": 1, "description": "the id of a file uploaded to _files/<field>"}

    def parse_csv(self, field, text):
        raise FieldValueError("type", "files cannot be imported from CSV")


def file_fields(entity) -> list[str]:
    return [n for n, f in entity.fields.items() if f.type.name == "file"]


def check_file_values(event, entity, record, old, context, conn, errors, state) -> None:
    """Each file field set to a new id must name a file uploaded for it (by this user, or this record's)."""
    if event not in ("create", "update"):
        return
    names = file_fields(entity)
    if not names:
        return
    table = sa.table(TABLE, sa.column("id"), sa.column("entity"), sa.column("field"), sa.column("record_id"),
                     sa.column("uploaded_by"))
    claims = []
    for name in names:
        value = record.get(name)
        if value is None or (old is not None and old.get(name) == value):
            continue
        row = conn.execute(sa.select(table).where(table.c.id == value)).first()
        own = row is not None and row.entity == entity.name and row.field == name and (
            (row.record_id is None and (context.system or context.access is None or row.uploaded_by == context.user_id))
            or (old is not None and row.record_id == old.get("id")))
        if not own:
            errors.append(FieldError(name, "invalid", f"{value} is not a file uploaded for {entity.name}.{name}"))
        elif row.record_id is None:
            claims.append(value)
    if claims:
        state["files.claim"] = claims


def claim_files(event, entity, record, conn, state) -> None:
    claims = state.get("files.claim")
    if claims:
        table = sa.table(TABLE, sa.column("id"), sa.column("record_id"))
        conn.execute(table.update().where(table.c.id.in_(claims), table.c.record_id.is_(None))
                     .values(record_id=record["id"]))


def replaced_files(entity, record, old) -> list[int]:
    """Ids a committed update no longer holds (replaced or cleared)."""
    if old is None:
        return []
    return [old[n] for n in file_fields(entity) if old.get(n) and old.get(n) != record.get(n)]
