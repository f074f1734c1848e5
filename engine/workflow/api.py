"""Workflow transitions and the automation run log on the API (the API's authentication), and the
OpenAPI fragment that documents them; mounted by the ``workflow`` default plugin.

``GET  /api/v1/{entity}/{id}/transitions``        the transitions the caller may take now
``POST /api/v1/{entity}/{id}/transitions/{name}``  take one (body: extra field values; If-Match)
``GET  /api/v1/_automation_runs``                  the run log (admins), newest first
``GET  /api/v1/_automation_runs/{id}``             one run and the actions it has done
``POST /api/v1/_automation_runs/{id}/rerun``       queue a dead run again (admins)
"""

from __future__ import annotations

from copy import deepcopy

import sqlalchemy as sa
from flask import Blueprint, g, request

from engine.api import extend as api
from engine.api.extend import NAME_PATTERN, ApiError
from engine.api.openapi import (
    ETAG_HEADER,
    ID_SCHEMA,
    IF_MATCH,
    RECORD_ID,
    error_responses,
    json_object,
    query_parameter,
    schema_name,
)
from engine.metadata.model import AppModel, Entity

from .engine import ADMIN_ROLE, STATUSES

RUN_FIELDS = ("id", "automation", "entity", "record_id", "trigger", "status", "attempts", "max_attempts", "depth",
              "user_id", "error", "duration_ms", "created_at", "due_at", "started_at", "finished_at")


#: A run id in a path: beyond 64 bits no run can have it, so the URL matches nothing (404).
RUN_ID = "<int(max=9223372036854775807):run_id>"


def blueprint() -> Blueprint:
    bp = api.api_routes("workflow_api", __name__)
    bp.add_url_rule("/<entity:entity>/<int:record_id>/transitions", "transitions", _transitions, methods=["GET"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>/transitions/<name>", "transition", _take, methods=["POST"])
    bp.add_url_rule("/_automation_runs", "automation_runs", _runs, methods=["GET"])
    bp.add_url_rule(f"/_automation_runs/{RUN_ID}", "automation_run", _run, methods=["GET"])
    bp.add_url_rule(f"/_automation_runs/{RUN_ID}/rerun", "automation_rerun", _rerun, methods=["POST"])
    return bp


def _transitions(entity: str, record_id: int):
    ent = api.entity(entity)
    rt = api.runtime()
    record = rt.records.get(ent.name, record_id, context=api.context())
    wf = rt.workflow.specs.workflows.get(ent.name)
    if wf is None:
        return api.json_response({"field": None, "state": None, "data": []})
    with rt.db.read() as conn:
        allowed = rt.workflow.available(conn, ent, record, api.context())
    return api.json_response({"field": wf.field, "state": record.get(wf.field), "data": [
        {"name": t.name, "label": dict(t.label.texts), "to": t.target, "requires": list(t.requires)} for t in allowed]},
        headers={"ETag": api.etag(record)})


def _take(entity: str, record_id: int, name: str):
    ent = api.entity(entity)
    body = api.json_body() if request.get_data(cache=True) else {}
    record = api.runtime().workflow.transition(ent.name, record_id, name, body, version=api.if_match(record_id),
                                               context=api.context())
    return api.json_response(api.record_json(ent.name, record), headers={"ETag": api.etag(record)})


def _admin() -> None:
    if (g.identity.role or "") != ADMIN_ROLE:
        raise ApiError(403, "Forbidden", "the automation run log is for admins", kind="forbidden")


def _run_json(row) -> dict:
    out = {}
    for name in RUN_FIELDS:
        value = row[name]
        out[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return out


def _runs():
    _admin()
    rt = api.runtime()
    runs = rt.workflow.runs
    args = request.args
    stmt = sa.select(runs).order_by(runs.c.id.desc())
    choices = {"entity": tuple(rt.model.entities), "status": STATUSES}
    for name, allowed in choices.items():
        if name in args and args[name] not in allowed:
            raise ApiError(400, "Bad query", f"{name} must be one of {', '.join(allowed)}", kind="bad-query",
                           errors=[{"field": name, "code": "choice", "message": f"one of {', '.join(allowed)}"}])
    for name in ("automation", "entity", "status", "trigger"):
        value = args.get(name) if name in choices else api.name_arg(name)
        if value is not None:
            stmt = stmt.where(runs.c[name] == value)
    if args.get("record_id"):
        stmt = stmt.where(runs.c.record_id == api.int_arg("record_id", 0, 1, 2**62))
    before = api.int_arg("cursor", 0, 0, 2**62)
    if before:
        stmt = stmt.where(runs.c.id < before)
    limit = api.int_arg("limit", 50, 1, 500)
    with rt.db.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return api.json_response({"data": [_run_json(row) for row in rows],
                              "next_cursor": str(rows[-1]["id"]) if more and rows else None})


def _run(run_id: int):
    _admin()
    rt = api.runtime()
    wf = rt.workflow
    with rt.db.read() as conn:
        row = conn.execute(sa.select(wf.runs).where(wf.runs.c.id == run_id)).first()
        if row is None:
            raise ApiError(404, "Not found", f"there is no automation run {run_id}")
        done = conn.execute(sa.select(wf.done).where(wf.done.c.run_id == run_id).order_by(wf.done.c.action)).all()
    out = _run_json(dict(row._mapping))
    out["actions_done"] = [{"action": d.action, "result": d.result, "done_at": d.done_at.isoformat()} for d in done]
    return api.json_response(out)


def _rerun(run_id: int):
    _admin()
    ids = api.runtime().workflow.rerun([run_id])
    if not ids:
        raise ApiError(409, "Conflict", f"run {run_id} is not dead or retrying, so there is nothing to rerun")
    return _run(run_id)


# -- the document of these routes (crm_openapi) -----------------------------------------------------

def openapi_fragment(model: AppModel) -> dict:
    """The transitions of every entity and the automation run log, as OpenAPI paths."""
    paths: dict = {}
    for entity in model.entities.values():
        paths.update(_transition_paths(entity))
    paths.update(_automation_paths(model))
    return {"paths": paths}


def _transition_paths(entity: Entity) -> dict:
    """The workflow's transitions (docs/automation.md). Every entity answers the list (empty without a
    workflow); taking one is a path only where there are transitions to name."""
    base = f"/api/v1/{entity.name}"
    names = [t["name"] for t in (entity.workflow or {}).get("transitions") or ()]
    transition = {"type": "object", "required": ["name", "label", "to", "requires"], "properties": {
        "name": {"type": "string"}, "label": {"type": "object", "additionalProperties": {"type": "string"}},
        "to": {"type": "string"}, "requires": {"type": "array", "items": {"type": "string"}}}}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    record = {"$ref": f"#/components/schemas/{schema_name(entity)}"}
    paths = {
        f"{base}/{{id}}/transitions": {"get": {
            "tags": [entity.name], "operationId": f"transitions_{entity.name}", "parameters": [RECORD_ID],
            "summary": "The workflow transitions the caller may take now",
            "responses": {"200": {"description": "Transitions", "headers": ETAG_HEADER, "content": {"application/json": {
                "schema": {"type": "object", "required": ["field", "state", "data"], "properties": {
                    "field": {"type": ["string", "null"]}, "state": {"type": ["string", "null"]},
                    "data": {"type": "array", "items": transition}}}}}},
                **error_responses("401", "403", "404")}}},
    }
    if not names:
        return paths
    paths[f"{base}/{{id}}/transitions/{{name}}"] = {"post": {
            "tags": [entity.name], "operationId": f"transition_{entity.name}",
            "parameters": [RECORD_ID, name_param, IF_MATCH], "summary": "Take a workflow transition",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "The record after the transition", "headers": ETAG_HEADER,
                                  "content": {"application/json": {"schema": record}}},
                          **error_responses("400", "401", "403", "404", "412", "415", "422", "428")}}}
    return paths


def _automation_paths(model: AppModel) -> dict:
    stamp = {"type": ["string", "null"], "format": "date-time"}
    run = {"type": "object", "properties": {
        "id": ID_SCHEMA, "automation": {"type": "string"}, "entity": {"type": "string"},
        "record_id": {"type": ["integer", "null"]}, "trigger": {"type": "string"}, "status": {"enum": list(STATUSES)},
        "attempts": {"type": "integer"}, "max_attempts": {"type": "integer"}, "depth": {"type": "integer"},
        "user_id": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
        "duration_ms": {"type": ["integer", "null"]}, "created_at": stamp, "due_at": stamp, "started_at": stamp,
        "finished_at": stamp}}
    run["required"] = list(run["properties"])
    one = deepcopy(run)
    one["properties"]["actions_done"] = {"type": "array", "items": {
        "type": "object", "required": ["action", "result", "done_at"],
        "properties": {"action": {"type": "integer"}, "result": {}, "done_at": {"type": "string", "format": "date-time"}}}}
    one["required"].append("actions_done")
    run_id = {"name": "id", "in": "path", "required": True, "schema": ID_SCHEMA}
    one_content = {"application/json": {"schema": one}}
    return {
        "/api/v1/_automation_runs": {"get": {
            "tags": ["automation"], "operationId": "automation_runs", "summary": "The automation run log, newest first (admins)",
            "parameters": [query_parameter("automation", {"type": "string", "pattern": NAME_PATTERN}),
                           query_parameter("entity", {"type": "string", "enum": list(model.entities)}),
                           query_parameter("status", {"type": "string", "enum": list(STATUSES)}),
                           query_parameter("trigger", {"type": "string", "pattern": NAME_PATTERN}),
                           query_parameter("record_id", {"type": "integer", "minimum": 1, "maximum": 2**62}),
                           query_parameter("cursor", {"type": "integer", "minimum": 0, "maximum": 2**62},
                                           "next_cursor of the previous page"),
                           query_parameter("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50})],
            "responses": {"200": {"description": "Runs", "content": json_object(
                {"data": {"type": "array", "items": run}, "next_cursor": {"type": ["string", "null"]}})},
                **error_responses("400", "401")}}},
        "/api/v1/_automation_runs/{id}": {"get": {
            "tags": ["automation"], "operationId": "automation_run", "summary": "One run and the actions it has done",
            "parameters": [run_id],
            "responses": {"200": {"description": "The run", "content": one_content}, **error_responses("401", "404")}}},
        "/api/v1/_automation_runs/{id}/rerun": {"post": {
            "tags": ["automation"], "operationId": "automation_rerun", "summary": "Queue a dead (or retrying) run again",
            "parameters": [run_id],
            "responses": {"200": {"description": "The run, queued", "content": one_content},
                          **error_responses("401", "404", "409")}}},
    }
