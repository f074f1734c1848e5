"""The import's own tables (declared through ``crm_tables`` by plugin.py).

* ``_crm_import``: one row per import job: who, which entity, its options (mapping, mode, key,
  locale...), the uploaded file (a path under the var dir), status, counts, and ``checkpoint``: the
  data rows already committed, so a restarted job goes on after them (never twice).
* ``_crm_import_row``: the outcome of each row that wrote or failed: record id and the version the
  import left it at, the previous values of the fields an update changed (for revert), the original
  cells and errors of a rejected row (for the error file).
* ``_crm_import_mapping``: mappings saved per entity under a name.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.storage.tables import Id

#: Statuses of an import job.
QUEUED, RUNNING, DONE, FAILED, CANCELLED, REVERTED = "queued", "running", "done", "failed", "cancelled", "reverted"
COUNTS = ("created", "updated", "unchanged", "failed")


def declare(md: sa.MetaData) -> None:
    job = sa.Table("_crm_import", md,
                   sa.Column("id", Id, primary_key=True, autoincrement=True),
                   sa.Column("user_id", sa.BigInteger()),
                   sa.Column("entity", sa.String(64), nullable=False),
                   sa.Column("status", sa.String(16), nullable=False),
                   sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false()),
                   sa.Column("options", sa.JSON(), nullable=False),
                   sa.Column("file_name", sa.String(255), nullable=False),
                   sa.Column("file_path", sa.Text(), nullable=False),
                   sa.Column("checkpoint", sa.BigInteger(), nullable=False, server_default="0"),
                   *(sa.Column(c, sa.BigInteger(), nullable=False, server_default="0") for c in COUNTS),
                   sa.Column("cancel", sa.Boolean(), nullable=False, server_default=sa.false()),
                   sa.Column("error", sa.Text()),
                   sa.Column("created_at", UtcDateTime(), nullable=False),
                   sa.Column("started_at", UtcDateTime()),
                   sa.Column("heartbeat", UtcDateTime()),
                   sa.Column("finished_at", UtcDateTime()),
                   sa.Column("seconds", sa.Float(), nullable=False, server_default="0"))
    sa.Index("ix__crm_import_user", job.c.user_id, job.c.id)
    sa.Index("ix__crm_import_status", job.c.status)
    row = sa.Table("_crm_import_row", md,
                   sa.Column("import_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                   sa.Column("row", sa.BigInteger(), primary_key=True, autoincrement=False),
                   sa.Column("status", sa.String(16), nullable=False),
                   sa.Column("record_id", sa.BigInteger()),
                   sa.Column("version", sa.BigInteger()),
                   sa.Column("previous", sa.JSON()),
                   sa.Column("cells", sa.JSON()),
                   sa.Column("errors", sa.JSON()))
    sa.Index("ix__crm_import_row_status", row.c.import_id, row.c.status)
    sa.Table("_crm_import_mapping", md,
             sa.Column("entity", sa.String(64), primary_key=True),
             sa.Column("name", sa.String(64), primary_key=True),
             sa.Column("mapping", sa.JSON(), nullable=False),
             sa.Column("user_id", sa.BigInteger()),
             sa.Column("updated_at", UtcDateTime(), nullable=False))
