"""Pools on the web UI: a navigation entry and a screen per pool the user may see (the records with
the columns of the entity's list layout, Claim per row or for the selected ones, Assign for who may,
and what the user may still claim), and on the page of a record its owner holds from a pool a
Return button that asks for the reason."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, g, render_template, request, url_for

from engine.fields import whole_number
from engine.plugins import NavEntry, RecordAction
from engine.storage.errors import RecordError
from engine.storage.query import ListQuery, QueryError, check_sort
from engine.ui.common import hidden_of, link_to, runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import say
from engine.ui.i18n import translate as _
from engine.ui.present import display, list_columns, lookup_titles, title_of

from .plugin import pools_of
from .service import PoolError, role_of

GROUP = "Pools"   # the menu of a pool whose entity has no module (else that module's menu)
PAGE = 50


def blueprint() -> Blueprint:
    bp = ui_routes("pools_ui", __name__)
    bp.add_url_rule("/ui/pools/<name>", "pool", pool_page, methods=["GET"])
    bp.add_url_rule("/ui/pools/<name>/claim", "claim", claim, methods=["POST"])
    bp.add_url_rule("/ui/pools/<name>/assign", "assign", assign, methods=["POST"])
    bp.add_url_rule("/ui/pools/<name>/return/<int:record_id>", "give_back", give_back, methods=["GET", "POST"])
    return bp


def nav_entries(service, access) -> list[NavEntry]:
    if service is None:
        return []
    model = service.runtime.model
    return [NavEntry(key=f"pool:{p.name}", label=dict(p.label.texts), group=model.entity(p.entity).module or GROUP,
                     url=url_for("pools_ui.pool", name=p.name), order=50) for p in service.visible(role_of(access))]


def return_action(service, ent, record: dict, access) -> list[RecordAction]:
    """Return to the pool, on a record its user holds from a pool (and whose role may return)."""
    if service is None or record.get("owner_id") != access.user_id:
        return []
    hold = service.hold_of(ent.name, record["id"])
    if hold is None or hold["user_id"] != access.user_id or not service.pool(hold["pool"]).may(role_of(access), "return"):
        return []
    return [RecordAction(key="pool-return", label=_("Return to pool"), method="get", style="outline-warning",
                         kind="pool", order=50,
                         url=url_for("pools_ui.give_back", name=hold["pool"], record_id=record["id"]))]


def _pool(name: str):
    service = pools_of(runtime())
    pool = service.pools.get(name) if service is not None else None
    if pool is None or not pool.may(role_of(g.access), "see"):
        abort(404)
    return service, pool


def pool_page(name: str):
    service, pool = _pool(name)
    ent = runtime().model.entity(pool.entity)
    hidden = hidden_of(ent) if not g.access.admin else frozenset()
    cols = [c for c in list_columns(ent, hidden) if c.name != "owner_id"]   # a pool's records have none
    sort = request.args.get("sort") or (ent.layouts.get("list") or {}).get("sort") or "-id"
    error, page = None, None
    try:
        q = ListQuery(ent.name, limit=PAGE, cursor=request.args.get("cursor") or None, count=True,
                      sort=check_sort(ent, sort, hidden), columns=tuple(dict.fromkeys(("id", *(c.name for c in cols)))))
        page = service.page(pool, q, access=g.access, user_id=g.access.user_id, timeout_ms=5_000)
    except (QueryError, RecordError) as exc:
        error = say(exc)
    rows = page.records if page else []
    lang = current_lang()
    titles = lookup_titles(runtime().records, ent, cols, rows, g.context)
    table = [{"id": r["id"], "cells": [(c, display(c, r.get(c.name), lang, titles), link_to(c, r.get(c.name)))
                                       for c in cols]} for r in rows]
    role = role_of(g.access)
    return render_template("pools/pool.html", pool=pool, ent=ent, cols=cols, table=table, page=page, error=error,
                           quota=service.quota(pool, g.access.user_id, role), may={
                               a: pool.may(role, a) for a in ("claim", "assign")},
                           users=_users() if pool.may(role, "assign") else [],
                           next_url=f"{request.path}?cursor={page.next_cursor}" if page and page.next_cursor else None)


def _users() -> list[tuple[int, str]]:
    users = runtime().records.table("user")
    with runtime().db.read() as conn:
        return [(r.id, r.name) for r in conn.execute(sa.select(users.c.id, users.c.name)
                                                   .where(users.c.active.is_not(False)).order_by(users.c.name).limit(500))]


def _selected() -> list[int]:
    one = whole_number(request.form.get("one", ""))
    raw = [one] if one else [whole_number(v) for v in request.form.getlist("ids")]
    return [i for i in raw if i]


def claim(name: str):
    service, pool = _pool(name)
    back = url_for("pools_ui.pool", name=pool.name)
    ids = _selected()
    if not ids:
        return with_message(back, _("Select the records to claim."), "warning")
    try:
        done = service.claim(pool.name, ids, user_id=g.access.user_id, role=role_of(g.access))
    except PoolError as exc:
        return with_message(back, say(exc.message), "danger")
    return with_message(back, _("Claimed %(n)s record(s); they are yours now.") % {"n": len(done)}, "success")


def assign(name: str):
    service, pool = _pool(name)
    back = url_for("pools_ui.pool", name=pool.name)
    ids, user = _selected(), whole_number(request.form.get("user", ""))
    if not ids or not user:
        return with_message(back, _("Select the records and the user to assign them to."), "warning")
    try:
        done = service.assign(pool.name, ids, to_user=user, actor_id=g.access.user_id, role=role_of(g.access))
    except PoolError as exc:
        return with_message(back, say(exc.message), "danger")
    return with_message(back, _("Assigned %(n)s record(s).") % {"n": len(done)}, "success")


def give_back(name: str, record_id: int):
    """The form that asks for the reason, and its post."""
    service, pool = _pool(name)
    ent = runtime().model.entity(pool.entity)
    record = runtime().records.get(ent.name, record_id, context=g.context)
    error = None
    if request.method == "POST":
        try:
            service.give_back(pool.name, [record_id], user_id=g.access.user_id, role=role_of(g.access),
                              reason=request.form.get("reason") or None, note=request.form.get("note") or None)
        except PoolError as exc:
            error = exc
        else:
            return with_message(url_for("pools_ui.pool", name=pool.name),
                                _("Returned to %(pool)s.") % {"pool": pool.label.get(current_lang())}, "success")
    status = 422 if error is not None else 200
    return render_template("pools/return.html", pool=pool, ent=ent, record=record, title=title_of(ent, record),
                           error=error, form=request.form), status


def home_panel(service, access) -> list:
    """The home page's "Going back to the pool soon": the user's records from a pool with a recycle date,
    soonest first (only those they may still read)."""
    from markupsafe import Markup, escape

    from engine.plugins import Panel

    if service is None or not service.pools:
        return []
    h = service.holds
    with service.runtime.records.db.read() as conn:
        rows = conn.execute(sa.select(h.c.pool, h.c.record_id, h.c.due_at).where(
            h.c.user_id == access.user_id, h.c.due_at.is_not(None)).order_by(h.c.due_at).limit(8)).all()
    items = []
    for pool_name, record_id, due_at in rows:
        pool = service.pools.get(pool_name)
        if pool is None or not access.can(pool.entity, "read"):
            continue
        ent = runtime().model.entity(pool.entity)
        try:
            record = runtime().records.get(pool.entity, record_id, context=g.context)
        except RecordError:
            continue
        items.append(f'<li class="d-flex justify-content-between gap-2 py-1"><a class="text-truncate" href="'
                     f'{escape(url_for("ui.record", entity=pool.entity, record_id=record_id))}">{escape(title_of(ent, record))}</a>'
                     f'<span class="small text-nowrap text-warning-emphasis">{escape(f"{due_at:%Y-%m-%d}")}</span></li>')
    body = (f'<p class="small text-body-secondary mb-2" data-count="recycling">{escape(_("%(n)s go back to a pool unless followed up") % {"n": len(items)})}</p>'
            f'<ul class="list-unstyled mb-0">{"".join(items)}</ul>' if items else
            f'<p class="text-body-secondary mb-0">{escape(_("None of your records goes back to a pool soon."))}</p>')
    return [Panel(key="recycling", title=_("Going back to the pool"), html=Markup(body), order=50)]
