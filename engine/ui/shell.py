"""The screens around the records: home (with the plugins' panels), the language switch, search and
notifications."""

from __future__ import annotations

from typing import Any

from flask import abort, g, redirect, render_template, request, session, url_for

from engine.storage.errors import NotFound, PermissionDenied, ValidationFailed
from engine.storage.query import Filter, ListQuery, check_sort

from .common import back_to, link_to, runtime
from .i18n import LANGUAGES, current_lang
from .i18n import translate as _
from .present import columns, display, lookup_titles, title_of


def home():
    rt = runtime()
    panels = [p for found in reversed(rt.pm.hook.crm_home_panels(runtime=rt, access=g.access)) for p in found or ()]
    from datetime import datetime, timezone

    from .i18n import current_zone

    now = datetime.now(timezone.utc).astimezone(current_zone())
    return render_template("ui/home.html", home_panels=home_order(rt, g.access.role, panels),
                           today_text=now.strftime("%Y-%m-%d"))


def home_order(rt, role: str | None, panels: list) -> list:
    """The panels the role's ``home:`` list names, in its order; without one, every panel by its ``order``."""
    declared = rt.model.roles.get(role or "")
    wanted = getattr(declared, "home", None)
    if wanted is None:
        return sorted(panels, key=lambda p: p.order)
    by_key = {p.key: p for p in panels}
    return [by_key[k] for k in wanted if k in by_key]


def choose_language():
    chosen = request.form.get("lang", "")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(back_to("/"))


def search_page():
    from engine.storage.search import search

    text = request.args.get("q", "").strip()
    groups: list[tuple[Any, list]] = []
    error = None
    if text and not 2 <= len(text) <= 200:
        error = _("Search for 2 to 200 characters.")
    elif text:
        found: dict[str, list] = {}
        for entity, record in search(runtime().records, text, g.context, limit=10):
            found.setdefault(entity, []).append(record)
        model = runtime().model
        groups = [(model.entity(e), [(r["id"], title_of(model.entity(e), r)) for r in rows]) for e, rows in found.items()]
    return render_template("ui/search.html", q=text, groups=groups, error=error)


def _my_notifications(unread_only: bool, limit: int) -> list[dict]:
    if "notification" not in runtime().model.entities or not g.access.can("notification", "read"):
        return []
    q = ListQuery("notification", limit=limit, filters=[Filter("user", "eq", g.identity.user_id)])
    if unread_only:
        q.filters.append(Filter("read", "eq", False))
    q.sort = check_sort(runtime().model.entity("notification"), "-created_at")
    return runtime().records.list(q, context=g.context).records


def unread_count() -> int:
    if "notification" not in runtime().model.entities or not g.access.can("notification", "read"):
        return 0
    q = ListQuery("notification", limit=1, count=True,
                  filters=[Filter("user", "eq", g.identity.user_id), Filter("read", "eq", False)])
    return runtime().records.list(q, context=g.context).total or 0


def notifications_page():
    rows = _my_notifications(False, 100)
    ent = runtime().model.entity("notification")
    cols = columns(ent, ["record"])
    titles = lookup_titles(runtime().records, ent, cols, rows, g.context)
    items = [{"id": r["id"], "message": r.get("message"), "read": r.get("read"), "at": r.get("created_at"),
              "record": r.get("record"), "about": display(cols[0], r.get("record"), current_lang(), titles),
              "url": link_to(cols[0], r.get("record"))}
             for r in rows]
    return render_template("ui/notifications.html", items=items)


def notification_read(record_id: int):
    try:
        runtime().records.update("notification", record_id, {"read": True}, context=g.context)
    except (NotFound, PermissionDenied, ValidationFailed):
        abort(404)
    return redirect(back_to(url_for("ui.notifications")))
