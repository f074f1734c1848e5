"""What a merge keeps so it can be undone: one row of ``_crm_merge`` per merge, and the stored rows it
holds as JSON (``encode_row`` / ``decode_row``).

A row holds the entity, the survivor and the merged ids, who merged and when, and a ``snapshot``:
the survivor's values before the merge, the merged records' full stored rows (ids and system
columns included), the children deleted because they would have duplicated one of the survivor's
(a unique key such as campaign + contact), every reference the merge moved (which record, which
field, from which merged record, and the values the move changed), and the versions the survivor
and each moved record had when the merge committed: undo refuses when one has moved since.

Values of encrypted fields stay encrypted in the snapshot (the site's keys, as in their own table).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.storage.tables import Id

TABLE = "_crm_merge"


def define_table(metadata: sa.MetaData) -> sa.Table:
    table = sa.Table(TABLE, metadata,
                     sa.Column("id", Id, primary_key=True, autoincrement=True),
                     sa.Column("entity", sa.String(64), nullable=False),
                     sa.Column("survivor_id", sa.BigInteger(), nullable=False),
                     sa.Column("merged_ids", sa.JSON(), nullable=False),
                     sa.Column("merged_by", sa.BigInteger()),
                     sa.Column("merged_at", UtcDateTime(), nullable=False),
                     sa.Column("undo_until", UtcDateTime(), nullable=False),
                     sa.Column("snapshot", sa.Text(), nullable=False),
                     sa.Column("undone_at", UtcDateTime()),
                     sa.Column("undone_by", sa.BigInteger()))
    sa.Index("ix__crm_merge_survivor", table.c.entity, table.c.survivor_id)
    return table


def encode_row(ent, row: dict) -> dict:
    """A stored row as JSON, each value tagged with its Python type so it comes back the same."""
    return {k: _encode(v, _aad(ent, k)) for k, v in row.items()}


def decode_row(ent, data: dict) -> dict:
    return {k: _decode(v, _aad(ent, k)) for k, v in data.items()}


def dumps(snapshot: dict) -> str:
    return json.dumps(snapshot, separators=(",", ":"))


def loads(text: str) -> dict:
    return json.loads(text)


def _aad(ent, name: str) -> str | None:
    """The associated data of an encrypted field's value in a snapshot (None: not encrypted)."""
    field = ent.fields.get(name)
    return f"{TABLE}:{ent.name}.{name}" if field is not None and field.prop("encrypted") else None


def _encode(value: Any, aad: str | None) -> Any:
    if value is None:
        return None
    if aad is not None:
        from engine.storage.crypto import keyring

        return {"$enc": keyring().encrypt(json.dumps(_encode(value, None)), aad)}
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):   # a Ref (entity, id)
        return {"$ref": str(value)}
    if isinstance(value, (dict, list)):
        return {"$json": value}
    return value


def _decode(value: Any, aad: str | None) -> Any:
    if not isinstance(value, dict):
        return value
    if "$enc" in value:
        from engine.storage.crypto import keyring

        return _decode(json.loads(keyring().decrypt(value["$enc"], aad or "")), None)
    if "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if "$d" in value:
        return date.fromisoformat(value["$d"])
    if "$dec" in value:
        return Decimal(value["$dec"])
    if "$ref" in value:
        from engine.fields.relation import Ref

        name, _, rid = value["$ref"].rpartition(":")
        return Ref(name, int(rid))
    if "$json" in value:
        return value["$json"]
    return value
