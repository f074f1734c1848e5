"""One timeline of what happened on a record, newest first, grouped by day: the records attached to
it through a reference field (activities, notes, e-mails), the changes of its tracked fields, and
what plugins report (``crm_record_timeline``: approvals, conversions). Only what the user may read."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from flask import g, render_template, url_for

from engine.fields.numeric import currencies_of
from engine.storage.query import Filter, ListQuery, check_sort

from ..common import entity_of, load_record, runtime
from ..i18n import current_lang, local
from ..i18n import translate as _
from ..present import CURRENCY, Column, column, display, title_of

PER_SOURCE = 30
SHOWN = 60
KIND_ICONS = {"call": "phone", "task": "check-circle", "meeting": "calendar", "email": "envelope",
              "note": "document-text", "change": "pencil", "approval": "check-badge", "conversion": "arrows-right-left"}


def timeline_part(entity: str, record_id: int):
    """The timeline alone (htmx refreshes it after the composer saves)."""
    ent = entity_of(entity)
    record = load_record(ent, record_id)
    return render_template("ui/_record_timeline.html", ent=ent, record=record, days=timeline_days(ent, record))


def timeline_days(ent, record: dict) -> list[dict]:
    """The timeline's entries grouped by the user's local day, newest first."""
    items = _attached(ent, record) + _changes(ent, record) + _contributed(ent, record)
    items.sort(key=lambda i: i["at"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    days: list[dict] = []
    today = local(datetime.now(timezone.utc)).date()
    for item in items[:SHOWN]:
        at = local(item["at"]) if item["at"] else None
        item["time"] = at.strftime("%H:%M") if at else ""
        day = at.date() if at else None
        if not days or days[-1]["day"] != day:
            label = (_("Today") if day == today else _("Yesterday") if day and (today - day).days == 1
                     else day.isoformat() if day else _("Undated"))
            days.append({"day": day, "label": label, "entries": []})
        days[-1]["entries"].append(item)
    return days


def _attached(ent, record: dict) -> list[dict]:
    """The records pointing at this one through a reference field: activities, notes..."""
    model, svc = runtime().model, runtime().records
    lang = current_lang()
    items: list[dict] = []
    for child in model.entities.values():
        if not g.access.can(child.name, "read"):
            continue
        hidden = g.access.hidden(child.name)
        for field in child.fields.values():
            if field.type_name != "reference" or field.name in hidden:
                continue
            allowed = field.prop("to")
            if allowed and ent.name not in allowed:
                continue
            q = ListQuery(child.name, limit=PER_SOURCE,
                          filters=[Filter(field.name, "eq", field.coerce(f"{ent.name}:{record['id']}"))])
            q.sort = check_sort(child, "-created_at")
            rows = svc.list(q, context=g.context).records
            owners = _names({r.get("owner_id") for r in rows})
            for r in rows:
                kind = r.get("type") if "type" in child.fields and "type" not in hidden else child.name
                items.append({"at": r.get("created_at"), "kind": kind, "icon": KIND_ICONS.get(str(kind), "document"),
                              "label": _kind_label(child, r, lang, hidden), "text": title_of(child, r),
                              "body": _body(child, r, hidden), "status": _status(child, r, lang, hidden),
                              "by": owners.get(r.get("owner_id"), ""),
                              "url": url_for("ui.record", entity=child.name, record_id=r["id"])})
    return items


def _kind_label(child, row: dict, lang: str, hidden) -> str:
    col = column(child, "type") if "type" in child.fields and "type" not in hidden else None
    return display(col, row.get("type"), lang) if col is not None and row.get("type") else child.label.get(lang)


def _body(child, row: dict, hidden) -> str:
    """A snippet of the description (an activity's) or the body (a note's), when it is not the title."""
    for name in ("description", "body"):
        if name in child.fields and name not in hidden and name != child.title and row.get(name):
            text = str(row[name])
            return text if len(text) <= 280 else text[:280] + "…"
    return ""


def _status(child, row: dict, lang: str, hidden) -> str:
    col = column(child, "status") if "status" in child.fields and "status" not in hidden else None
    return display(col, row.get("status"), lang) if col is not None and row.get("status") else ""


def _names(user_ids: set) -> dict:
    """Users' names by id, when the user may read users."""
    ids = {i for i in user_ids if isinstance(i, int)}
    if not ids or not g.access.can("user", "read"):
        return {}
    found = runtime().records.fetch_many("user", ids, context=g.context)
    return {i: (u or {}).get("name") or f"#{i}" for i, u in found.items()}


def _changes(ent, record: dict) -> list[dict]:
    return [{"at": h["at"], "kind": "change", "icon": KIND_ICONS["change"], "label": _("Field changed"),
             "text": _("%(field)s: %(old)s → %(new)s") % {"field": h["field"], "old": h["old"], "new": h["new"]},
             "body": "", "status": "", "by": h["by"], "url": ""} for h in field_changes(ent, record)]


def _contributed(ent, record: dict) -> list[dict]:
    """What the plugins report (``crm_record_timeline``)."""
    rt = runtime()
    found = [e for each in rt.pm.hook.crm_record_timeline(runtime=rt, entity=ent, record=record, access=g.access)
             for e in each or ()]
    return [{"at": e.at, "kind": e.kind, "icon": KIND_ICONS.get(e.kind, "bolt"), "label": _kind_name(e.kind),
             "text": e.text, "body": "", "status": "", "by": e.by, "url": e.url} for e in found]


def _kind_name(kind: str) -> str:
    return {"approval": _("Approval"), "conversion": _("Conversion")}.get(kind, kind.replace("_", " ").capitalize())


def field_changes(ent, record: dict) -> list[dict]:
    """The changes of the record's tracked fields the user may read, newest first."""
    svc, lang = runtime().records, current_lang()
    rows = [h for h in svc.history_of(ent.name, record["id"], context=g.context)[-100:]
            if h["field"] not in g.access.hidden(ent.name) and column(ent, h["field"]) is not None]
    people = _names({h["changed_by"] for h in rows})
    code = currencies_of(svc, ent, [record], g.context).get(record["id"])
    money = {(CURRENCY, record["id"]): code} if code else {}
    return [{"at": h["changed_at"], "field": column(ent, h["field"]).label(lang),
             "old": _history_text(column(ent, h["field"]), h["old_value"], lang, money, record),
             "new": _history_text(column(ent, h["field"]), h["new_value"], lang, money, record),
             "by": people.get(h["changed_by"]) or (f"#{h['changed_by']}" if h["changed_by"] else "")}
            for h in reversed(rows)]


def _history_text(col: Column, value: Any, lang: str, money: dict | None = None, record: dict | None = None) -> str:
    """A value of the history (its JSON form) shown as the field shows it: labels, numbers and
    date-times in the user's language and time zone, amounts in the record's currency (``money``)."""
    if value is None:
        return "—"
    try:
        shown = display(col, col.field.coerce(value) if not col.target else value, lang, money, record)
    except Exception:   # noqa: BLE001 - a value the field no longer reads (the type changed): as stored
        return str(value)
    return shown or "—"
