"""Conversions on the API (the API's authentication and permissions), and the OpenAPI fragment that
documents them; mounted by the ``conversions`` default plugin. Only entities that declare a
conversion have these paths.

``GET  /api/v1/{entity}/{id}/_convert/{name}``  the proposal: mapped values and match candidates per target
``POST /api/v1/{entity}/{id}/_convert/{name}``  convert with the choices per target (create / existing / skip)
``POST /api/v1/{entity}/_convert/{name}``       bulk: ``{"ids": [...]}``, new targets only, a result per record

The same paths without ``/{name}`` are the entity's first (default) conversion.
"""

from __future__ import annotations

from typing import Mapping

from flask import Blueprint, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import ID_SCHEMA, RECORD_ID, error_responses, json_object
from engine.metadata.model import AppModel

from . import service
from .service import ConversionError


def blueprint() -> Blueprint:
    bp = api.api_routes("conversions_api", __name__)
    for suffix in ("", "/<name>"):
        bp.add_url_rule(f"/<entity:entity>/<int:record_id>/_convert{suffix}", "proposal" + suffix[2:-1],
                        _proposal, methods=["GET"])
        bp.add_url_rule(f"/<entity:entity>/<int:record_id>/_convert{suffix}", "convert" + suffix[2:-1],
                        _convert, methods=["POST"])
        bp.add_url_rule(f"/<entity:entity>/_convert{suffix}", "convert_many" + suffix[2:-1], _convert_many,
                        methods=["POST"])
    return bp


def _entity(entity: str, name: str | None = None) -> str:
    ent = api.entity(entity)
    try:
        return service.conversion_for(api.runtime(), ent.name, name).name
    except ConversionError as exc:
        raise _refused(exc) from None


def _refused(exc: ConversionError) -> ApiError:
    return ApiError(exc.status, exc.title, exc.detail, kind="conversion", errors=exc.errors)


def proposal_json(found: service.Proposal) -> dict:
    out = {"id": found.record["id"], "conversion": found.conversion.name, "convertible": found.problem is None,
           "problem": found.problem, "missing_rights": found.missing, "targets": {}}
    for tp in found.targets:
        t = tp.target
        ent = api.runtime().model.entity(t.entity)
        out["targets"][t.name] = {
            "entity": t.entity, "label": dict(t.label.texts), "optional": t.optional, "existing": t.existing,
            "values": {k: None if v is None else ent.fields[k].type.to_json(ent.fields[k], v)
                       for k, v in tp.values.items()},
            "references": {v.field: v.ref for v in t.values if v.ref},
            **({"lines": dict(tp.lines)} if t.lines else {}),
            "candidates": [{**c.as_json(), "title": str(c.record.get(ent.title) or c.id)} for c in tp.candidates]}
    return out


def _proposal(entity: str, record_id: int, name: str | None = None):
    conv = _entity(entity, name)
    try:
        found = service.proposal(api.runtime(), api.entity(entity).name, record_id, getattr(g, "access", None),
                                 name=conv)
    except ConversionError as exc:
        raise _refused(exc) from None
    return api.json_response(proposal_json(found))


def _convert(entity: str, record_id: int, name: str | None = None):
    conv = _entity(entity, name)
    body = api.json_body() if request.get_data(cache=True) else {}   # no body: every target as proposed
    try:
        out = service.convert(api.runtime(), api.entity(entity).name, record_id, body.get("targets", {}),
                              api.context(), name=conv)
    except ConversionError as exc:
        raise _refused(exc) from None
    return api.json_response(out)


def _convert_many(entity: str, name: str | None = None):
    conv = _entity(entity, name)
    body = api.json_body()
    try:
        results = service.convert_many(api.runtime(), api.entity(entity).name, body.get("ids"), api.context(),
                                       name=conv)
    except ConversionError as exc:
        raise _refused(exc) from None
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return api.json_response({"results": results, "counts": counts})


# -- the document of these routes (crm_openapi) ---------------------------------------------------

def openapi_fragment(model: AppModel, conversions: Mapping) -> dict:
    """The convert paths of each conversion (``/_convert/{name}``), and the unnamed ones of each
    entity's first conversion."""
    paths: dict = {}
    for source, by_name in conversions.items():
        for i, conv in enumerate(by_name.values()):
            paths.update(_conversion_paths(source, conv, named=True))
            if i == 0:
                paths.update(_conversion_paths(source, conv, named=False))
    return {"paths": paths}


def _conversion_paths(source: str, conv, *, named: bool) -> dict:
    """The three paths of one conversion: named (``/_convert/{name}``) or the entity's default."""
    names = [t.name for t in conv.targets]
    suffix, op = (f"/{conv.name}", f"_{conv.name}") if named else ("", "")
    parameters = [RECORD_ID]
    ref_id = {"type": ["integer", "null"]}
    done = {"type": "object", "required": ["entity", "id", "action"], "properties": {
        "entity": {"type": "string"}, "id": ref_id, "action": {"enum": ["created", "attached", "skipped"]},
        "lines": {"type": "integer", "description": "Child records copied into the new record (lines)"}}}
    target = {"type": "object", "required": ["entity", "label", "optional", "existing", "values", "references",
                                             "candidates"], "properties": {
        "entity": {"type": "string"}, "label": {"type": "object", "additionalProperties": {"type": "string"}},
        "optional": {"type": "boolean"}, "existing": {"type": "boolean"}, "values": {"type": "object"},
        "references": {"type": "object", "additionalProperties": {"type": "string"}},
        "lines": {"type": "object", "additionalProperties": {"type": "integer"},
                  "description": "Per child entity, the lines the new record will get"},
        "candidates": {"type": "array", "items": {"type": "object", "required": ["id", "score", "reasons", "title"],
                                                  "properties": {"id": ID_SCHEMA, "score": {"type": "number"},
                                                                 "title": {"type": "string"},
                                                                 "reasons": {"type": "array"}}}}}}
    choice = {"type": "object", "properties": {
        "action": {"enum": list(service.ACTIONS)}, "id": ID_SCHEMA, "values": {"type": "object"}}}
    proposal = json_object({
        "id": ID_SCHEMA, "conversion": {"type": "string"}, "convertible": {"type": "boolean"},
        "problem": {"type": ["string", "null"]}, "missing_rights": {"type": "array", "items": {"type": "string"}},
        "targets": {"type": "object", "properties": {n: target for n in names}}})
    result = json_object({"id": ID_SCHEMA, "conversion": {"type": "string"},
                          "targets": {"type": "object", "properties": {n: done for n in names}},
                          "moved": {"type": "object", "additionalProperties": {"type": "integer"}}})
    base = f"/api/v1/{source}"
    which = f"'{conv.name}'" if named else f"the default conversion ('{conv.name}')"
    paths = {f"{base}/{{id}}/_convert{suffix}": {
        "get": {"tags": [source], "operationId": f"convert_proposal_{source}{op}", "parameters": parameters,
                "summary": f"What {which} of this {source} would create, and existing records it matches",
                "responses": {"200": {"description": "The proposal", "content": proposal},
                              **error_responses("400", "401", "403", "404")}},
        "post": {"tags": [source], "operationId": f"convert_{source}{op}", "parameters": parameters,
                 "summary": f"Convert this {source} with {which} ({', '.join(names)}) in one transaction",
                 "requestBody": {"required": False, "content": {"application/json": {"schema": {
                     "type": "object", "properties": {"targets": {
                         "type": "object", "additionalProperties": False,
                         "properties": {n: choice for n in names}}}}}}},
                 "responses": {"200": {"description": "What was created or attached", "content": result},
                               **error_responses("400", "401", "403", "404", "409", "415", "422")}}}}
    item = {"type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": "integer"}, "status": {"enum": ["converted", "matches", "error"]},
        "detail": {"type": "string"}, "targets": {"type": "object"}, "candidates": {"type": "object"},
        "errors": {"type": "array"}}}
    paths[f"{base}/_convert{suffix}"] = {"post": {
        "tags": [source], "operationId": f"convert_many_{source}{op}",
        "summary": f"Convert several {source} records with {which}, creating new targets; those with matches "
                   "are skipped",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["ids"], "properties": {"ids": {
                "type": "array", "minItems": 1, "maxItems": service.BULK_LIMIT, "items": ID_SCHEMA}}}}}},
        "responses": {"200": {"description": "A result per record", "content": json_object({
            "results": {"type": "array", "items": item},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}}})},
            **error_responses("400", "401", "403", "404", "415", "422")}}}
    return paths
