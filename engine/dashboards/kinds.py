"""The dashboards' metadata, as a default plugin gives it to the loader: the ``dashboard`` document
kind, its JSON Schema and its check (widgets name entities, fields they can aggregate, filters
that run in SQL), each problem at the file:line of what it names.
"""

from __future__ import annotations

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from . import compile_dashboards


def check_dashboards(*, model, documents: list, problems, functions=None) -> None:
    """Every dashboard document compiles."""
    report_documents("dashboard", documents, problems, compile_dashboards(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("dashboard", SCHEMA_DIR / "dashboard.schema.json", check_dashboards)]
