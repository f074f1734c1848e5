"""Pools on the API (the same authentication and problem+json errors as every route), and the OpenAPI
fragment that documents them, one set of paths per declared pool (so each documents its entity's
list parameters and records exactly); mounted by the ``pools`` default plugin.

``GET  /api/v1/_pools``                          the pools the caller may see, with their quota
``GET  /api/v1/_pools/{pool}``                   the pool's records (the entity list's filters, sort, cursor)
``POST /api/v1/_pools/{pool}/claim``             ``{"ids": [..]}``: take them (within the limits)
``POST /api/v1/_pools/{pool}/assign``            ``{"ids": [..], "user": id}``: give them to a user
``POST /api/v1/_pools/{pool}/return``            ``{"ids": [..]}`` or ``{"id": ..}``, ``reason``, ``note``
``PUT  /api/v1/_pools/{pool}/limits/{user_id}``  ``{"owned": n|null, "per_day": n|null}``: a user's own limits
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses, list_parameters, schema_name
from engine.fields import INT64_MAX

from .plugin import pools_of
from .service import MAX_IDS, PoolError, Quota, role_of

ID = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def blueprint() -> Blueprint:
    bp = api.api_routes("pools_api", __name__)
    bp.add_url_rule("/_pools", "pools", _pools, methods=["GET"])
    bp.add_url_rule("/_pools/<name>", "pool", _records, methods=["GET"])
    bp.add_url_rule("/_pools/<name>/claim", "claim", _claim, methods=["POST"])
    bp.add_url_rule("/_pools/<name>/assign", "assign", _assign, methods=["POST"])
    bp.add_url_rule("/_pools/<name>/return", "give_back", _return, methods=["POST"])
    bp.add_url_rule("/_pools/<name>/limits/<int:user_id>", "limits", _limits, methods=["PUT"])
    return bp


def _service():
    service = pools_of(api.runtime())
    if service is None:
        raise ApiError(404, "Not found", "pools are turned off on this server")
    return service


def _pool(name: str):
    pool = _service().pool(name)
    if not pool.may(role_of(g.access), "see"):
        raise PoolError(404, "not-found", f"there is no pool {name!r}; GET /api/v1/_pools lists them")
    return pool


def pool_json(pool, quota: Quota, role: str) -> dict:
    return {"name": pool.name, "entity": pool.entity, "label": dict(pool.label.texts),
            "may": {a: pool.may(role, a) for a in ("claim", "assign", "return")},
            "quota": quota.as_json(),
            "return_reasons": [{"value": v, "label": dict(label.texts)} for v, label in pool.return_reasons]}


def _pools():
    service, role = _service(), role_of(g.access)
    return api.json_response({"data": [pool_json(p, service.quota(p, g.identity.user_id, role), role)
                                       for p in service.visible(role)]})


def _records(name: str):
    pool = _pool(name)
    ent = api.entity(pool.entity)
    q, fields, expand = api.list_query(ent)
    if fields:
        q.columns = fields
    page = _service().page(pool, q, access=g.access, user_id=g.identity.user_id, timeout_ms=api.LIST_TIMEOUT_MS)
    data = api.dump_records(ent, page.records, fields)
    if expand:
        api.expand_lookups(ent, page.records, data, expand)
    body: dict[str, Any] = {"data": data, "next_cursor": page.next_cursor}
    if q.count:
        body["total"], body["total_is_estimate"] = page.total, page.total_is_estimate
    return api.json_response(body)


def _body(allowed: tuple[str, ...]) -> dict:
    body = api.json_body()
    unknown = [k for k in body if k not in allowed]
    if unknown:
        raise PoolError(422, "validation", f"unknown key(s): {', '.join(map(str, unknown))} (allowed: {', '.join(allowed)})",
                        field=str(unknown[0]))
    return body


def _ids(body: dict, *, one: bool = False) -> list[int]:
    if one and "id" in body:
        if "ids" in body:
            raise PoolError(422, "validation", "give ids or id, not both", field="id")
        raw = [body["id"]]
    elif "ids" not in body:
        raise PoolError(422, "validation", "ids is required: a list of record ids", field="ids")
    else:
        raw = body["ids"]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_IDS or not all(
            isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= INT64_MAX for i in raw):
        raise PoolError(422, "validation", f"ids must be a list of 1 to {MAX_IDS} record ids", field="ids")
    return raw


def _records_json(pool, records: list[dict]) -> list[dict]:
    return api.dump_records(api.entity(pool.entity), records)


def _claim(name: str):
    pool = _pool(name)
    ids = _ids(_body(("ids",)))
    service, role = _service(), role_of(g.access)
    records = service.claim(pool.name, ids, user_id=g.identity.user_id, role=role)
    return api.json_response({"data": _records_json(pool, records),
                              "quota": service.quota(pool, g.identity.user_id, role).as_json()})


def _assign(name: str):
    pool = _pool(name)
    body = _body(("ids", "user"))
    ids = _ids(body)
    user = body.get("user")
    if not isinstance(user, int) or isinstance(user, bool) or not 1 <= user <= INT64_MAX:
        raise PoolError(422, "validation", "user is required: the id of the user to assign to", field="user")
    records = _service().assign(pool.name, ids, to_user=user, actor_id=g.identity.user_id, role=role_of(g.access))
    return api.json_response({"data": _records_json(pool, records)})


def _return(name: str):
    pool = _pool(name)
    body = _body(("ids", "id", "reason", "note"))
    ids = _ids(body, one=True)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise PoolError(422, "validation", "reason must be one of the pool's return reasons", field="reason")
    records = _service().give_back(pool.name, ids, user_id=g.identity.user_id, role=role_of(g.access), reason=reason,
                                   note=body.get("note"))
    return api.json_response({"data": _records_json(pool, records)})


def _limits(name: str, user_id: int):
    pool = _pool(name)
    body = _body(("owned", "per_day"))
    values = {}
    for key in ("owned", "per_day"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000):
            raise PoolError(422, "validation", f"{key} must be a whole number from 0 to 1000000, or null", field=key)
        values[key] = value
    if not 1 <= user_id <= INT64_MAX:
        raise PoolError(404, "not-found", f"there is no user {user_id}")
    return api.json_response(_service().set_limit(pool.name, user_id, role=role_of(g.access), **values))


# -- the document of these routes (crm_openapi) -----------------------------------------------------

def openapi_fragment(model, pools: dict) -> dict:
    """The pools' routes as OpenAPI paths: the list and the actions of each declared pool."""
    label = {"type": "object", "additionalProperties": {"type": "string"}}
    nullable_int = {"type": ["integer", "null"]}
    quota = {"type": "object", "required": ["owned", "owned_limit", "claimed_today", "per_day_limit", "remaining", "resets_at"],
             "properties": {"owned": {"type": "integer"}, "owned_limit": nullable_int, "claimed_today": {"type": "integer"},
                            "per_day_limit": nullable_int, "remaining": nullable_int,
                            "resets_at": {"type": "string", "format": "date-time"}}}
    summary = {"type": "object", "required": ["name", "entity", "label", "may", "quota", "return_reasons"], "properties": {
        "name": {"type": "string"}, "entity": {"type": "string"}, "label": label,
        "may": {"type": "object", "additionalProperties": {"type": "boolean"}}, "quota": quota,
        "return_reasons": {"type": "array", "items": {"type": "object", "required": ["value", "label"],
                                                       "properties": {"value": {"type": "string"}, "label": label}}}}}
    ids = {"type": "array", "minItems": 1, "maxItems": MAX_IDS, "items": ID}
    paths: dict = {"/api/v1/_pools": {"get": {
        "tags": ["pools"], "operationId": "pools", "summary": "The pools you may see, with what you may still claim",
        "responses": {"200": {"description": "Pools", "content": _json({"data": {"type": "array", "items": summary}})},
                      **error_responses("401")}}}}
    for pool in pools.values():
        paths.update(_pool_paths(model, pool, ids, quota))
    return {"paths": paths, "tags": [{"name": "pools", "description": "Pools of unowned records (公海): claim, assign, return"}]}


def _pool_paths(model, pool, ids: dict, quota: dict) -> dict:
    ent = model.entity(pool.entity)
    name = schema_name(ent)
    base = f"/api/v1/_pools/{pool.name}"
    records = {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}

    def action(op: str, summary: str, body: dict, out: dict) -> dict:
        return {"post": {"tags": ["pools"], "operationId": f"{op}_{pool.name}", "summary": summary,
                         "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
                         "responses": {"200": {"description": "Done", "content": _json(out)},
                                       **error_responses("400", "401", "404", "409", "415", "422")}}}

    reasons = [v for v, _ in pool.return_reasons]
    give_back = {"type": "object", "additionalProperties": False, "required": ["reason"], "properties": {
        "ids": ids, "id": ID, "reason": {"type": "string", **({"enum": reasons} if reasons else {})},
        "note": {"type": ["string", "null"], "maxLength": 2000}},
        "oneOf": [{"required": ["ids"], "not": {"required": ["id"]}}, {"required": ["id"], "not": {"required": ["ids"]}}]}
    limit = {"type": ["integer", "null"], "minimum": 0, "maximum": 1_000_000}
    return {
        base: {"get": {"tags": ["pools"], "operationId": f"list_{pool.name}",
                       "summary": f"The records of {pool.label} (unowned {ent.plural.get('en')}) you may claim",
                       "parameters": list_parameters(ent),
                       "responses": {"200": {"description": "A page", "content": {"application/json": {
                           "schema": {"$ref": f"#/components/schemas/{name}Page"}}}},
                           **error_responses("400", "401", "404", "414", "503")}}},
        f"{base}/claim": action("claim", f"Claim records of {pool.label}", {
            "type": "object", "additionalProperties": False, "required": ["ids"], "properties": {"ids": ids}},
            {"data": records, "quota": quota}),
        f"{base}/assign": action("assign", f"Assign records of {pool.label} to a user", {
            "type": "object", "additionalProperties": False, "required": ["ids", "user"],
            "properties": {"ids": ids, "user": ID}}, {"data": records}),
        f"{base}/return": action("return", f"Return records to {pool.label} with a reason", give_back, {"data": records}),
        f"{base}/limits/{{user_id}}": {"put": {
            "tags": ["pools"], "operationId": f"limits_{pool.name}", "summary": f"A user's own limits in {pool.label}",
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": ID}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "properties": {"owned": limit, "per_day": limit}}}}},
            "responses": {"200": {"description": "The limits set", "content": _json({
                "pool": {"type": "string"}, "user_id": ID, "owned": limit, "per_day": limit})},
                **error_responses("400", "401", "404", "415", "422")}}},
    }


def _json(properties: dict) -> dict:
    return {"application/json": {"schema": {"type": "object", "required": list(properties), "properties": properties}}}
