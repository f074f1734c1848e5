"""The metadata of ``pools``, as a default plugin gives it to the loader (``"pools.kinds"``): the
``pool`` document kind, its JSON Schema and its check (each problem at the file:line of what it
names). It loads even when ``"pools"`` is turned off, so a site's metadata stays valid."""

from __future__ import annotations

from engine.metadata.declared import doc_location
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .spec import compile_pools


def check_pools(*, model, documents: list, problems, functions=None) -> None:
    """Every pool document compiles: its entity, members, roles, limits and recycle rules."""
    for p in compile_pools(model, functions)[1]:
        doc = documents[p.doc]
        problems.add(doc_location(doc, p.path), f"pool {doc.data['pool']}: {p.message}")


@hookimpl
def crm_document_kinds():
    return [DocumentKind("pool", SCHEMA_DIR / "pool.schema.json", check_pools)]
