"""The screens of the web UI, one set for every entity of the model.

Every screen reads and writes through the record service with the signed-in user's ``Context``, so
the permissions, rules, workflows and automations that hold for the API hold here; no screen is
written for a particular entity. Pages are server-rendered; the few live parts (conditional fields
while typing, lookup type-ahead, kanban moves) call small JSON endpoints of this blueprint.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, redirect, render_template, request, session, url_for

from engine.security.permissions import access_for
from engine.security.web import session_identity
from engine.storage.records import Context

from .common import JSON_ENDPOINTS, label_text, runtime
from .forms import edit, form_state, lookup, new
from .i18n import current_lang
from .i18n import translate as _
from .lists import bulk, delete_view, list_page, save_view
from .record_page import (
    compose,
    field_editor,
    field_save,
    field_view,
    record_page,
    timeline_part,
)
from .records import delete, kanban, move
from .shell import (
    choose_language,
    home,
    notification_read,
    notifications_page,
    search_page,
    unread_count,
)


def ui_blueprint() -> Blueprint:
    bp = Blueprint("ui", __name__)
    bp.before_request(sign_in)
    bp.context_processor(shell)
    rules = [
        ("/", "home", home, ["GET"]),
        ("/ui/lang", "lang", choose_language, ["POST"]),
        ("/ui/search", "search", search_page, ["GET"]),
        ("/ui/notifications", "notifications", notifications_page, ["GET"]),
        ("/ui/notifications/<int:record_id>/read", "notification_read", notification_read, ["POST"]),
        ("/ui/_session", "session", session_resumed, ["GET"]),
        ("/ui/<entity:entity>", "list", list_page, ["GET"]),
        ("/ui/<entity:entity>/_bulk", "bulk", bulk, ["POST"]),
        ("/ui/<entity:entity>/_views", "save_view", save_view, ["POST"]),
        ("/ui/<entity:entity>/_views/<int:view_id>/delete", "delete_view", delete_view, ["POST"]),
        ("/ui/<entity:entity>/_form_state", "form_state", form_state, ["POST"]),
        ("/ui/<entity:entity>/_lookup", "lookup", lookup, ["GET"]),
        ("/ui/<entity:entity>/kanban", "kanban", kanban, ["GET"]),
        ("/ui/<entity:entity>/new", "new", new, ["GET", "POST"]),
        ("/ui/<entity:entity>/<int:record_id>", "record", record_page, ["GET"]),
        ("/ui/<entity:entity>/<int:record_id>/edit", "edit", edit, ["GET", "POST"]),
        ("/ui/<entity:entity>/<int:record_id>/delete", "delete", delete, ["POST"]),
        ("/ui/<entity:entity>/<int:record_id>/_move", "move", move, ["POST"]),
        ("/ui/<entity:entity>/<int:record_id>/_timeline", "record_timeline", timeline_part, ["GET"]),
        ("/ui/<entity:entity>/<int:record_id>/_compose/<action>", "compose", compose, ["POST"]),
        ("/ui/<entity:entity>/<int:record_id>/_field/<name>", "field", field_view, ["GET"]),
        ("/ui/<entity:entity>/<int:record_id>/_field/<name>", "field_save", field_save, ["POST"]),
        ("/ui/<entity:entity>/<int:record_id>/_field/<name>/edit", "field_edit", field_editor, ["GET"]),
    ]
    for path, endpoint, view, methods in rules:
        bp.add_url_rule(path, endpoint, view, methods=methods)
    return bp


def sign_in():
    """Every screen needs a signed-in, active user; pages send others to the login form."""
    if request.endpoint == "ui.lang":
        return None   # the login page offers the language switch too
    records = runtime().records
    identity = session_identity(records)
    if identity is None:
        if request.endpoint in JSON_ENDPOINTS:
            return jsonify(error=_("Your session has ended; sign in again.")), 401
        if request.headers.get("HX-Request"):   # a part of a page (inline edit): what was typed stays there
            return session_ended()
        return redirect(url_for("web.login_form", next=(request.full_path if request.query_string else request.path)
                                        if request.method == "GET" else None))
    g.identity = identity
    g.access = access_for(records, identity.user_id, identity.role or "")
    g.context = Context(user_id=identity.user_id, access=g.access)
    if session.get("must_change") and not (request.endpoint or "").startswith("profile."):
        return redirect(url_for("profile.page"))   # a temporary password an admin set: changed first
    return None


def session_ended():
    """The answer to an htmx request whose session has ended: a message in the page's
    ``#session-alert`` (the element that sent it, and what was typed in it, stay as they are)."""
    return (render_template("ui/_session_ended.html", next=request.headers.get("HX-Current-URL", "")), 401,
            {"HX-Retarget": "#session-alert", "HX-Reswap": "innerHTML"})


def session_resumed():
    """Signed in again (in another tab): the page's new CSRF token, and its "sign in again" message
    gone (htmx swaps both out of band)."""
    return render_template("ui/_session_resumed.html")


def shell() -> dict:
    """What every page's frame needs: the navigation, the user and the unread notifications."""
    if not hasattr(g, "access"):
        return {}
    lang = current_lang()
    modules: dict[str, list] = {}
    for ent in runtime().model.entities.values():
        if g.access.can(ent.name, "read"):
            modules.setdefault(ent.module or "other", []).append(ent)
    groups = nav_groups()
    return {"nav_modules": modules, "nav_groups": [(k, v) for k, v in groups if k not in modules],
            "nav_extras": {k: v for k, v in groups if k in modules}, "lang": lang, "me": g.access.user,
            "unread": unread_count(), "tr": label_text}


def nav_groups() -> list[tuple[str, list]]:
    """The plugins' navigation entries (``crm_nav_entries``) for this user, by group, in order. A
    group named like a module (``sales``) joins that module's menu, below its entities."""
    rt = runtime()
    entries = [e for found in reversed(rt.pm.hook.crm_nav_entries(runtime=rt, access=g.access)) for e in found or ()]
    groups: dict[str, list] = {}
    for entry in sorted(entries, key=lambda e: e.order):
        groups.setdefault(entry.group, []).append(entry)
    return list(groups.items())


__all__ = ["ui_blueprint"]
