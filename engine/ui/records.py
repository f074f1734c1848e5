"""The record page (fields, related lists, timeline, field history, and the buttons and panels of
plugins: ``crm_record_actions``, ``crm_record_panels``), deleting, and the kanban board, whose moves
are changes of its field (the workflow, when it guards that field, takes them as its transitions)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from flask import abort, g, jsonify, render_template, request, url_for

from engine.fields import whole_number
from engine.fields.numeric import currencies_of
from engine.storage.errors import (
    Conflict,
    DeleteRestricted,
    NotFound,
    RecordError,
    ValidationFailed,
)
from engine.storage.query import Filter, ListQuery, QueryError, check_sort

from .common import (
    allowed_ops,
    editable_columns,
    entity_of,
    hidden_of,
    json_body,
    link_to,
    load_record,
    lock_of,
    runtime,
    with_message,
)
from .forms import field_states
from .i18n import current_lang
from .i18n import say
from .i18n import translate as _
from .present import (
    CURRENCY,
    Column,
    buttons,
    column,
    columns,
    display,
    form_sections,
    list_columns,
    lookup_titles,
    title_of,
)

RELATED_ROWS = 10
KANBAN_CARDS = 50


def record_page(entity: str, record_id: int):
    ent = entity_of(entity)
    record = load_record(ent, record_id)
    lang = current_lang()
    sections = form_sections(ent, hidden_of(ent))
    cols = [c for s in sections for c in s["fields"]]
    titles = lookup_titles(runtime().records, ent, cols, [record], g.context)
    shown = {c.name: (display(c, record.get(c.name), lang, titles, record), link_to(c, record.get(c.name))) for c in cols}
    state = field_states(ent, record, record)
    return render_template("ui/record.html", ent=ent, record=record, title=title_of(ent, record), sections=sections,
                           shown=shown, state=state, actions=_actions(ent, record), panels=_panels(ent, record),
                           locked=lock_of(ent, record),
                           related=_related(ent, record_id), timeline=_timeline(ent, record),
                           history=_field_history(ent, record), can=allowed_ops(ent))


def _actions(ent, record: dict) -> list[dict]:
    """The plugins' buttons for this record and user, in order."""
    rt = runtime()
    return buttons(rt.pm.hook.crm_record_actions(runtime=rt, entity=ent, record=record, access=g.access))



def _panels(ent, record: dict) -> list:
    """The plugins' panels for this record and user, in order."""
    rt = runtime()
    found = [p for each in reversed(rt.pm.hook.crm_record_panels(runtime=rt, entity=ent, record=record, access=g.access))
             for p in each or ()]
    return sorted(found, key=lambda p: p.order)


def _related(ent, record_id: int) -> list[dict]:
    """The related lists: the layout's ``related`` entries (entity.field), else every lookup here."""
    model = runtime().model
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
        page = runtime().records.list(q, context=g.context)
        cols = [c for c in list_columns(child, g.access.hidden(child.name)) if c.name != field_name][:5]
        titles = lookup_titles(runtime().records, child, cols, page.records, g.context)
        out.append({"entity": child, "field": field, "total": page.total, "cols": cols,
                    "rows": [{"id": r["id"], "cells": [display(c, r.get(c.name), lang, titles, r) for c in cols]}
                             for r in page.records],
                    "new_url": (f"{url_for('ui.new', entity=child.name)}?{urlencode({field_name: value})}"
                                if g.access.can(child.name, "create") else None)})
    return out


def _timeline(ent, record: dict) -> list[dict]:
    """Activity on the record, newest first: the records attached to it through a reference field
    (activities, notes, e-mails: whatever the model declares)."""
    model, svc = runtime().model, runtime().records
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
    svc, lang = runtime().records, current_lang()
    rows = [h for h in svc.history_of(ent.name, record["id"], context=g.context)[-100:]
            if h["field"] not in g.access.hidden(ent.name) and column(ent, h["field"]) is not None]
    people = svc.fetch_many("user", {h["changed_by"] for h in rows} - {None}, context=g.context) \
        if g.access.can("user", "read") else {}
    code = currencies_of(svc, ent, [record], g.context).get(record["id"])
    money = {(CURRENCY, record["id"]): code} if code else {}
    return [{"at": h["changed_at"], "field": column(ent, h["field"]).label(lang),
             "old": _history_text(column(ent, h["field"]), h["old_value"], lang, money, record),
             "new": _history_text(column(ent, h["field"]), h["new_value"], lang, money, record),
             "by": (people.get(h["changed_by"]) or {}).get("name") or (f"#{h['changed_by']}" if h["changed_by"] else "")}
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


def delete(entity: str, record_id: int):
    ent = entity_of(entity, "delete")
    version = request.form.get("version", "")
    try:
        runtime().records.delete(ent.name, record_id, version=whole_number(version),
                             context=g.context)
    except (DeleteRestricted, Conflict, ValidationFailed) as exc:
        return with_message(url_for("ui.record", entity=ent.name, record_id=record_id), say(exc), "danger")
    except NotFound:
        abort(404)
    return with_message(url_for("ui.list", entity=ent.name), _("Deleted."), "success")


def kanban(entity: str):
    ent = entity_of(entity)
    layout = ent.layouts.get("kanban")
    if not layout:
        abort(404)
    hidden = hidden_of(ent)
    group = column(ent, layout["group_by"])
    if group is None or group.name in hidden:
        abort(403)
    lang = current_lang()
    cards = columns(ent, layout.get("card") or [ent.title], hidden)
    where = request.args.get("where", "").strip()
    lanes, error = [], None
    summed = _lane_sum(ent, layout, cards, hidden)
    for option in group.field.options:
        q = ListQuery(ent.name, limit=KANBAN_CARDS, count=True, filters=[Filter(group.name, "eq", option.value)],
                      formula=where or None, sums=(summed.name,) if summed else ())
        q.sort = check_sort(ent, (ent.layouts.get("list") or {}).get("sort") or "-id", hidden)
        try:
            page = runtime().records.list(q, timeout_ms=5_000, context=g.context)
        except (QueryError, ValidationFailed) as exc:
            error = "; ".join(str(e) for e in exc.errors)
            break
        titles = lookup_titles(runtime().records, ent, cards, page.records, g.context)
        lanes.append({"value": option.value, "label": option.label.get(lang), "total": page.total,
                      "sum": display(summed, page.sums.get(summed.name) or 0, lang, {}, {}) if summed else None,
                      "cards": [{"id": r["id"], "version": r["version"],
                                 "lines": [(c, display(c, r.get(c.name), lang, titles, r)) for c in cards]}
                                for r in page.records]})
    return render_template("ui/kanban.html", ent=ent, group=group, lanes=lanes, error=error, where=where, summed=summed,
                           touch_moves=[(o.value, o.label.get(lang)) for o in group.field.options],
                           can_move=g.access.can(ent.name, "update") and bool(editable_columns(ent, [group])))


def _lane_sum(ent, layout: dict, cards, hidden):
    """The column summed at the top of each kanban lane: the layout's ``sum``, else the first
    currency column of the card (None when there is none or the user may not read it)."""
    name = layout.get("sum") or next((c.name for c in cards if c.kind == "currency"), None)
    col = column(ent, name) if name else None
    return col if col is not None and name not in hidden and col.field.stored else None


def move(entity: str, record_id: int):
    """A kanban card dropped in another column: a change of the board's field. Where a workflow
    guards that field, the change is the transition to that value the user may take now, or is
    refused with the ones allowed (the workflow's write hook decides, as for any write)."""
    ent = entity_of(entity, "update")
    layout = ent.layouts.get("kanban") or {}
    group = layout.get("group_by")
    body = json_body()
    to = body.get("to")
    if not group or not isinstance(to, str):
        return jsonify(error=_("Nothing to move.")), 400
    version = body.get("version") if isinstance(body.get("version"), int) else None
    try:
        runtime().records.get(ent.name, record_id, context=g.context)   # 404 for one the user may not see
        record = runtime().records.update(ent.name, record_id, {group: to}, version=version, context=g.context)
    except ValidationFailed as exc:
        return jsonify(error=say(exc)), 422
    except NotFound:
        return jsonify(error=_("This record no longer exists.")), 404
    except RecordError as exc:
        return jsonify(error=say(exc)), 409
    return jsonify(id=record["id"], version=record["version"], value=record.get(group))
