"""Deleting a record, and the kanban board, whose moves are changes of its field (the workflow, when
it guards that field, takes them as its transitions). The record page is ``record_page/``."""

from __future__ import annotations

from flask import abort, g, jsonify, render_template, request, url_for

from engine.fields import whole_number
from engine.storage.errors import (
    Conflict,
    DeleteRestricted,
    NotFound,
    RecordError,
    ValidationFailed,
)
from engine.storage.query import Filter, ListQuery, QueryError, check_sort

from .common import (
    editable_columns,
    entity_of,
    hidden_of,
    json_body,
    runtime,
    with_message,
)
from .i18n import current_lang
from .i18n import say
from .i18n import translate as _
from .present import (
    column,
    columns,
    display,
    lookup_titles,
    tone,
)

KANBAN_CARDS = 50


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
                                 "lines": [(c, display(c, r.get(c.name), lang, titles, r), tone(c, r.get(c.name)))
                                           for c in cards]}
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
