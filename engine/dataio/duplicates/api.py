"""Duplicates on the API (the same authentication and problem+json errors as every route), and the
OpenAPI fragment that documents them; mounted by the ``duplicates`` default plugin.

``GET /api/v1/_duplicates/{entity}``   groups of likely duplicates among the records the caller may
read (``rule=`` one rule, ``limit``/``offset`` a page of groups), the most alike first.

A create or update that matches a rule answers 409 ``duplicate`` with the candidates (see
``engine/api/errors.py``); repeat it with the header ``X-CRM-Duplicates: allow`` (or the query
parameter ``duplicates=allow``) to save past a ``warn`` rule (audited); a ``block`` rule still refuses.
"""

from __future__ import annotations

from flask import Blueprint, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses

from .plugin import service_of
from .scan import duplicate_groups, with_titles

MAX_PAGE = 500
MAX_OFFSET = 10**9


def blueprint() -> Blueprint:
    bp = api.api_routes("duplicates_api", __name__)
    bp.add_url_rule("/_duplicates/<entity>", "groups", _groups, methods=["GET"])
    return bp


def _groups(entity: str):
    runtime = api.runtime()
    if entity not in runtime.model.entities or not g.access.can(entity, "read"):
        raise ApiError(404, "Not found", f"there is no entity {entity!r} you may read")
    service = service_of(runtime)
    rules = {r.name for r in service.rules_of(entity)}
    rule = request.args.get("rule") or None
    if rule is not None and rule not in rules:
        raise ApiError(400, "Bad query", f"{entity} has no duplicate rule {rule!r} (rules: {', '.join(sorted(rules)) or 'none'})",
                       kind="bad-query", errors=[{"field": "rule", "code": "choice", "message": "no such rule"}])
    limit, offset = api.int_arg("limit", 100, 1, MAX_PAGE), api.int_arg("offset", 0, 0, MAX_OFFSET)
    groups = duplicate_groups(runtime, entity, g.access, rule=rule)
    page = with_titles(runtime, entity, groups[offset:offset + limit], g.access)
    return {"data": [grp.as_json() for grp in page], "total": len(groups), "limit": limit, "offset": offset}


def openapi_fragment(service) -> dict:
    """One path per entity with rules (so ``rule`` lists that entity's rules exactly)."""
    record = {"type": "object", "properties": {"id": {"type": "integer"}, "title": {"type": ["string", "null"]}}}
    group = {"type": "object", "properties": {
        "entity": {"type": "string"}, "rule": {"type": "string"}, "score": {"type": "number"},
        "records": {"type": "array", "items": record}}}
    answer = {"200": {"description": "A page of groups", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"data": {"type": "array", "items": group}, "total": {"type": "integer"},
                                         "limit": {"type": "integer"}, "offset": {"type": "integer"}}}}}},
              **error_responses("400", "401", "404")}
    paths = {}
    for entity in service.entities:
        params = [{"name": "rule", "in": "query", "schema": {"enum": [r.name for r in service.rules_of(entity)]}},
                  {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
                  {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}}]
        paths[f"/api/v1/_duplicates/{entity}"] = {"get": {
            "tags": ["duplicates"], "operationId": f"duplicate_groups_{entity}", "parameters": params,
            "summary": f"Groups of likely duplicate {entity} records (by its duplicate rules) among those you may read",
            "responses": answer}}
    return {"paths": paths,
            "tags": [{"name": "duplicates", "description": "Duplicate rules: scan groups; writes answer 409 duplicate"}]}
