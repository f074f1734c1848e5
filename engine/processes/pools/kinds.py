"""The metadata of ``pools``, as a default plugin gives it to the loader (``"pools.kinds"``): the
``pool`` document kind, its JSON Schema and its check (each problem at the file:line of what it
names). It loads even when ``"pools"`` is turned off, so a site's metadata stays valid."""

from __future__ import annotations

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_pools


def check_pools(*, model, documents: list, problems, functions=None) -> None:
    """Every pool document compiles: its entity, members, roles, limits and recycle rules."""
    report_documents("pool", documents, problems, compile_pools(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("pool", SCHEMA_DIR / "pool.schema.json", check_pools)]
