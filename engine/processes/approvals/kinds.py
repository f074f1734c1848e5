"""The metadata of approvals, as a default plugin gives it to the loader (``"approvals.kinds"``): the
``approval`` document kind, its JSON Schema and its check (each problem at the file:line of what it
names), and the approvals' own tables. It loads even when ``"approvals"`` is turned off, so a site's
metadata stays valid and its approval history stays."""

from __future__ import annotations

import sqlalchemy as sa

from engine.fields.sqltypes import UtcDateTime
from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl
from engine.storage.tables import Id

from .spec import compile_approvals


def check_approvals(*, model, documents: list, problems, functions=None) -> None:
    """Every approval document compiles: its entity, submitters, status field, steps and conditions."""
    report_documents("approval", documents, problems, compile_approvals(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("approval", SCHEMA_DIR / "approval.schema.json", check_approvals)]


@hookimpl
def crm_tables(metadata) -> None:
    """``_crm_approval``: one row per submission of a record (its process, status, current step and a
    version every decision moves, so two concurrent decisions cannot both win); ``_crm_approval_step``:
    one row per approver of each step reached (pending, approved, rejected, cancelled) and one per
    skipped step, with who, when and the comment: the history and the approvers' inbox."""
    approval = sa.Table("_crm_approval", metadata,
                        sa.Column("id", Id, primary_key=True, autoincrement=True),
                        sa.Column("process", sa.String(64), nullable=False),
                        sa.Column("entity", sa.String(64), nullable=False),
                        sa.Column("record_id", sa.BigInteger(), nullable=False),
                        sa.Column("status", sa.String(16), nullable=False),
                        sa.Column("step", sa.Integer(), nullable=False),
                        sa.Column("submitted_by", sa.BigInteger()),
                        sa.Column("submitted_at", UtcDateTime(), nullable=False),
                        sa.Column("comment", sa.Text()),
                        sa.Column("decided_at", UtcDateTime()),
                        sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    sa.Index("ix__crm_approval_record", approval.c.entity, approval.c.record_id, approval.c.status)
    step = sa.Table("_crm_approval_step", metadata,
                    sa.Column("id", Id, primary_key=True, autoincrement=True),
                    sa.Column("approval_id", sa.BigInteger(), nullable=False),
                    sa.Column("step", sa.Integer(), nullable=False),
                    sa.Column("name", sa.String(64), nullable=False),
                    sa.Column("approver_id", sa.BigInteger()),
                    sa.Column("decision", sa.String(16), nullable=False),
                    sa.Column("comment", sa.Text()),
                    sa.Column("created_at", UtcDateTime(), nullable=False),
                    sa.Column("decided_at", UtcDateTime()))
    sa.Index("ix__crm_approval_step_approval", step.c.approval_id, step.c.step)
    sa.Index("ix__crm_approval_step_inbox", step.c.approver_id, step.c.decision)
