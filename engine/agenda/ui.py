"""The screens of a user's day: the home page's panels, the task list, the calendar, and the
recently viewed records (recorded after a record page is shown, by an after-request hook of the
UI, so the record page itself knows nothing of it).

Every read and write goes through the record service with the signed-in user's context, so a
user sees only the activities their role lets them see and a move is refused as an edit would be.
"""

from __future__ import annotations

import calendar as cal
import logging
from datetime import date, datetime, time, timedelta, timezone

import sqlalchemy as sa
from flask import abort, g, redirect, render_template, request, url_for
from markupsafe import Markup

from engine.plugins import Panel
from engine.storage.errors import Conflict, NotFound, PermissionDenied, RecordError, ValidationFailed
from engine.storage.query import Filter, ListQuery, check_sort
from engine.ui.common import runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang, current_zone, say
from engine.ui.i18n import translate as _
from engine.storage.titles import title_of
from engine.ui.present import columns, display, lookup_titles

from .kinds import RECENT

log = logging.getLogger(__name__)
NAME = "agenda"
RECENT_KEEP = 10
VIEWS = ("day", "week", "month")


def agenda_of(rt):
    return rt.extensions.get(NAME)


# -- reading ------------------------------------------------------------------------------------

def today() -> date:
    return datetime.now(timezone.utc).astimezone(current_zone()).date()


def _open_statuses(ag, ent) -> list[str]:
    return [o.value for o in ent.fields[ag.status].options if o.value not in ag.done]


def _team_ids() -> list[int]:
    me = g.access.user
    ids = {g.identity.user_id}
    team = me.get("team")
    if team and g.access.can("user", "read"):
        q = ListQuery("user", limit=200, filters=[Filter("team", "eq", team)])
        ids |= {u["id"] for u in runtime().records.list(q, context=g.context).records}
    if hasattr(g.access, "subordinates"):
        try:
            ids |= set(g.access.subordinates())
        except Exception:   # noqa: BLE001 - a role without a hierarchy: the team is enough
            pass
    return sorted(ids)


def _list(entity: str, filters: list, sort: str, limit: int = 200) -> list[dict]:
    rt = runtime()
    q = ListQuery(entity, limit=limit, filters=filters)
    q.sort = check_sort(rt.model.entity(entity), sort)
    return rt.records.list(q, context=g.context).records


def _items(ag, rows: list[dict]) -> list[dict]:
    """Rows of activities as the templates draw them (titles of what they relate to, in the user's zone)."""
    rt = runtime()
    ent = rt.model.entity(ag.activities)
    names = [n for n in ("related_to", "owner_id") if n in ent.fields or n == "owner_id"]
    cols = columns(ent, names)
    titles = lookup_titles(rt.records, ent, cols, rows, g.context)
    lang = current_lang()
    zone = current_zone()
    type_col = columns(ent, [ag.type])[0]
    out = []
    day = today()
    for r in rows:
        start = r.get(ag.start)
        end = r.get(ag.end) if ag.end else None
        start_local = start.astimezone(zone) if isinstance(start, datetime) else None
        end_local = end.astimezone(zone) if isinstance(end, datetime) else None
        related = next((c for c in cols if c.name == "related_to"), None)
        out.append({
            "id": r["id"], "version": r.get("version"), "title": title_of(ent, r), "type": r.get(ag.type),
            "type_label": display(type_col, r.get(ag.type), lang), "status": r.get(ag.status),
            "done": r.get(ag.status) in ag.done, "due": r.get(ag.due), "start": start_local, "end": end_local,
            "day": start_local.date() if start_local else r.get(ag.due),
            "overdue": bool(r.get(ag.due)) and r.get(ag.due) < day and r.get(ag.status) not in ag.done,
            "priority": r.get("priority"), "owner": r.get("owner_id"),
            "related": display(related, r.get("related_to"), lang, titles) if related else "",
            "url": url_for("ui.record", entity=ag.activities, record_id=r["id"]),
        })
    return out


def task_groups(ag, owners: list[int], upcoming_days: int = 7) -> dict[str, list[dict]]:
    """Open activities of ``owners`` with a due date: overdue, today, upcoming (the next days)."""
    rt = runtime()
    ent = rt.model.entity(ag.activities)
    day = today()
    base = [Filter("owner_id", "in", owners), Filter(ag.status, "in", _open_statuses(ag, ent))]
    rows = _list(ag.activities, [*base, Filter(ag.due, "lte", day + timedelta(days=upcoming_days))], ag.due, 300)
    items = _items(ag, rows)
    return {"overdue": [i for i in items if i["due"] and i["due"] < day],
            "today": [i for i in items if i["due"] == day],
            "upcoming": [i for i in items if i["due"] and i["due"] > day]}


def meetings(ag, owners: list[int], start: datetime, end: datetime) -> list[dict]:
    rows = _list(ag.activities, [Filter("owner_id", "in", owners), Filter(ag.start, "gte", start.astimezone(timezone.utc)),
                                 Filter(ag.start, "lt", end.astimezone(timezone.utc))], ag.start, 300)
    return _items(ag, rows)


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=current_zone())


# -- home panels -----------------------------------------------------------------------------------

def _panel(key: str, title: str, template: str, order: int, **values) -> Panel:
    return Panel(key=key, title=title, html=Markup(render_template(template, **values)), order=order)


def home_panels(rt, access) -> list[Panel]:
    ag = agenda_of(rt)
    panels = []
    me = g.identity.user_id
    if ag is not None and access.can(ag.activities, "read"):
        groups = task_groups(ag, [me], upcoming_days=0)
        panels.append(_panel("tasks", _("My tasks"), "agenda/_panel_tasks.html", 10, groups=groups,
                             can_update=access.can(ag.activities, "update"),
                             count=len(groups["overdue"]) + len(groups["today"])))
        start = _local_midnight(today())
        items = meetings(ag, [me], start, start + timedelta(days=7))
        panels.append(_panel("meetings", _("Meetings"), "agenda/_panel_meetings.html", 20, items=items,
                             today=today()))
    if ag is not None and ag.deals is not None and access.can(ag.deals.entity, "read"):
        panels.append(deals_panel(ag.deals))
    recent = recent_items(rt, me)
    panels.append(_panel("recent", _("Recently viewed"), "agenda/_panel_recent.html", 60, items=recent))
    return panels


def deals_panel(deals) -> Panel:
    rt = runtime()
    ent = rt.model.entity(deals.entity)
    stage = ent.fields[deals.stage]
    open_stages = [o for o in stage.options if o.value not in deals.closed]
    filters = [Filter("owner_id", "eq", g.identity.user_id)]
    if open_stages:
        filters.append(Filter(deals.stage, "in", [o.value for o in open_stages]))
    rows = _list(deals.entity, filters, deals.close or "id", 500)
    lang = current_lang()
    hidden = g.access.hidden(deals.entity)
    amount_col = columns(ent, [deals.amount])[0] if deals.amount and deals.amount not in hidden else None
    titles = lookup_titles(rt.records, ent, [amount_col], rows, g.context) if amount_col else {}
    by_stage = []
    for o in open_stages:
        these = [r for r in rows if r.get(deals.stage) == o.value]
        if not these:
            continue
        total = sum((r.get(deals.amount) or 0) for r in these) if amount_col else None
        by_stage.append({"label": o.label.get(lang), "count": len(these), "value": o.value,
                         "total": display(amount_col, total, lang, titles, these[0]) if amount_col else "",
                         "url": url_for("ui.list", entity=deals.entity) + f"?owner_id={g.identity.user_id}"
                                f"&{deals.stage}={o.value}"})
    day = today()
    month_end = date(day.year, day.month, cal.monthrange(day.year, day.month)[1])
    closing = [{"title": title_of(ent, r), "url": url_for("ui.record", entity=deals.entity, record_id=r["id"]),
                "close": r.get(deals.close),
                "amount": display(amount_col, r.get(deals.amount), lang, titles, r) if amount_col else ""}
               for r in rows if deals.close and r.get(deals.close) and day.replace(day=1) <= r[deals.close] <= month_end]
    return _panel("deals", _("My open deals"), "agenda/_panel_deals.html", 30, by_stage=by_stage, closing=closing,
                  count=len(rows), list_url=url_for("ui.list", entity=deals.entity))


# -- recently viewed ---------------------------------------------------------------------------------

def record_view(response):
    """After a record page was shown (200) to a signed-in user: remember it as their latest view."""
    if request.endpoint != "ui.record" or response.status_code != 200 or not hasattr(g, "identity"):
        return response
    entity, record_id = request.view_args.get("entity"), request.view_args.get("record_id")
    name = getattr(entity, "name", entity)
    try:
        remember(runtime(), g.identity.user_id, name, int(record_id))
    except sa.exc.SQLAlchemyError as exc:   # a view not remembered must never break the page: logged
        log.warning("recently viewed %s %s not remembered for user %s: %s", name, record_id,
                    g.identity.user_id, exc)
    return response


def remember(rt, user_id: int, entity: str, record_id: int) -> None:
    table = rt.records.metadata.tables[RECENT]
    now = datetime.now(timezone.utc)
    with rt.records.db.write() as conn:
        key = (table.c.user_id == user_id) & (table.c.entity == entity) & (table.c.record_id == record_id)
        if conn.execute(table.update().where(key).values(viewed_at=now)).rowcount == 0:
            conn.execute(table.insert().values(user_id=user_id, entity=entity, record_id=record_id, viewed_at=now))
        old = conn.execute(sa.select(table.c.viewed_at).where(table.c.user_id == user_id)
                           .order_by(table.c.viewed_at.desc()).offset(RECENT_KEEP * 5).limit(1)).first()
        if old is not None:
            conn.execute(table.delete().where(table.c.user_id == user_id, table.c.viewed_at <= old[0]))


def recent_items(rt, user_id: int) -> list[dict]:
    """The user's latest views of records they may still read, newest first (titles read with their rights)."""
    table = rt.records.metadata.tables[RECENT]
    with rt.records.db.read() as conn:
        rows = conn.execute(sa.select(table.c.entity, table.c.record_id).where(table.c.user_id == user_id)
                            .order_by(table.c.viewed_at.desc()).limit(RECENT_KEEP * 2)).all()
    out = []
    for entity, record_id in rows:
        if entity not in rt.model.entities or not g.access.can(entity, "read"):
            continue
        ent = rt.model.entity(entity)
        try:
            record = rt.records.get(entity, record_id, context=g.context)
        except (NotFound, PermissionDenied):
            continue
        out.append({"title": title_of(ent, record), "entity": ent.label.get(current_lang()), "icon": getattr(ent, "icon", None),
                    "url": url_for("ui.record", entity=entity, record_id=record_id)})
        if len(out) == RECENT_KEEP:
            break
    return out


# -- the task list -----------------------------------------------------------------------------------

def _agenda_or_404():
    ag = agenda_of(runtime())
    if ag is None or not g.access.can(ag.activities, "read"):
        abort(404)
    return ag


def tasks_page():
    ag = _agenda_or_404()
    whose = request.args.get("whose", "mine")
    owners = _team_ids() if whose == "team" else [g.identity.user_id]
    groups = task_groups(ag, owners, upcoming_days=14)
    users = {}
    if whose == "team":
        ent = runtime().model.entity(ag.activities)
        cols = columns(ent, ["owner_id"])
        rows = [{"owner_id": o} for o in owners]
        titles = lookup_titles(runtime().records, ent, cols, rows, g.context)
        users = {o: display(cols[0], o, current_lang(), titles) for o in owners}
    return render_template("agenda/tasks.html", groups=groups, whose=whose, users=users,
                           can_update=g.access.can(ag.activities, "update"),
                           new_url=url_for("ui.new", entity=ag.activities) if g.access.can(ag.activities, "create") else None)


def complete(record_id: int):
    """The tick: the activity's status becomes the ``complete`` value (htmx: the row, struck through)."""
    ag = _agenda_or_404()
    rt = runtime()
    error = None
    try:
        version = request.form.get("version", type=int)
        record = rt.records.update(ag.activities, record_id, {ag.status: ag.complete}, version=version, context=g.context)
    except NotFound:
        abort(404)
    except Conflict:
        error, record = _("Someone changed this task meanwhile; reload the page."), None
    except (PermissionDenied, ValidationFailed, RecordError) as exc:
        error, record = (getattr(exc, "message", None) or _("This task cannot be completed.")), None
    if record is None:
        try:
            record = rt.records.get(ag.activities, record_id, context=g.context)
        except NotFound:
            abort(404)
    item = _items(ag, [record])[0]
    if not request.headers.get("HX-Request"):
        from engine.ui.common import back_to

        return with_message(back_to(url_for("agenda_ui.tasks")), error, "danger") if error else redirect(
            back_to(url_for("agenda_ui.tasks")))
    return render_template("agenda/_task.html", item=item, error=error, can_update=True, show_owner=False)


# -- the calendar --------------------------------------------------------------------------------------

def _range(view: str, day: date) -> tuple[date, date]:
    if view == "day":
        return day, day
    if view == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=6)
    first = day.replace(day=1)
    start = first - timedelta(days=first.weekday())
    last = date(day.year, day.month, cal.monthrange(day.year, day.month)[1])
    return start, last + timedelta(days=6 - last.weekday())


def _parse_day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def calendar_context(ag, view: str, day: date, errors: dict | None = None) -> dict:
    first, last = _range(view, day)
    owners = [g.identity.user_id]
    start, end = _local_midnight(first), _local_midnight(last + timedelta(days=1))
    items = meetings(ag, owners, start, end)
    seen = {i["id"] for i in items}
    ent = runtime().model.entity(ag.activities)
    tasks = _list(ag.activities, [Filter("owner_id", "in", owners), Filter(ag.start, "isnull", True),
                                  Filter(ag.due, "gte", first), Filter(ag.due, "lte", last)], ag.due, 300)
    items += [i for i in _items(ag, tasks) if i["id"] not in seen]
    days = []
    d = first
    while d <= last:
        days.append({"date": d, "items": sorted((i for i in items if i["day"] == d),
                                                key=lambda i: (i["start"] is None, i["start"] or datetime.min.replace(tzinfo=timezone.utc))),
                     "outside": view == "month" and d.month != day.month, "today": d == today()})
        d += timedelta(days=1)
    step = {"day": timedelta(days=1), "week": timedelta(days=7)}.get(view)
    prev_day = day - step if step else (day.replace(day=1) - timedelta(days=1)).replace(day=1)
    next_day = day + step if step else (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return {"view": view, "day": day, "days": days, "errors": errors or {}, "prev_day": prev_day, "next_day": next_day,
            "can_update": g.access.can(ag.activities, "update"), "status_done": list(ag.done),
            "weekdays": [_("Mon"), _("Tue"), _("Wed"), _("Thu"), _("Fri"), _("Sat"), _("Sun")], "today": today(), "entity": ent.name,
            "new_url": url_for("ui.new", entity=ag.activities) if g.access.can(ag.activities, "create") else None}


def calendar_page():
    ag = _agenda_or_404()
    view = request.args.get("view", "week")
    view = view if view in VIEWS else "week"
    day = _parse_day(request.args.get("date")) or today()
    template = "agenda/_calendar_grid.html" if request.headers.get("HX-Request") else "agenda/calendar.html"
    return render_template(template, **calendar_context(ag, view, day))


def move(record_id: int):
    """Reschedule an activity to another day (drag and drop, or the "move to" date input): a meeting
    keeps its time of day and its length in the user's zone; a task's due date becomes the day."""
    ag = _agenda_or_404()
    rt = runtime()
    view = request.form.get("view", "week")
    view = view if view in VIEWS else "week"
    target = _parse_day(request.form.get("date"))
    error = None
    try:
        record = rt.records.get(ag.activities, record_id, context=g.context)
    except NotFound:
        abort(404)
    hhmm = (request.form.get("time") or "").strip()
    if target is None:
        error = _("Choose a date to move to.")
    elif hhmm and not _valid_time(hhmm):
        error = _("Write the time as HH:MM.")
    else:
        values = _moved_values(ag, record, target, hhmm)
        try:
            rt.records.update(ag.activities, record_id, values, version=request.form.get("version", type=int),
                              context=g.context)
        except Conflict:
            error = _("Someone changed this activity meanwhile; it was not moved.")
        except PermissionDenied:
            error = _("You may not reschedule this activity.")
        except (ValidationFailed, RecordError) as exc:
            error = say(exc) or _("This activity cannot be moved.")
    day = _parse_day(request.form.get("anchor")) or target or today()
    if not request.headers.get("HX-Request"):   # the form without scripts: back to the calendar
        url = url_for("agenda_ui.calendar", view=view, date=day.isoformat())
        return with_message(url, error, "danger") if error else redirect(url)
    return render_template("agenda/_calendar_grid.html",
                           **calendar_context(ag, view, day, {record_id: error} if error else None))


def _valid_time(text: str) -> bool:
    try:
        time.fromisoformat(text)
    except ValueError:
        return False
    return True


def _moved_values(ag, record: dict, target: date, hhmm: str | None) -> dict:
    zone = current_zone()
    start = record.get(ag.start)
    if isinstance(start, datetime):
        local_start = start.astimezone(zone)
        at = local_start.timetz().replace(tzinfo=None)
        if hhmm:   # checked by the caller (_valid_time)
            at = time.fromisoformat(hhmm)
        new_start = datetime.combine(target, at, tzinfo=zone)
        values = {ag.start: new_start.isoformat()}
        end = record.get(ag.end) if ag.end else None
        if isinstance(end, datetime):
            values[ag.end] = (new_start + (end - start)).isoformat()
        if record.get(ag.due) is not None:
            values[ag.due] = target.isoformat()
        return values
    return {ag.due: target.isoformat()}


# -- the blueprint ------------------------------------------------------------------------------------

def blueprint():
    bp = ui_routes("agenda_ui", __name__)
    bp.add_url_rule("/ui/my/tasks", "tasks", tasks_page, methods=["GET"])
    bp.add_url_rule("/ui/my/tasks/<int:record_id>/complete", "complete", complete, methods=["POST"])
    bp.add_url_rule("/ui/my/calendar", "calendar", calendar_page, methods=["GET"])
    bp.add_url_rule("/ui/my/calendar/<int:record_id>/move", "move", move, methods=["POST"])
    bp.after_app_request(record_view)
    return bp
