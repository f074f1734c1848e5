"""Merge on the API (the same authentication and problem+json errors as every route), and the
OpenAPI fragment that documents it; mounted by the ``merge`` default plugin.

``GET  /api/v1/{entity}/_merge/preview?ids=1,2``  the records side by side: fields, which differ,
                                                   which may be chosen, the references that would move
``POST /api/v1/{entity}/_merge``                   ``{"survivor": id, "merged": [ids], "choices": {field: id}}``:
                                                   merge; the survivor, with the merge's id and what moved
``POST /api/v1/_merges/{id}/undo``                 undo a merge (within its time, nothing changed since)
"""

from __future__ import annotations

from flask import Blueprint, request

from engine.api import extend as api
from engine.api.openapi import error_responses, schema_name
from engine.fields import INT64_MAX

from .service import MergeError, merge, preview
from .spec import MAX_RECORDS
from .undo import undo

ID = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}


def blueprint(model) -> Blueprint:
    """The routes; one pair per entity whose records can be merged (none for users)."""
    from .spec import mergeable

    bp = api.api_routes("merge_api", __name__)
    for ent in model.entities.values():
        if mergeable(ent):
            bp.add_url_rule(f"/{ent.name}/_merge/preview", f"preview_{ent.name}", _preview, methods=["GET"],
                            defaults={"entity": ent.name})
            bp.add_url_rule(f"/{ent.name}/_merge", f"merge_{ent.name}", _merge, methods=["POST"],
                            defaults={"entity": ent.name})
    bp.add_url_rule("/_merges/<int:merge_id>/undo", "undo", _undo, methods=["POST"])
    return bp


def parse_ids(text: str) -> list[int]:
    """``1,2,3`` -> ids (a 422 naming ``ids`` for anything else)."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not parts or not all(p.isdigit() and 0 < int(p) <= INT64_MAX for p in parts):
        raise MergeError(422, "validation", f"ids must be 2 to {MAX_RECORDS} record ids separated by commas", "ids")
    return [int(p) for p in parts]


def _preview(entity: str):
    ent = api.entity(entity)
    found = preview(api.runtime(), ent.name, parse_ids(request.args.get("ids", "")), api.context())
    found["records"] = [api.record_json(ent.name, r) for r in found["records"]]
    found["references"] = {str(k): v for k, v in found["references"].items()}
    found["hidden_references"] = {str(k): v for k, v in found["hidden_references"].items()}
    found["locks"] = {str(k): v for k, v in found["locks"].items()}
    return api.json_response(found)


def _merge(entity: str):
    ent = api.entity(entity)
    body = api.json_body()
    unknown = [k for k in body if k not in ("survivor", "merged", "choices")]
    if unknown:
        raise MergeError(422, "validation", f"unknown key(s): {', '.join(map(str, unknown))} "
                                            "(allowed: survivor, merged, choices)", str(unknown[0]))
    done = merge(api.runtime(), ent.name, body.get("survivor"), body.get("merged"), body.get("choices"),
                 api.context())
    return api.json_response({
        "data": api.record_json(ent.name, done.survivor),
        "merge": {"id": done.merge_id, "merged": done.merged_ids, "moved": done.moved, "dropped": done.dropped,
                  "undo_until": done.undo_until.isoformat() if done.undo_until else None}},
        headers={"ETag": api.etag(done.survivor)})


def _undo(merge_id: int):
    done = undo(api.runtime(), merge_id, api.context())
    return api.json_response({"data": api.record_json(done["entity"], done["survivor"]),
                              "restored": done["restored"]})


# -- the document of these routes (crm_openapi) -----------------------------------------------------

def openapi_fragment(model) -> dict:
    """The merge routes of every entity whose records can be merged, and the undo route."""
    from .spec import mergeable

    moved = {"type": "array", "items": {"type": "object", "properties": {
        "entity": {"type": "string"}, "field": {"type": "string"}, "count": {"type": "integer"}}}}
    paths: dict = {"/api/v1/_merges/{merge_id}/undo": {"post": {
        "tags": ["merge"], "operationId": "undo_merge", "summary": "Undo a merge: the merged records and their "
        "references come back, the survivor gets its previous values",
        "parameters": [{"name": "merge_id", "in": "path", "required": True, "schema": ID}],
        "responses": {"200": {"description": "Undone", "content": _json({
            "data": {"type": "object"}, "restored": {"type": "array", "items": ID}})},
            **error_responses("400", "401", "403", "404", "409")}}}}
    for ent in model.entities.values():
        if not mergeable(ent):
            continue
        ref = {"$ref": f"#/components/schemas/{schema_name(ent)}"}
        base = f"/api/v1/{ent.name}/_merge"
        paths[base] = {"post": {
            "tags": ["merge"], "operationId": f"merge_{ent.name}", "summary": f"Merge {ent.plural.get('en')} into one",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["survivor", "merged"], "properties": {
                    "survivor": ID,
                    "merged": {"type": "array", "minItems": 1, "maxItems": MAX_RECORDS - 1, "items": ID},
                    "choices": {"type": "object", "description": "field -> id of the record whose value the survivor keeps",
                                "additionalProperties": ID}}}}}},
            "responses": {"200": {"description": "The survivor", "content": _json({
                "data": ref, "merge": {"type": "object", "properties": {
                    "id": ID, "merged": {"type": "array", "items": ID}, "moved": moved,
                    "dropped": {"type": "array", "items": {"type": "object"}},
                    "undo_until": {"type": ["string", "null"], "format": "date-time"}}}})},
                **error_responses("400", "401", "403", "404", "409", "415", "422")}}}
        paths[f"{base}/preview"] = {"get": {
            "tags": ["merge"], "operationId": f"merge_preview_{ent.name}",
            "summary": f"{ent.plural.get('en')} side by side before a merge",
            "parameters": [{"name": "ids", "in": "query", "required": True, "schema": {"type": "string"},
                            "description": f"2 to {MAX_RECORDS} ids, comma-separated"}],
            "responses": {"200": {"description": "The records, their fields and the references that would move",
                                  "content": _json({"records": {"type": "array", "items": ref},
                                                    "fields": {"type": "array", "items": {"type": "object"}},
                                                    "references": {"type": "object"},
                                                    "hidden_references": {"type": "object"}})},
                          **error_responses("400", "401", "403", "404", "414", "422")}}}
    return {"paths": paths, "tags": [{"name": "merge", "description": "Merge duplicate records, and undo a merge"}]}


def _json(properties: dict) -> dict:
    return {"application/json": {"schema": {"type": "object", "required": list(properties), "properties": properties}}}
