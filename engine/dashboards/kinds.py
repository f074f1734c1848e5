"""The dashboards' metadata, as a default plugin gives it to the loader: the ``dashboard`` document
kind, its JSON Schema and its check (widgets name entities, fields they can aggregate, filters
that run in SQL), each problem at the file:line of what it names.
"""

from __future__ import annotations

from engine.metadata.declared import doc_location
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from . import compile_dashboards


def check_dashboards(*, model, documents: list, problems, functions=None) -> None:
    """Every dashboard document compiles."""
    for p in compile_dashboards(model, functions)[1]:
        doc = documents[p.doc]
        problems.add(doc_location(doc, p.path), f"dashboard {doc.data['dashboard']}: {p.message}")


@hookimpl
def crm_document_kinds():
    return [DocumentKind("dashboard", SCHEMA_DIR / "dashboard.schema.json", check_dashboards)]
