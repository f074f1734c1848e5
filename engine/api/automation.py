"""Workflow transitions and the automation run log, on the API blueprint (same authentication).

``GET  /api/v1/{entity}/{id}/transitions``        the transitions the caller may take now
``POST /api/v1/{entity}/{id}/transitions/{name}``  take one (body: extra field values; If-Match)
``GET  /api/v1/_automation_runs``                  the run log (admins), newest first
``GET  /api/v1/_automation_runs/{id}``             one run and the actions it has done
``POST /api/v1/_automation_runs/{id}/rerun``       queue a dead run again (admins)
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, g, request

from engine.workflow.engine import ADMIN_ROLE, STATUSES

from .errors import ApiError

RUN_FIELDS = ("id", "automation", "entity", "record_id", "trigger", "status", "attempts", "max_attempts", "depth",
              "user_id", "error", "duration_ms", "created_at", "due_at", "started_at", "finished_at")


#: A run id in a path: beyond 64 bits no run can have it, so the URL matches nothing (404).
RUN_ID = "<int(max=9223372036854775807):run_id>"


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/<entity:entity>/<int:record_id>/transitions", "transitions", _transitions, methods=["GET"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>/transitions/<name>", "transition", _take, methods=["POST"])
    bp.add_url_rule("/_automation_runs", "automation_runs", _runs, methods=["GET"])
    bp.add_url_rule(f"/_automation_runs/{RUN_ID}", "automation_run", _run, methods=["GET"])
    bp.add_url_rule(f"/_automation_runs/{RUN_ID}/rerun", "automation_rerun", _rerun, methods=["POST"])


def _routes():
    from . import routes

    return routes


def _transitions(entity: str, record_id: int):
    r = _routes()
    ent = r._entity(entity)
    rt = r._rt()
    record = rt.records.get(ent.name, record_id, context=r._context())
    wf = rt.workflow.specs.workflows.get(ent.name) if rt.workflow else None
    if wf is None:
        return r._json({"field": None, "state": None, "data": []})
    with rt.db.read() as conn:
        allowed = rt.workflow.available(conn, ent, record, r._context())
    return r._json({"field": wf.field, "state": record.get(wf.field), "data": [
        {"name": t.name, "label": dict(t.label.texts), "to": t.target, "requires": list(t.requires)} for t in allowed]},
        headers={"ETag": r._etag(record)})


def _take(entity: str, record_id: int, name: str):
    r = _routes()
    ent = r._entity(entity)
    body = r._json_body() if request.get_data(cache=True) else {}
    rt = r._rt()
    record = rt.workflow.transition(ent.name, record_id, name, body, version=r._if_match(record_id),
                                   context=r._context())
    return r._json(r._record_json(ent.name, record), headers={"ETag": r._etag(record)})


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
    r = _routes()
    runs = r._rt().workflow.runs
    args = request.args
    stmt = sa.select(runs).order_by(runs.c.id.desc())
    choices = {"entity": tuple(r._rt().model.entities), "status": STATUSES}
    for name, allowed in choices.items():
        if name in args and args[name] not in allowed:
            raise ApiError(400, "Bad query", f"{name} must be one of {', '.join(allowed)}", kind="bad-query",
                           errors=[{"field": name, "code": "choice", "message": f"one of {', '.join(allowed)}"}])
    for name in ("automation", "entity", "status", "trigger"):
        value = args.get(name) if name in choices else r._name_arg(name)
        if value is not None:
            stmt = stmt.where(runs.c[name] == value)
    if args.get("record_id"):
        stmt = stmt.where(runs.c.record_id == r._int_arg("record_id", 0, 1, 2**62))
    before = r._int_arg("cursor", 0, 0, 2**62)
    if before:
        stmt = stmt.where(runs.c.id < before)
    limit = r._int_arg("limit", 50, 1, 500)
    with r._rt().db.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt.limit(limit + 1))]
    more = len(rows) > limit
    rows = rows[:limit]
    return r._json({"data": [_run_json(row) for row in rows],
                    "next_cursor": str(rows[-1]["id"]) if more and rows else None})


def _run(run_id: int):
    _admin()
    r = _routes()
    wf = r._rt().workflow
    with r._rt().db.read() as conn:
        row = conn.execute(sa.select(wf.runs).where(wf.runs.c.id == run_id)).first()
        if row is None:
            raise ApiError(404, "Not found", f"there is no automation run {run_id}")
        done = conn.execute(sa.select(wf.done).where(wf.done.c.run_id == run_id).order_by(wf.done.c.action)).all()
    out = _run_json(dict(row._mapping))
    out["actions_done"] = [{"action": d.action, "result": d.result, "done_at": d.done_at.isoformat()} for d in done]
    return r._json(out)


def _rerun(run_id: int):
    _admin()
    r = _routes()
    ids = r._rt().workflow.rerun([run_id])
    if not ids:
        raise ApiError(409, "Conflict", f"run {run_id} is not dead or retrying, so there is nothing to rerun")
    return _run(run_id)
