"""The metadata and tables of the agenda, as a default plugin gives them (``"agenda.kinds"``): the
``agenda`` document kind, its JSON Schema and check, and two tables: the records each user viewed
last (``_crm_recent_view``) and the reminders already sent (``_crm_reminder_sent``, so each goes once)."""

from __future__ import annotations

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_agenda

RECENT = "_crm_recent_view"
SENT = "_crm_reminder_sent"


def check_agenda(*, model, documents: list, problems, functions=None) -> None:
    report_documents("agenda", documents, problems, compile_agenda(model)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("agenda", SCHEMA_DIR / "agenda.schema.json", check_agenda)]


@hookimpl
def crm_tables(metadata) -> None:
    recent = sa.Table(RECENT, metadata,
                      sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                      sa.Column("entity", sa.String(64), primary_key=True),
                      sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                      sa.Column("viewed_at", UtcDateTime(), nullable=False))
    sa.Index("ix__crm_recent_view_user", recent.c.user_id, recent.c.viewed_at)
    sa.Table(SENT, metadata,
             sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
             sa.Column("field", sa.String(64), primary_key=True),
             sa.Column("due_at", UtcDateTime(), primary_key=True),
             sa.Column("user_id", sa.BigInteger(), nullable=False),
             sa.Column("sent_at", UtcDateTime(), nullable=False))
