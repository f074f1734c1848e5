"""Documents on the API and the record page.

``GET /api/v1/{entity}/{id}/_documents/{name}?lang=zh``: the record's document as a PDF, for a
caller who may read the record (fields they may not read are left blank in it); the language is
``lang``, else the web session's. Errors are problem+json, naming the document.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, Response, g, request, session

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses
from engine.fields import INT64_MAX
from engine.plugins import RecordAction

from .plugin import documents_of
from .service import DocumentError

LANGUAGES = ("en", "zh")


def blueprint(specs: dict) -> Blueprint:
    """One route per declared document (so the API's document lists exactly the ones there are)."""
    bp = api.api_routes("documents_api", __name__)
    for spec in specs.values():
        bp.add_url_rule(f"/{spec.entity}/<int:record_id>/_documents/{spec.name}", f"document_{spec.name}",
                        _document, methods=["GET"], defaults={"entity": spec.entity, "name": spec.name})
    return bp


def _document(entity: str, record_id: int, name: str):
    service = documents_of(api.runtime())
    if service is None:
        raise ApiError(404, "Not found", "documents are turned off on this server")
    ent = api.entity(entity)
    lang = request.args.get("lang") or session.get("lang") or "en"
    if lang not in LANGUAGES:
        raise ApiError(400, "Bad query", f"lang must be one of {', '.join(LANGUAGES)}", kind="bad-query",
                       errors=[{"field": "lang", "code": "enum", "message": "en or zh"}])
    g.lang = lang   # the texts the values show as (Yes/No...) in the document's language
    try:
        rendered = service.render(ent.name, record_id, name, context=api.context(), lang=lang)
    except DocumentError as exc:
        raise ApiError(exc.status, "Not found" if exc.status == 404 else "Document cannot be made", exc.message,
                       kind="document-not-found" if exc.status == 404 else "document-failed") from None
    return Response(rendered.content, mimetype=rendered.content_type, headers={
        "Content-Disposition": f"attachment; filename=\"{rendered.filename}\"; filename*=UTF-8''{quote(rendered.filename)}",
        "Cache-Control": "private, no-store"})


def download_actions(service, ent, record: dict, access) -> list[RecordAction]:
    """A download button per document of the entity (the record page is only shown to who may read it)."""
    if service is None:
        return []
    from engine.ui.i18n import current_lang

    lang = current_lang()
    return [RecordAction(key=f"document-{s.name}", label=s.label.get(lang), method="get", style="outline-secondary",
                         kind="document", order=80,
                         url=f"/api/v1/{ent.name}/{record['id']}/_documents/{s.name}?lang={lang}")
            for s in service.of(ent.name)]


def openapi_fragment(model, specs: dict) -> dict:
    paths: dict = {}
    for spec in specs.values():
        ent = model.entity(spec.entity)
        paths[f"/api/v1/{ent.name}/{{record_id}}/_documents/{spec.name}"] = {"get": {
            "tags": ["documents"], "operationId": f"document_{ent.name}_{spec.name}",
            "summary": f"{spec.label.get('en')}: the {ent.label.get('en')} as a PDF",
            "parameters": [
                {"name": "record_id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}},
                {"name": "lang", "in": "query", "required": False, "schema": {"type": "string", "enum": list(LANGUAGES)},
                 "description": "the document's language (default: the session's, else en)"}],
            "responses": {"200": {"description": "The PDF", "content": {"application/pdf": {
                "schema": {"type": "string", "format": "binary"}}}},
                **error_responses("400", "401", "404", "422")}}}
    return {"paths": paths, "tags": [{"name": "documents", "description": "Documents rendered from records (PDF)"}]}
