"""What every screen of the web UI shares: the runtime, the entity a URL names (checked against the
user's role), the fields a user may edit, reading a form's inputs, links and messages."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import (
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)

from engine.fields import whole_number
from engine.storage.errors import NotFound, PermissionDenied

from .i18n import current_lang
from .i18n import say
from .present import Column

JSON_ENDPOINTS = {"ui.form_state", "ui.lookup", "ui.move"}


def runtime():
    return current_app.extensions["crm"]


def entity_of(name: str, op: str = "read"):
    ent = runtime().model.entities.get(name)
    if ent is None:
        abort(404)
    if not g.access.can(ent.name, op):
        try:
            g.access.require(ent.name, op)   # audits the denial
        except PermissionDenied as exc:
            if request.endpoint in JSON_ENDPOINTS:   # the page's script shows the answer's error
                answer = jsonify(error=say(exc))
                answer.status_code = 403
                abort(answer)
            abort(403)
    return ent


def hidden_of(ent) -> frozenset[str]:
    return g.access.hidden(ent.name)


def json_body() -> dict:
    """The request's JSON object ({} when the body is not one: a list, a number, not JSON)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def back_to(default: str) -> str:
    """A same-site place to return to (never another host)."""
    target = request.form.get("next") or request.args.get("next") or ""
    return target if target.startswith("/") and not target.startswith("//") else default


def with_message(url: str, message: str, kind: str = "info") -> Response:
    session["flash"] = {"message": message[:2000], "kind": kind}
    return redirect(url)


def url_with(**changes) -> str:
    params = {k: v for k, v in request.args.items() if k not in changes}
    params.update({k: v for k, v in changes.items() if v is not None})
    return f"{request.path}?{urlencode(params)}" if params else request.path


def link_to(col: Column, value: Any) -> str | None:
    if value is None:
        return None
    if col.kind == "reference" and hasattr(value, "entity"):
        return url_for("ui.record", entity=value.entity, record_id=value.id) if g.access.can(value.entity, "read") else None
    if col.target and isinstance(value, int) and g.access.can(col.target, "read"):
        return url_for("ui.record", entity=col.target, record_id=value)
    return None


def allowed_ops(ent) -> dict[str, bool]:
    return {op: g.access.can(ent.name, op) for op in ("create", "update", "delete", "export")}


def editable_columns(ent, cols: list[Column | None]) -> list[Column]:
    """Columns the user may write: not computed or read-only, not hidden or read-only for the role."""
    grant = None if g.access.admin else g.access.policy.entities.get(ent.name)
    blocked = (grant.hidden | grant.readonly) if grant is not None else frozenset()
    out = []
    for col in cols:
        if col is None or col.name in blocked:
            continue
        if col.system and col.name != "owner_id":
            continue
        if not col.system and (col.field.readonly or not col.field.stored):
            continue
        out.append(col)
    return out


def parse_input(col: Column, form) -> Any:
    """A submitted form value as the record service takes it (text stays text: the field type coerces)."""
    widget = col.widget
    if widget == "checkbox":
        return "1" in form.getlist(col.name)
    if widget == "multiselect":
        return [v for v in form.getlist(col.name) if v]
    raw = form.get(col.name, "")
    if widget == "textarea":
        raw = raw.replace("\r\n", "\n")   # browsers send a textarea's line breaks as CRLF
    if widget in ("text", "textarea", "email", "phone", "url"):
        return raw if raw.strip() else None
    raw = raw.strip()
    if raw == "":
        return None
    if widget in ("lookup", "user"):
        number = whole_number(raw)
        return raw if number is None else number
    if widget == "datetime":
        return in_zone(raw)   # the picker gives a time without a zone: the one the page shows
    return raw


def load_record(ent, record_id: int) -> dict:
    try:
        return runtime().records.get(ent.name, record_id, context=g.context)
    except NotFound:
        abort(404)


def label_text(value: Any) -> str:
    """A metadata label ({en:, zh:} or plain text) in the request's language."""
    if isinstance(value, dict) or hasattr(value, "texts"):
        texts = value.texts if hasattr(value, "texts") else value
        return texts.get(current_lang()) or texts.get("en") or next(iter(texts.values()), "")
    return str(value or "")


def in_zone(raw: str) -> str:
    """A date and time typed without an offset (``2026-01-31T09:00``) is in the request's time zone
    (the one the page shows); with an offset it stays as typed. Unreadable text is left for the
    field type to name the problem."""
    from datetime import datetime

    from .i18n import current_zone

    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return raw
    return (value.replace(tzinfo=current_zone()) if value.tzinfo is None else value).isoformat()


def lock_of(ent, record: dict) -> str | None:
    """Why ``record`` is read-only for the signed-in user (``crm_record_lock``: the first plugin that
    says so), or None. The screens hide what edits it; the plugin's write hook refuses the edit."""
    rt = runtime()
    return next((why for why in rt.pm.hook.crm_record_lock(runtime=rt, entity=ent, record=record, access=g.access)
                 if why), None)
