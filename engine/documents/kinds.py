"""The metadata of documents, as a default plugin gives it to the loader (``"documents.kinds"``): the
``document`` kind, its JSON Schema and its check (each problem at the file:line of what it names; a
jinja syntax error at the template file's own line). It loads even when ``"documents"`` is off."""

from __future__ import annotations

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_documents


def check_documents(*, model, documents: list, problems) -> None:
    """Every document compiles: its entity, lines, sort, filename field and template (which parses)."""
    found, template_problems = compile_documents(model, documents)[1:]
    report_documents("document", documents, problems, found)
    for location, message in template_problems:
        problems.add(location, message)


@hookimpl
def crm_document_kinds():
    return [DocumentKind("document", SCHEMA_DIR / "document.schema.json", check_documents)]
