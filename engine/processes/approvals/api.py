"""Approvals on the API (the same authentication and problem+json errors as every route), and the
OpenAPI fragment that documents them; mounted by the ``approvals`` default plugin. The record routes
exist for the entities that have an approval process.

``GET  /api/v1/_approvals``                            what waits for the caller's decision (their inbox)
``GET  /api/v1/{entity}/{id}/_approval``               the record's approvals, newest first, with every step
``POST /api/v1/{entity}/{id}/_approval/submit``        ``{"comment": ..}``: submit it for approval
``POST /api/v1/{entity}/{id}/_approval/approve``       ``{"comment": ..}``: approve the current step
``POST /api/v1/{entity}/{id}/_approval/reject``        ``{"comment": ..}`` (required): reject it
``POST /api/v1/{entity}/{id}/_approval/recall``        ``{"comment": ..}``: the submitter takes it back
"""

from __future__ import annotations

from flask import Blueprint, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import RECORD_ID, error_responses, json_object
from engine.fields import INT64_MAX

from .plugin import approvals_of
from .service import MAX_COMMENT, ApprovalError

ACTIONS = ("submit", "approve", "reject", "recall")


def blueprint(service) -> Blueprint:
    bp = api.api_routes("approvals_api", __name__)
    bp.add_url_rule("/_approvals", "inbox", _inbox, methods=["GET"])
    for entity in sorted(service.entities if service is not None else ()):
        base = f"/{entity}/<int:record_id>/_approval"
        bp.add_url_rule(base, f"history_{entity}", _history, methods=["GET"], defaults={"entity": entity})
        for action in ACTIONS:
            bp.add_url_rule(f"{base}/{action}", f"{action}_{entity}", _act, methods=["POST"],
                            defaults={"entity": entity, "action": action})
    return bp


def _service():
    service = approvals_of(api.runtime())
    if service is None:
        raise ApiError(404, "Not found", "approvals are turned off on this server")
    return service


def _inbox():
    return api.json_response({"data": _service().inbox(g.identity.user_id)})


def _exists(entity: str, record_id: int) -> None:
    """An id past 64 bits names no record (the database could not even compare it): 404, as for records."""
    if not 0 < record_id <= INT64_MAX:
        raise ApprovalError(404, "not-found", f"there is no {entity} {record_id}")


def _history(entity: str, record_id: int):
    _exists(entity, record_id)
    return api.json_response({"data": _service().history(entity, record_id, access=g.access,
                                                         user_id=g.identity.user_id)})


def _comment() -> str | None:
    body = api.json_body() if request.get_data(cache=True) else {}
    unknown = [k for k in body if k != "comment"]
    if unknown:
        raise ApprovalError(422, "validation", f"unknown key(s): {', '.join(map(str, unknown))} (allowed: comment)",
                            field=str(unknown[0]))
    return body.get("comment")


def _act(entity: str, action: str, record_id: int):
    _exists(entity, record_id)
    service, comment, user = _service(), _comment(), g.identity.user_id
    if action == "submit":
        done = service.submit(entity, record_id, user_id=user, access=g.access, comment=comment)
    else:
        done = getattr(service, action)(entity, record_id, user_id=user, comment=comment)
    return api.json_response(done)


# -- the document of these routes (crm_openapi) -----------------------------------------------------

def openapi_fragment(model, approvals: dict) -> dict:
    """The inbox, and the history and actions of each entity with an approval process."""
    label = {"type": "object", "additionalProperties": {"type": "string"}}
    person = {"type": ["object", "null"], "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}}
    step_ref = {"type": "object", "properties": {"index": {"type": "integer"}, "name": {"type": "string"}, "label": label}}
    decision = {"type": "object", "properties": {
        "approver": person, "decision": {"enum": ["pending", "approved", "rejected", "cancelled"]},
        "comment": {"type": ["string", "null"]}, "decided_at": {"type": ["string", "null"], "format": "date-time"}}}
    step = {"type": "object", "properties": {
        "index": {"type": "integer"}, "name": {"type": "string"}, "label": label, "rule": {"enum": ["any", "all"]},
        "skipped": {"type": "boolean"}, "decisions": {"type": "array", "items": decision}}}
    instance = json_object({
        "id": {"type": "integer"}, "process": {"type": "string"}, "label": label,
        "status": {"enum": ["pending", "approved", "rejected", "recalled"]}, "step": {"type": ["integer", "null"]},
        "submitted_by": person, "submitted_at": {"type": "string", "format": "date-time"},
        "decided_at": {"type": ["string", "null"], "format": "date-time"}, "comment": {"type": ["string", "null"]},
        "version": {"type": "integer"}, "steps": {"type": "array", "items": step},
        "may": {"type": "object", "additionalProperties": {"type": "boolean"}}})
    waiting = {"type": "object", "properties": {
        "id": {"type": "integer"}, "process": {"type": "string"}, "label": label, "entity": {"type": "string"},
        "record_id": {"type": "integer"}, "title": {"type": "string"}, "step": step_ref, "submitted_by": person,
        "submitted_at": {"type": "string", "format": "date-time"}, "asked_at": {"type": "string", "format": "date-time"}}}
    paths: dict = {"/api/v1/_approvals": {"get": {
        "tags": ["approvals"], "operationId": "approvals_inbox", "summary": "What waits for your approval",
        "responses": {"200": {"description": "Your inbox", "content": json_object(
            {"data": {"type": "array", "items": waiting}})}, **error_responses("401")}}}}
    body = {"type": "object", "additionalProperties": False,
            "properties": {"comment": {"type": ["string", "null"], "maxLength": MAX_COMMENT}}}
    summaries = {"submit": "Submit it for approval (the first process whose condition holds)",
                 "approve": "Approve the current step (you must be one of its approvers)",
                 "reject": "Reject it, with a comment saying why (you must be an approver of the current step)",
                 "recall": "Take it back while it is pending (its submitter)"}
    for entity in sorted({a.entity for a in approvals.values()}):
        base = f"/api/v1/{entity}/{{id}}/_approval"
        paths[base] = {"get": {
            "tags": ["approvals"], "operationId": f"approval_history_{entity}", "parameters": [RECORD_ID],
            "summary": f"The approvals of this {entity}, newest first, with every step",
            "responses": {"200": {"description": "The history", "content": json_object(
                {"data": {"type": "array", "items": instance["application/json"]["schema"]}})},
                **error_responses("400", "401", "404")}}}
        for action in ACTIONS:
            need = {**body, "required": ["comment"]} if action == "reject" else body
            paths[f"{base}/{action}"] = {"post": {
                "tags": ["approvals"], "operationId": f"approval_{action}_{entity}", "parameters": [RECORD_ID],
                "summary": summaries[action],
                "requestBody": {"required": action == "reject", "content": {"application/json": {"schema": need}}},
                "responses": {"200": {"description": "The approval as it stands now", "content": instance},
                              **error_responses("400", "401", "403", "404", "409", "415", "422")}}}
    return {"paths": paths, "tags": [{"name": "approvals", "description": "Approval processes (审批流)"}]}
