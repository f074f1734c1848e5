"""``GET /api/v1/_quality/{entity}``: the data-quality report as JSON (the page's twin), for admins and
users whose role may read and import the entity; mounted by the ``quality`` default plugin."""

from __future__ import annotations

from dataclasses import asdict

from flask import Blueprint, g

from engine.api import extend as api
from engine.api.extend import ApiError

from .service import may_check, quality_report


def blueprint() -> Blueprint:
    bp = api.api_routes("quality_api", __name__)
    bp.add_url_rule("/_quality/<entity>", "report", _report, methods=["GET"])
    return bp


def _report(entity: str):
    runtime = api.runtime()
    if entity not in runtime.model.entities or not g.access.can(entity, "read"):
        raise ApiError(404, "Not found", f"no entity {entity!r}")
    if not may_check(g.access, entity):
        raise ApiError(403, "Forbidden", f"the data-quality report of {entity} needs the import permission on it")
    report = quality_report(runtime, runtime.model.entity(entity), g.access, api.context())
    return api.json_response({
        "entity": report.entity, "total": report.total, "scanned": report.scanned,
        "complete_scan": report.complete_scan,
        "fields": [{"field": f.field, "filled": f.filled, "percent": f.percent} for f in report.fills],
        "invalid": [asdict(i) for i in report.invalid],
        "duplicates": report.duplicates,
    })


def openapi_fragment() -> dict:
    """The report's path as OpenAPI."""
    from engine.api.openapi import error_responses, json_object

    count = {"type": "integer", "minimum": 0}
    ids = {"type": "array", "items": {"type": "integer"}}
    return {"paths": {"/api/v1/_quality/{entity}": {"get": {
        "tags": ["quality"], "operationId": "quality_report",
        "summary": "Completeness, invalid values and duplicate groups of an entity's records you may see",
        "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The report", "content": json_object({
            "entity": {"type": "string"}, "total": count, "scanned": count, "complete_scan": {"type": "boolean"},
            "fields": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "filled": count, "percent": {"type": "number"}}}},
            "invalid": {"type": "array", "items": {"type": "object", "properties": {
                "field": {"type": "string"}, "checked": count, "invalid": count, "unnormalised": count,
                "invalid_ids": ids, "unnormalised_ids": ids, "reasons": {"type": "array", "items": {"type": "string"}}}}},
            "duplicates": {"type": ["array", "null"], "items": {"type": "object", "properties": {
                "rule": {"type": "string"}, "ids": ids}}}})},
            **error_responses("401", "403", "404")}}}}}
