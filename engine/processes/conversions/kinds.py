"""The conversions' metadata, as a default plugin gives it to the loader (``"conversions.kinds"``):
the ``conversion`` document kind (its JSON Schema and its check) and the ``converted`` automation
trigger, so that the metadata of a site that turns ``"conversions"`` off still loads unchanged.
"""

from __future__ import annotations

from engine.metadata.declared import report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_conversions


def check_conversions(*, model, documents: list, problems, functions=None) -> None:
    """Every conversion document compiles: its entities, fields, matches, formulas and moves."""
    report_documents("conversion", documents, problems, compile_conversions(model, functions)[1])


@hookimpl
def crm_document_kinds():
    return [DocumentKind("conversion", SCHEMA_DIR / "conversion.schema.json", check_conversions)]


@hookimpl
def crm_automation_triggers():
    return ["converted"]
