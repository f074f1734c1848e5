"""The metadata of ``pools``, as a default plugin gives it to the loader (``"pools.kinds"``): the
``pool`` document kind, its JSON Schema and its check (each problem at the file:line of what it
names), and the pools' own tables. It loads even when ``"pools"`` is turned off, so a site's metadata
stays valid and its pool rows stay."""

from __future__ import annotations

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl
from engine.storage.tables import Id

from .spec import compile_pools


def check_pools(*, model, documents: list, problems, functions=None) -> None:
    """Every pool document compiles: its entity, members, roles, limits and recycle rules."""
    report_documents("pool", documents, problems, compile_pools(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("pool", SCHEMA_DIR / "pool.schema.json", check_pools)]


@hookimpl
def crm_tables(metadata) -> None:
    """Who holds which record from which pool and when it goes back (indexed by due and warning time,
    so the recycling job reads only what is due), every claim, assignment, return and recycle (daily
    counts, the re-claim window), and per-user limits."""
    md = metadata
    hold = sa.Table("_crm_pool_hold", md,
                    sa.Column("pool", sa.String(64), primary_key=True),
                    sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                    sa.Column("user_id", sa.BigInteger(), nullable=False),
                    sa.Column("claimed_at", UtcDateTime(), nullable=False),
                    sa.Column("due_at", UtcDateTime()),
                    sa.Column("warn_at", UtcDateTime()),
                    sa.Column("warned", sa.Boolean(), nullable=False, server_default=sa.false()))
    sa.Index("ix__crm_pool_hold_due_at", hold.c.due_at)
    sa.Index("ix__crm_pool_hold_warn_at", hold.c.warn_at)
    sa.Index("ix__crm_pool_hold_user", hold.c.pool, hold.c.user_id)
    event = sa.Table("_crm_pool_event", md,
                     sa.Column("id", Id, primary_key=True, autoincrement=True),
                     sa.Column("pool", sa.String(64), nullable=False),
                     sa.Column("record_id", sa.BigInteger(), nullable=False),
                     sa.Column("user_id", sa.BigInteger()),
                     sa.Column("actor_id", sa.BigInteger()),
                     sa.Column("action", sa.String(16), nullable=False),
                     sa.Column("reason", sa.String(64)),
                     sa.Column("note", sa.Text()),
                     sa.Column("at", UtcDateTime(), nullable=False))
    sa.Index("ix__crm_pool_event_user", event.c.pool, event.c.user_id, event.c.action, event.c.at)
    sa.Index("ix__crm_pool_event_record", event.c.pool, event.c.record_id, event.c.at)
    sa.Table("_crm_pool_limit", md,
             sa.Column("pool", sa.String(64), primary_key=True),
             sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
             sa.Column("owned", sa.Integer()),
             sa.Column("per_day", sa.Integer()),
             sa.Column("updated_at", UtcDateTime(), nullable=False))
