"""The metadata of ``follow_up``, as a default plugin gives it to the loader (``"follow_up.kinds"``): the
``follow_up`` document kind, its JSON Schema and its check, each problem at the file:line of what it
names. It loads even when ``"follow_up"`` is turned off."""

from __future__ import annotations

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_follow_ups


def check_follow_ups(*, model, documents: list, problems, functions=None) -> None:
    """Every follow_up document compiles: its activity entity, links, via lookups, formulas and targets."""
    report_documents("follow_up", documents, problems, compile_follow_ups(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("follow_up", SCHEMA_DIR / "follow_up.schema.json", check_follow_ups)]
