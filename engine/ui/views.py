"""The screens of the web UI, one set for every entity of the model.

Every screen reads and writes through the record service with the signed-in user's ``Context``, so
the permissions, rules, workflows and automations that hold for the API hold here; no screen is
written for a particular entity. Pages are server-rendered; the few live parts (conditional fields
while typing, lookup type-ahead, kanban moves) call small JSON endpoints of this blueprint.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from werkzeug.datastructures import MultiDict

import sqlalchemy as sa
from flask import (Blueprint, Response, abort, current_app, g, jsonify, redirect, render_template, request,
                   session, url_for)

from engine.security.permissions import access_for
from engine.security.web import session_identity
from engine.storage.errors import Conflict, DeleteRestricted, FieldError, NotFound, PermissionDenied, RecordError, \
    ValidationFailed
from engine.storage.query import COUNT_CAP, Filter, ListQuery, QueryError, check_sort
from engine.storage.records import Context

from . import filters as fb
from .i18n import LANGUAGES, current_lang, translate as _
from .present import (Column, column, columns, display, form_sections, input_value, list_columns, lookup_titles,
                      title_of)

PAGE_SIZES = (25, 50, 100)
RELATED_ROWS = 10
KANBAN_CARDS = 50
JSON_ENDPOINTS = {"ui.form_state", "ui.lookup", "ui.move"}


def ui_blueprint() -> Blueprint:
    bp = Blueprint("ui", __name__)
    bp.before_request(_sign_in)
    bp.context_processor(_shell)
    rules = [
        ("/", "home", _home, ["GET"]),
        ("/ui/lang", "lang", _lang, ["POST"]),
        ("/ui/search", "search", _search, ["GET"]),
        ("/ui/notifications", "notifications", _notifications, ["GET"]),
        ("/ui/notifications/<int:record_id>/read", "notification_read", _notification_read, ["POST"]),
        ("/ui/dashboards/<name>", "dashboard", _dashboard, ["GET"]),
        ("/ui/<entity:entity>", "list", _list, ["GET"]),
        ("/ui/<entity:entity>/_bulk", "bulk", _bulk, ["POST"]),
        ("/ui/<entity:entity>/_views", "save_view", _save_view, ["POST"]),
        ("/ui/<entity:entity>/_views/<int:view_id>/delete", "delete_view", _delete_view, ["POST"]),
        ("/ui/<entity:entity>/_form_state", "form_state", _form_state, ["POST"]),
        ("/ui/<entity:entity>/_lookup", "lookup", _lookup, ["GET"]),
        ("/ui/<entity:entity>/kanban", "kanban", _kanban, ["GET"]),
        ("/ui/<entity:entity>/new", "new", _new, ["GET", "POST"]),
        ("/ui/<entity:entity>/<int:record_id>", "record", _record, ["GET"]),
        ("/ui/<entity:entity>/<int:record_id>/edit", "edit", _edit, ["GET", "POST"]),
        ("/ui/<entity:entity>/<int:record_id>/delete", "delete", _delete, ["POST"]),
        ("/ui/<entity:entity>/<int:record_id>/transition/<name>", "transition", _transition, ["GET", "POST"]),
        ("/ui/<entity:entity>/<int:record_id>/_move", "move", _move, ["POST"]),
    ]
    for path, endpoint, view, methods in rules:
        bp.add_url_rule(path, endpoint, view, methods=methods)
    return bp


# -- plumbing -------------------------------------------------------------------------------------

def _rt():
    return current_app.extensions["crm"]


def _sign_in():
    """Every screen needs a signed-in, active user; pages send others to the login form."""
    if request.endpoint == "ui.lang":
        return None   # the login page offers the language switch too
    records = _rt().records
    identity = session_identity(records)
    if identity is None:
        if request.endpoint in JSON_ENDPOINTS:
            return jsonify(error=_("Your session has ended; sign in again.")), 401
        return redirect(url_for("web.login_form", next=(request.full_path if request.query_string else request.path)
                                        if request.method == "GET" else None))
    g.identity = identity
    g.access = access_for(records, identity.user_id, identity.role or "")
    g.context = Context(user_id=identity.user_id, access=g.access)
    return None


def _shell() -> dict:
    """What every page's frame needs: the navigation, the user and the unread notifications."""
    if not hasattr(g, "access"):
        return {}
    lang = current_lang()
    modules: dict[str, list] = {}
    for ent in _rt().model.entities.values():
        if g.access.can(ent.name, "read"):
            modules.setdefault(ent.module or "other", []).append(ent)
    dashboards = [d for d in (_rt().dashboards or {}).values()
                  if any(g.access.can(w.entity, "read") for w in d.widgets)]
    return {"nav_modules": modules, "nav_dashboards": dashboards, "lang": lang, "me": g.access.user,
            "unread": _unread_count(), "label": lambda x: x.get(lang) if hasattr(x, "get") else str(x or ""),
            "tr": _label_text}


def _label_text(value: Any) -> str:
    """A metadata label ({en:, zh:} or plain text) in the request's language."""
    if isinstance(value, dict) or hasattr(value, "texts"):
        texts = value.texts if hasattr(value, "texts") else value
        return texts.get(current_lang()) or texts.get("en") or next(iter(texts.values()), "")
    return str(value or "")


def _entity(name: str, op: str = "read"):
    ent = _rt().model.entities.get(name)
    if ent is None:
        abort(404)
    if not g.access.can(ent.name, op):
        try:
            g.access.require(ent.name, op)   # audits the denial
        except PermissionDenied as exc:
            if request.endpoint in JSON_ENDPOINTS:   # the page's script shows the answer's error
                answer = jsonify(error=str(exc))
                answer.status_code = 403
                abort(answer)
            abort(403)
    return ent


def _hidden(ent) -> frozenset[str]:
    return g.access.hidden(ent.name)


def _json_body() -> dict:
    """The request's JSON object ({} when the body is not one: a list, a number, not JSON)."""
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else {}


def _back(default: str) -> str:
    """A same-site place to return to (never another host)."""
    target = request.form.get("next") or request.args.get("next") or ""
    return target if target.startswith("/") and not target.startswith("//") else default


# -- home, language, search, notifications ---------------------------------------------------------

def _home():
    return render_template("ui/home.html")


def _lang():
    chosen = request.form.get("lang", "")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(_back("/"))


def _search():
    from engine.storage.search import search

    text = request.args.get("q", "").strip()
    groups: list[tuple[Any, list]] = []
    error = None
    if text and not 2 <= len(text) <= 200:
        error = _("Search for 2 to 200 characters.")
    elif text:
        found: dict[str, list] = {}
        for entity, record in search(_rt().records, text, g.context, limit=10):
            found.setdefault(entity, []).append(record)
        model = _rt().model
        groups = [(model.entity(e), [(r["id"], title_of(model.entity(e), r)) for r in rows]) for e, rows in found.items()]
    return render_template("ui/search.html", q=text, groups=groups, error=error)


def _my_notifications(unread_only: bool, limit: int) -> list[dict]:
    if "notification" not in _rt().model.entities or not g.access.can("notification", "read"):
        return []
    q = ListQuery("notification", limit=limit, filters=[Filter("user", "eq", g.identity.user_id)])
    if unread_only:
        q.filters.append(Filter("read", "eq", False))
    q.sort = check_sort(_rt().model.entity("notification"), "-created_at")
    return _rt().records.list(q, context=g.context).records


def _unread_count() -> int:
    if "notification" not in _rt().model.entities or not g.access.can("notification", "read"):
        return 0
    q = ListQuery("notification", limit=1, count=True,
                  filters=[Filter("user", "eq", g.identity.user_id), Filter("read", "eq", False)])
    return _rt().records.list(q, context=g.context).total or 0


def _notifications():
    rows = _my_notifications(False, 100)
    ent = _rt().model.entity("notification")
    cols = columns(ent, ["record"])
    titles = lookup_titles(_rt().records, ent, cols, rows, g.context)
    items = [{"id": r["id"], "message": r.get("message"), "read": r.get("read"), "at": r.get("created_at"),
              "record": r.get("record"), "about": display(cols[0], r.get("record"), current_lang(), titles),
              "url": _link(cols[0], r.get("record"))}
             for r in rows]
    return render_template("ui/notifications.html", items=items)


def _notification_read(record_id: int):
    try:
        _rt().records.update("notification", record_id, {"read": True}, context=g.context)
    except (NotFound, PermissionDenied, ValidationFailed):
        abort(404)
    return redirect(_back(url_for("ui.notifications")))


# -- dashboards -----------------------------------------------------------------------------------

def _dashboard(name: str):
    from markupsafe import Markup

    from engine.dashboards import compute
    from engine.dashboards.svg import render

    dashboard = (_rt().dashboards or {}).get(name)
    if dashboard is None:
        abort(404)
    widgets = [w for w in dashboard.widgets if g.access.can(w.entity, "read")]
    if not widgets:
        abort(403)
    charts = []
    for widget in widgets:
        result = compute(_rt().records, widget, access=g.access, lang=current_lang())
        charts.append({"widget": widget, "svg": Markup(render(result)), "type": widget.type})   # render() escapes
    return render_template("ui/dashboard.html", dashboard=dashboard, charts=charts)


# -- list -----------------------------------------------------------------------------------------

def _list(entity: str):
    ent = _entity(entity)
    hidden = _hidden(ent)
    args = request.args
    if "ff" in args:   # the filter builder was submitted: turn its rows into where= and come back
        return _apply_builder(ent, hidden)
    cols = list_columns(ent, hidden)
    size = int(args.get("size")) if args.get("size", "").isdigit() and int(args["size"]) in PAGE_SIZES else PAGE_SIZES[0]
    q = ListQuery(ent.name, limit=size, cursor=args.get("cursor") or None, count=True)
    sort = args.get("sort") or (ent.layouts.get("list") or {}).get("sort") or "-id"
    where = args.get("where", "").strip()
    error, page = None, None
    try:
        q.sort = check_sort(ent, sort, hidden)
        q.formula = where or None
        q.columns = tuple(dict.fromkeys(("id", "version", *(c.name for c in cols))))
        page = _rt().records.list(q, timeout_ms=5_000, context=g.context)
    except (QueryError, ValidationFailed) as exc:
        error = "; ".join(str(e) for e in exc.errors)
    except RecordError as exc:
        error = str(exc)
    rows = page.records if page else []
    lang = current_lang()
    titles = lookup_titles(_rt().records, ent, cols, rows, g.context)
    table = [{"id": r["id"], "cells": [(c, display(c, r.get(c.name), lang, titles), _link(c, r.get(c.name)))
                                       for c in cols]} for r in rows]
    offered = (ent.layouts.get("list") or {}).get("filters") or []   # the layout's filter fields first
    names = dict.fromkeys([*offered, "id", *ent.fields, "owner_id", "created_at", "updated_at"])
    filterable = [c for c in columns(ent, names, hidden) if c.sortable and c.kind not in ("json", "reference")]
    editable = [c for c in _editable(ent, [column(ent, n) for n in ent.fields]) if c.widget not in ("json", "reference")]
    return render_template(
        "ui/list.html", ent=ent, cols=cols, table=table, page=page, error=error, where=where, sort=sort, size=size,
        sizes=PAGE_SIZES, count_cap=COUNT_CAP, filterable=filterable, operators=fb.OPERATORS,
        operators_for=fb.operators_for, views=_views(ent), editable=editable,
        export_url=_export_url(ent, cols, where, sort), can=_can(ent),
        sort_url=lambda name: _url_with(sort=_toggle(sort, name), cursor=None),
        next_url=_url_with(cursor=page.next_cursor) if page and page.next_cursor else None,
        first_url=_url_with(cursor=None) if args.get("cursor") else None)


def _apply_builder(ent, hidden):
    args = request.args
    parts = [args.get("where", "").strip()] if args.get("keep") else []
    problems = []
    for name, op, value in zip(args.getlist("ff"), args.getlist("fo"), args.getlist("fv")):
        if not name:
            continue
        col = column(ent, name)
        if col is None or name in hidden:
            problems.append(f"{name}: unknown field")
            continue
        try:
            parts.append(fb.condition(col, op, value))
        except fb.FilterError as exc:
            problems.append(str(exc))
    where = fb.combine(parts)
    params = {"where": where, "sort": args.get("sort", "")}
    if problems:
        params["problem"] = "; ".join(problems)
    return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({k: v for k, v in params.items() if v})}")


def _toggle(sort: str, name: str) -> str:
    first = sort.split(",")[0]
    return f"-{name}" if first == name else name


def _url_with(**changes) -> str:
    params = {k: v for k, v in request.args.items() if k not in changes}
    params.update({k: v for k, v in changes.items() if v is not None})
    return f"{request.path}?{urlencode(params)}" if params else request.path


def _link(col: Column, value: Any) -> str | None:
    if value is None:
        return None
    if col.kind == "reference" and hasattr(value, "entity"):
        return url_for("ui.record", entity=value.entity, record_id=value.id) if g.access.can(value.entity, "read") else None
    if col.target and isinstance(value, int) and g.access.can(col.target, "read"):
        return url_for("ui.record", entity=col.target, record_id=value)
    return None


def _export_url(ent, cols, where: str, sort: str) -> str | None:
    if not g.access.can(ent.name, "export"):
        return None
    params = {"fields": ",".join(c.name for c in cols if c.field.stored or c.system or c.field.computed_on_read),
              "sort": sort}
    if where:
        params["where"] = where
    return f"/api/v1/{ent.name}/_export?{urlencode(params)}"


def _can(ent) -> dict[str, bool]:
    return {op: g.access.can(ent.name, op) for op in ("create", "update", "delete", "export")}


def _views(ent) -> list[dict]:
    table = _rt().records.metadata.tables["_crm_saved_view"]
    with _rt().db.read() as conn:
        rows = conn.execute(sa.select(table).where(table.c.user_id == g.identity.user_id, table.c.entity == ent.name)
                            .order_by(table.c.name)).mappings().all()
    return [{"id": r["id"], "name": r["name"],
             "url": f"{url_for('ui.list', entity=ent.name)}?{urlencode({k: v for k, v in (('where', r['where_text']), ('sort', r['sort']), ('view', r['id'])) if v})}"}
            for r in rows]


def _save_view(entity: str):
    ent = _entity(entity)
    name = request.form.get("name", "").strip()[:120]
    where, sort = request.form.get("where", "").strip(), request.form.get("sort", "").strip()[:255]
    if not name:
        return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({'where': where, 'sort': sort, 'problem': _('Give the view a name.')})}")
    try:   # a view is saved only if it runs
        check_sort(ent, sort, _hidden(ent)) if sort else None
        _rt().records.list(ListQuery(ent.name, limit=1, formula=where or None), context=g.context)
    except (QueryError, ValidationFailed) as exc:
        return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({'where': where, 'sort': sort, 'problem': '; '.join(map(str, exc.errors))})}")
    table = _rt().records.metadata.tables["_crm_saved_view"]
    with _rt().db.write() as conn:
        conn.execute(table.delete().where(table.c.user_id == g.identity.user_id, table.c.entity == ent.name,
                                          table.c.name == name))
        view_id = conn.execute(table.insert().values(user_id=g.identity.user_id, entity=ent.name, name=name,
                                                     where_text=where or None, sort=sort or None,
                                                     created_at=datetime.now(timezone.utc))).inserted_primary_key[0]
    params = {k: v for k, v in (("where", where), ("sort", sort), ("view", view_id)) if v}
    return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode(params)}")


def _delete_view(entity: str, view_id: int):
    ent = _entity(entity)
    table = _rt().records.metadata.tables["_crm_saved_view"]
    if view_id < 2**63:   # a larger id (a made-up URL) is no view; the database would refuse the number
        with _rt().db.write() as conn:
            conn.execute(table.delete().where(table.c.id == view_id, table.c.user_id == g.identity.user_id))
    return redirect(url_for("ui.list", entity=ent.name))


def _bulk(entity: str):
    ent = _entity(entity)
    ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()][:500]
    action = request.form.get("action")
    back = _back(url_for("ui.list", entity=ent.name))
    if not ids:
        return _with_message(back, _("Select at least one record."), "warning")
    if action == "delete":
        _entity(entity, "delete")
        write, done = (lambda rid: _rt().records.delete(ent.name, rid, context=g.context)), _("Deleted %(n)s record(s).")
    elif action == "update":
        _entity(entity, "update")
        col = column(ent, request.form.get("field", ""))
        if col is None or col not in _editable(ent, [col]):
            return _with_message(back, _("Choose a field you may change."), "danger")
        typed = request.form.get("value", "")
        # a yes/no field is typed here as text (yes, true, 1, no, ...): its field type reads it, and
        # blank is "no" as an unticked box in the form
        value = (typed.strip() or False) if col.widget == "checkbox" else _parse_input(col, MultiDict({col.name: typed}))
        write = lambda rid: _rt().records.update(ent.name, rid, {col.name: value}, context=g.context)  # noqa: E731
        done = _("Updated %(n)s record(s).")
    else:
        return _with_message(back, _("Unknown action."), "danger")
    failed: list[str] = []
    for record_id in ids:   # one write per record, each through the record service (not an import)
        try:
            write(record_id)
        except RecordError as exc:
            failed.append(f"#{record_id}: {exc}")
    message = done % {"n": len(ids) - len(failed)}
    if failed:
        message += " " + _("Not done:") + " " + "; ".join(failed[:10])
    return _with_message(back, message, "warning" if failed else "success")


def _with_message(url: str, message: str, kind: str = "info") -> Response:
    session["flash"] = {"message": message[:2000], "kind": kind}
    return redirect(url)


# -- forms ----------------------------------------------------------------------------------------

def _editable(ent, cols: list[Column | None]) -> list[Column]:
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


def _parse_input(col: Column, form) -> Any:
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
        return int(raw) if raw.isdigit() else raw
    if widget == "datetime" and len(raw) == 16:
        return raw + ":00+00:00"   # the picker gives minutes in UTC (the time zone the UI shows)
    return raw


def _submitted(ent, record: dict | None) -> tuple[dict, dict]:
    """(values to write, raw inputs to show again): only editable fields of the form, and on an
    update only those the user changed. "Changed" is against the values the form was loaded with
    (``_loaded``), not the record as it is now: a field someone else changed meanwhile, and this
    user did not touch, is not written back with the old value."""
    sections = form_sections(ent, _hidden(ent))
    cols = _editable(ent, [c for s in sections for c in s["fields"]])
    loaded = _loaded_values(ent, cols) if record is not None else {}
    values, raw = {}, {}
    for col in cols:
        if col.name not in request.form and col.widget not in ("checkbox", "multiselect"):
            continue
        if col.widget in ("checkbox", "multiselect") and f"_present_{col.name}" not in request.form:
            continue
        value = _parse_input(col, request.form)
        raw[col.name] = request.form.getlist(col.name) if col.widget == "multiselect" else request.form.get(col.name, "")
        baseline = loaded[col.name] if col.name in loaded else (record or {}).get(col.name)
        if record is not None and _same(col, value, baseline):
            continue
        values[col.name] = value
    return values, raw


def _loaded_form(ent, record: dict) -> str:
    """The editable values as the form shows them, for ``_submitted`` to tell what the user changed."""
    sections = form_sections(ent, _hidden(ent))
    cols = _editable(ent, [c for s in sections for c in s["fields"]])
    return json.dumps({c.name: input_value(c, record.get(c.name)) for c in cols}, separators=(",", ":"))


def _loaded_values(ent, cols: list[Column]) -> dict:
    """``_loaded`` read back as stored values (fields whose loaded text does not read are left out:
    they count as changed when they differ from the record)."""
    try:
        shown = json.loads(request.form.get("_loaded") or "{}")
    except ValueError:
        return {}
    if not isinstance(shown, dict):
        return {}
    out = {}
    for col in cols:
        if col.name not in shown:
            continue
        text = shown[col.name]
        form = MultiDict([(col.name, v) for v in text] if isinstance(text, list) else
                         [(col.name, "1")] if col.widget == "checkbox" and text in ("True", "true", "1") else
                         [] if col.widget == "checkbox" else [(col.name, str(text))])
        parsed = _parse_input(col, form)
        try:
            out[col.name] = None if parsed is None else col.field.coerce(parsed)
        except Exception:   # noqa: BLE001 - not a value this field holds: compare with the record instead
            continue
    return out


def _same(col: Column, value: Any, current: Any) -> bool:
    if value is None or current is None:
        return value is None and current in (None, "", [])
    try:
        given = col.field.coerce(value)
    except Exception:   # noqa: BLE001 - an unreadable value differs; the record service reports it
        return False
    if col.widget == "datetime" and isinstance(current, datetime):
        # the picker holds minutes: the minute it showed keeps the stored seconds
        return given == current.replace(second=0, microsecond=0) or given == current
    return given == current


def _new(entity: str):
    ent = _entity(entity, "create")
    if request.method == "POST":
        values, raw = _submitted(ent, None)
        if values.get("owner_id") is None:
            values.pop("owner_id", None)   # a blank owner is the creator, as in the API (not "nobody's")
        try:
            record = _rt().records.create(ent.name, values, context=g.context)
        except ValidationFailed as exc:
            return _form(ent, None, raw, exc.errors), 422
        except RecordError as exc:
            return _form(ent, None, raw, [FieldError(None, "error", str(exc))]), 422
        return _with_message(url_for("ui.record", entity=ent.name, record_id=record["id"]),
                             _("%(thing)s created.") % {"thing": ent.label.get(current_lang())}, "success")
    defaults = {f.name: input_value(column(ent, f.name), f.default) for f in ent.fields.values()
                if f.default is not None and f.default_formula is None}
    defaults["owner_id"] = str(g.identity.user_id)   # the record service's default: its creator
    prefill = {k: v for k, v in request.args.items() if k in ent.fields or k == "owner_id"}
    return _form(ent, None, {**defaults, **prefill}, [])


def _edit(entity: str, record_id: int):
    ent = _entity(entity, "update")
    record = _load(ent, record_id)
    if request.method == "POST":
        values, raw = _submitted(ent, record)
        version = request.form.get("version", "")
        try:
            if values:
                _rt().records.update(ent.name, record_id, values, version=int(version) if version.isdigit() else None,
                                     context=g.context)
        except (ValidationFailed, Conflict, RecordError) as exc:
            # the form comes back with the user's changes over the record as it is now (with its
            # version): saving again writes those changes and nothing else
            errors = exc.errors if isinstance(exc, ValidationFailed) else [
                FieldError(None, "conflict" if isinstance(exc, Conflict) else "error", str(exc))]
            mine = {k: v for k, v in raw.items() if k in values}
            return _form(ent, record, mine, errors), 409 if isinstance(exc, Conflict) else 422
        return _with_message(url_for("ui.record", entity=ent.name, record_id=record_id), _("Saved."), "success")
    return _form(ent, record, None, [])


def _form(ent, record: dict | None, raw: dict | None, errors: list[FieldError]) -> str:
    """The form: on an error, the user's own inputs come back with each error beside its field."""
    lang = current_lang()
    sections = form_sections(ent, _hidden(ent))
    editable = {c.name for c in _editable(ent, [c for s in sections for c in s["fields"]])}
    by_field: dict[str, list[str]] = {}
    general = []
    shown = {c.name for s in sections for c in s["fields"]}
    for e in errors:
        message = _rule_message(ent, e, lang)
        (by_field.setdefault(e.field, []) if e.field in shown else general).append(
            message if e.field in shown else (f"{e.field}: {message}" if e.field else message))
    state = _conditions(ent, {**(record or {}), **_coerced(ent, raw or {})}, record)
    values = {}
    for s in sections:
        for c in s["fields"]:
            source = raw if raw is not None and c.name in raw else (record or {})
            values[c.name] = input_value(c, source.get(c.name)) if source is not raw else raw[c.name]
    lookups = [c for s in sections for c in s["fields"] if c.target]
    titles = lookup_titles(_rt().records, ent, lookups, [{**(record or {}), **_coerced(ent, raw or {})}], g.context)
    lookup_text = {c.name: display(c, _as_int(values.get(c.name)), lang, titles) for c in lookups}
    return render_template("ui/form.html", ent=ent, record=record, sections=sections, values=values,
                           loaded=_loaded_form(ent, record) if record else None,
                           errors=by_field, general=general, editable=editable, state=state,
                           lookup_text=lookup_text, title=title_of(ent, record) if record else None)


def _rule_message(ent, error: FieldError, lang: str) -> str:
    """An error's message; a validation rule's (code ``rule:<name>``) in the request's language
    when the rule declares one (the record service reports the English text)."""
    if error.code.startswith("rule:"):
        rule = next((v for v in ent.validations if v.get("name") == error.code[5:]), None)
        message = (rule or {}).get("message")
        if isinstance(message, dict) and message.get(lang):
            return str(message[lang])
    return error.message


def _as_int(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _coerced(ent, raw: dict) -> dict:
    """Raw form inputs as values (those that do not convert are left out)."""
    out = {}
    for name, value in raw.items():
        col = column(ent, name)
        if col is None or (col.system and name != "owner_id"):   # the owner is the one system column a form writes
            continue
        if value in ("", None, []):
            out[name] = None
            continue
        try:
            out[name] = col.field.coerce(value)
        except Exception:   # noqa: BLE001 - shown back as typed; the record service names the error
            continue
    return out


def _load(ent, record_id: int) -> dict:
    try:
        return _rt().records.get(ent.name, record_id, context=g.context)
    except NotFound:
        abort(404)


# -- conditional fields (one language: the formulas run here, on the server) -----------------------

def _conditions(ent, record: dict, old: dict | None) -> dict[str, dict[str, bool]]:
    """{"visible"|"required"|"readonly": {field: bool}} for the fields that declare a condition."""
    from engine import rules

    svc = _rt().records
    out: dict[str, dict[str, bool]] = {"visible": {}, "required": {}, "readonly": {}}
    for field in ent.fields.values():
        for prop, key in (("visible_when", "visible"), ("required_when", "required"), ("readonly_when", "readonly")):
            text = field.prop(prop)
            if not isinstance(text, str):
                continue
            compiled = rules.compile(text, ent.name, svc.model, registry=svc.functions)
            try:
                related = None
                paths = frozenset(p for p in compiled.fields if "." in p)
                if paths:
                    with svc.db.read() as conn:
                        related = rules.fetch_related(conn, svc.metadata, svc.model, ent.name, record, paths)
                out[key][field.name] = compiled.evaluate(record, prior=old, is_new=old is None, related=related,
                                                         user=g.access.user) is True
            except rules.RuleError:
                out[key][field.name] = key == "visible"
    return out


def _form_state(entity: str):
    ent = _entity(entity)
    body = _json_body()
    old = None
    if isinstance(body.get("id"), int):
        try:
            old = _rt().records.get(ent.name, body["id"], context=g.context)
        except (NotFound, PermissionDenied):
            return jsonify(error="not found"), 404
    raw = body.get("values") if isinstance(body.get("values"), dict) else {}
    raw = {k: v for k, v in raw.items() if k in ent.fields and k not in _hidden(ent)}
    return jsonify(_conditions(ent, {**(old or {}), **_coerced(ent, raw)}, old))


def _lookup(entity: str):
    """Type-ahead for lookup fields: records of ``entity`` whose title contains ``q``."""
    ent = _entity(entity)
    text = request.args.get("q", "").strip()[:100]
    q = ListQuery(ent.name, limit=10)
    title = ent.fields.get(ent.title)
    if text and title is not None and title.stored and title.type_name in fb.TEXT_KINDS and ent.title not in _hidden(ent):
        q.where = _rt().records.table(ent.name).c[ent.title].icontains(text, autoescape=True)
        q.sort = check_sort(ent, ent.title)
    elif text.isdigit():
        q.filters = [Filter("id", "eq", int(text))]
    page = _rt().records.list(q, timeout_ms=2_000, context=g.context)
    return jsonify([{"id": r["id"], "title": title_of(ent, r)} for r in page.records])


# -- record page ----------------------------------------------------------------------------------

def _record(entity: str, record_id: int):
    ent = _entity(entity)
    record = _load(ent, record_id)
    lang = current_lang()
    sections = form_sections(ent, _hidden(ent))
    cols = [c for s in sections for c in s["fields"]]
    titles = lookup_titles(_rt().records, ent, cols, [record], g.context)
    shown = {c.name: (display(c, record.get(c.name), lang, titles), _link(c, record.get(c.name))) for c in cols}
    state = _conditions(ent, record, record)
    return render_template("ui/record.html", ent=ent, record=record, title=title_of(ent, record), sections=sections,
                           shown=shown, state=state, transitions=_transitions(ent, record),
                           related=_related(ent, record_id), timeline=_timeline(ent, record),
                           history=_field_history(ent, record), can=_can(ent))


def _transitions(ent, record: dict) -> list:
    wf = _rt().workflow
    if wf is None or ent.name not in wf.specs.workflows or not g.access.can(ent.name, "update"):
        return []
    with _rt().db.read() as conn:
        return wf.available(conn, ent, record, g.context)


def _related(ent, record_id: int) -> list[dict]:
    """The related lists: the layout's ``related`` entries (entity.field), else every lookup here."""
    model = _rt().model
    declared = (ent.layouts.get("related") or
                [f"{e.name}.{f.name}" for e, f in model.references_to(ent.name) if f.type_name == "lookup"])
    lang = current_lang()
    out = []
    for item in declared:
        child_name, _dot, field_name = item.partition(".")
        child = model.entities.get(child_name)
        if child is None or field_name not in child.fields or not g.access.can(child.name, "read") \
                or field_name in g.access.hidden(child.name):
            continue
        field = child.fields[field_name]
        value = f"{ent.name}:{record_id}" if field.type_name == "reference" else record_id
        q = ListQuery(child.name, limit=RELATED_ROWS, count=True, filters=[Filter(field_name, "eq", field.coerce(value))])
        q.sort = check_sort(child, (child.layouts.get("list") or {}).get("sort") or "-id")
        page = _rt().records.list(q, context=g.context)
        cols = [c for c in list_columns(child, g.access.hidden(child.name)) if c.name != field_name][:5]
        titles = lookup_titles(_rt().records, child, cols, page.records, g.context)
        out.append({"entity": child, "field": field, "total": page.total, "cols": cols,
                    "rows": [{"id": r["id"], "cells": [display(c, r.get(c.name), lang, titles) for c in cols]}
                             for r in page.records],
                    "new_url": (f"{url_for('ui.new', entity=child.name)}?{urlencode({field_name: value})}"
                                if g.access.can(child.name, "create") else None)})
    return out


def _timeline(ent, record: dict) -> list[dict]:
    """Activity on the record, newest first: the records attached to it through a reference field
    (activities, notes, e-mails: whatever the model declares)."""
    model, svc = _rt().model, _rt().records
    lang = current_lang()
    items: list[dict] = []
    for child in model.entities.values():
        if not g.access.can(child.name, "read"):
            continue
        for field in child.fields.values():
            if field.type_name != "reference" or field.name in g.access.hidden(child.name):
                continue
            allowed = field.prop("to")
            if allowed and ent.name not in allowed:
                continue
            q = ListQuery(child.name, limit=20, filters=[Filter(field.name, "eq", field.coerce(f"{ent.name}:{record['id']}"))])
            q.sort = check_sort(child, "-created_at")
            for r in svc.list(q, context=g.context).records:
                items.append({"at": r.get("created_at"), "kind": child.label.get(lang), "text": title_of(child, r),
                              "url": url_for("ui.record", entity=child.name, record_id=r["id"])})
    items.sort(key=lambda i: i["at"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    return items[:50]


def _field_history(ent, record: dict) -> list[dict]:
    """The changes of the record's tracked fields the user may read, newest first."""
    svc, lang = _rt().records, current_lang()
    rows = [h for h in svc.history_of(ent.name, record["id"], context=g.context)[-100:]
            if h["field"] not in g.access.hidden(ent.name) and column(ent, h["field"]) is not None]
    people = svc.fetch_many("user", {h["changed_by"] for h in rows} - {None}, context=g.context) \
        if g.access.can("user", "read") else {}
    return [{"at": h["changed_at"], "field": column(ent, h["field"]).label(lang),
             "old": _history_text(column(ent, h["field"]), h["old_value"], lang),
             "new": _history_text(column(ent, h["field"]), h["new_value"], lang),
             "by": (people.get(h["changed_by"]) or {}).get("name") or (f"#{h['changed_by']}" if h["changed_by"] else "")}
            for h in reversed(rows)]


def _history_text(col: Column, value: Any, lang: str) -> str:
    if value is None:
        return "—"
    if col.kind == "picklist":
        return display(col, value, lang)
    return str(value)


def _delete(entity: str, record_id: int):
    ent = _entity(entity, "delete")
    version = request.form.get("version", "")
    try:
        _rt().records.delete(ent.name, record_id, version=int(version) if version.isdigit() else None,
                             context=g.context)
    except (DeleteRestricted, Conflict, ValidationFailed) as exc:
        return _with_message(url_for("ui.record", entity=ent.name, record_id=record_id), str(exc), "danger")
    except NotFound:
        abort(404)
    return _with_message(url_for("ui.list", entity=ent.name), _("Deleted."), "success")


def _transition(entity: str, record_id: int, name: str):
    """Take a transition; one that requires fields first asks for them."""
    ent = _entity(entity, "update")
    record = _load(ent, record_id)
    wf = _rt().workflow.specs.workflows.get(ent.name) if _rt().workflow else None
    t = wf.named(name) if wf else None
    if t is None:
        abort(404)
    cols = _editable(ent, [column(ent, n) for n in t.requires])
    if request.method == "GET":
        return render_template("ui/transition.html", ent=ent, record=record, t=t, cols=cols, errors={},
                               values={c.name: input_value(c, record.get(c.name)) for c in cols},
                               title=title_of(ent, record))
    values = {c.name: _parse_input(c, request.form) for c in cols if c.name in request.form or c.widget == "checkbox"}
    version = request.form.get("version", "")
    try:
        _rt().records.transition(ent.name, record_id, name, values,
                                 version=int(version) if version.isdigit() else None, context=g.context)
    except ValidationFailed as exc:
        if cols:
            errors: dict[str, list[str]] = {}
            for e in exc.errors:
                errors.setdefault(e.field if e.field in t.requires else "", []).append(e.message if e.field in t.requires else str(e))
            return render_template("ui/transition.html", ent=ent, record=record, t=t, cols=cols, errors=errors,
                                   values={c.name: request.form.get(c.name, "") for c in cols},
                                   title=title_of(ent, record)), 422
        return _with_message(url_for("ui.record", entity=ent.name, record_id=record_id),
                             "; ".join(str(e) for e in exc.errors), "danger")
    except RecordError as exc:
        return _with_message(url_for("ui.record", entity=ent.name, record_id=record_id), str(exc), "danger")
    return _with_message(url_for("ui.record", entity=ent.name, record_id=record_id),
                         _("Done: %(name)s.") % {"name": t.label.get(current_lang())}, "success")


# -- kanban ---------------------------------------------------------------------------------------

def _kanban(entity: str):
    ent = _entity(entity)
    layout = ent.layouts.get("kanban")
    if not layout:
        abort(404)
    hidden = _hidden(ent)
    group = column(ent, layout["group_by"])
    if group is None or group.name in hidden:
        abort(403)
    lang = current_lang()
    cards = columns(ent, layout.get("card") or [ent.title], hidden)
    where = request.args.get("where", "").strip()
    lanes, error = [], None
    for option in group.field.options:
        q = ListQuery(ent.name, limit=KANBAN_CARDS, count=True, filters=[Filter(group.name, "eq", option.value)],
                      formula=where or None)
        q.sort = check_sort(ent, (ent.layouts.get("list") or {}).get("sort") or "-id", hidden)
        try:
            page = _rt().records.list(q, timeout_ms=5_000, context=g.context)
        except (QueryError, ValidationFailed) as exc:
            error = "; ".join(str(e) for e in exc.errors)
            break
        titles = lookup_titles(_rt().records, ent, cards, page.records, g.context)
        lanes.append({"value": option.value, "label": option.label.get(lang), "total": page.total,
                      "cards": [{"id": r["id"], "version": r["version"],
                                 "lines": [(c, display(c, r.get(c.name), lang, titles)) for c in cards]}
                                for r in page.records]})
    return render_template("ui/kanban.html", ent=ent, group=group, lanes=lanes, error=error, where=where,
                           can_move=g.access.can(ent.name, "update") and bool(_editable(ent, [group])))


def _move(entity: str, record_id: int):
    """A kanban card dropped in another column: the workflow transition to that value if the user
    may take one now, else a plain change of the field (which the workflow refuses with its reason)."""
    ent = _entity(entity, "update")
    layout = ent.layouts.get("kanban") or {}
    group = layout.get("group_by")
    body = _json_body()
    to = body.get("to")
    if not group or not isinstance(to, str):
        return jsonify(error=_("Nothing to move.")), 400
    try:
        record = _rt().records.get(ent.name, record_id, context=g.context)
        taken = next((t for t in _transitions(ent, record) if t.target == to), None)
        version = body.get("version") if isinstance(body.get("version"), int) else None
        if taken is not None:
            record = _rt().records.transition(ent.name, record_id, taken.name, {}, version=version, context=g.context)
        else:
            record = _rt().records.update(ent.name, record_id, {group: to}, version=version, context=g.context)
    except ValidationFailed as exc:
        return jsonify(error="; ".join(str(e) for e in exc.errors)), 422
    except NotFound:
        return jsonify(error=_("This record no longer exists.")), 404
    except RecordError as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(id=record["id"], version=record["version"], value=record.get(group))


__all__ = ["ui_blueprint"]
