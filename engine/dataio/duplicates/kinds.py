"""The metadata of ``duplicates``, as a default plugin gives it to the loader (``"duplicates.kinds"``):
the ``duplicate_rule`` document kind, its JSON Schema and its check (each problem at the file:line of
what it names), and the table of the records' duplicate keys. It loads even when ``"duplicates"`` is
turned off, so a site's metadata stays valid and its keys stay."""

from __future__ import annotations

import sqlalchemy as sa

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_rules

KEYS = "_crm_duplicate_key"
STATE = "_crm_duplicate_state"


def check_duplicate_rules(*, model, documents: list, problems, functions=None) -> None:
    """Every duplicate rule compiles: its entity, fields, normalisers, thresholds and region."""
    report_documents("duplicate_rule", documents, problems, compile_rules(model)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("duplicate_rule", SCHEMA_DIR / "duplicate_rule.schema.json", check_duplicate_rules)]


@hookimpl
def crm_tables(metadata) -> None:
    """The blocking keys of every record under every rule of its entity (``key``: the normalised value
    of an exact condition or a few characters of a fuzzy one; ``forms``: the record's normalised values,
    so scoring reads no record), kept by the write hooks; and, per entity, the rules' signature and the
    last id the backfill indexed."""
    keys = sa.Table(KEYS, metadata,
                    sa.Column("entity", sa.String(64), primary_key=True),
                    sa.Column("record_id", sa.BigInteger(), primary_key=True, autoincrement=False),
                    sa.Column("rule", sa.String(64), primary_key=True),
                    sa.Column("key", sa.String(200), primary_key=True),
                    sa.Column("forms", sa.Text(), nullable=False))
    # the primary key serves the writes (a record's keys); this index the checks and the scan
    sa.Index("ix__crm_duplicate_key_key", keys.c.entity, keys.c.rule, keys.c.key)
    sa.Table(STATE, metadata,
             sa.Column("entity", sa.String(64), primary_key=True),
             sa.Column("signature", sa.String(64), nullable=False),
             sa.Column("upto", sa.BigInteger(), nullable=False))
