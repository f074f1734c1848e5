"""The record page: header (icon, title, highlights, owner, actions), path, composer, timeline,
related lists as cards and the details in sections with inline editing."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import g, render_template, url_for

from engine.storage.query import Filter, ListQuery, check_sort

from ..common import (
    allowed_ops,
    editable_columns,
    entity_of,
    hidden_of,
    link_to,
    load_record,
    lock_of,
    runtime,
)
from ..forms import field_states
from ..i18n import current_lang
from ..present import (
    buttons,
    column,
    columns,
    display,
    form_sections,
    input_value,
    list_columns,
    lookup_titles,
    title_of,
)
from .composer import quick_actions
from .timeline import field_changes, timeline_days

RELATED_ROWS = 5
HIGHLIGHTS = 5
INLINE_WIDGETS = frozenset({"text", "textarea", "email", "phone", "url", "select", "number", "currency",
                            "percent", "date", "datetime", "checkbox"})


def record_page(entity: str, record_id: int):
    ent = entity_of(entity)
    record = load_record(ent, record_id)
    lang = current_lang()
    sections = form_sections(ent, hidden_of(ent))
    cols = [c for s in sections for c in s["fields"]]
    heads = highlight_columns(ent)
    owner = column(ent, "owner_id")
    shown_cols = cols + heads + ([owner] if owner else [])
    titles = lookup_titles(runtime().records, ent, shown_cols, [record], g.context)
    shown = {c.name: (display(c, record.get(c.name), lang, titles, record), link_to(c, record.get(c.name)))
             for c in shown_cols}
    state = field_states(ent, record, record)
    locked = lock_of(ent, record)
    actions = _actions(ent, record)
    visible = [c for c in cols if state["visible"].get(c.name, True)]
    return render_template(
        "ui/record.html", ent=ent, record=record, title=title_of(ent, record), sections=sections, shown=shown,
        state=state, actions=actions, panels=_panels(ent, record), locked=locked, heads=heads,
        owner=shown.get("owner_id") if owner and "owner_id" not in hidden_of(ent) else None,
        path=_path(ent, record, actions, lang), inline=inline_fields(ent, cols, locked),
        composer=quick_actions(ent, record), related=_related(ent, record_id),
        days=timeline_days(ent, record), history=field_changes(ent, record), can=allowed_ops(ent),
        loaded={c.name: input_value(c, record.get(c.name)) for c in cols},
        empty=sum(1 for c in visible if not shown[c.name][0]))


def highlight_columns(ent) -> list:
    """The header's key fields: ``highlights`` of the entity, else the first of its list columns."""
    hidden = hidden_of(ent)
    names = ent.props.get("highlights")
    if names:
        return columns(ent, names, hidden)
    return [c for c in list_columns(ent, hidden) if c.name not in (ent.title, "owner_id")][:HIGHLIGHTS]


def inline_fields(ent, cols: list, locked: str | None) -> frozenset[str]:
    """The fields this user may edit in place: editable for the role, on a record not locked, of a
    widget that edits alone (lookups and multi-selects go through the form)."""
    if locked or not g.access.can(ent.name, "update"):
        return frozenset()
    return frozenset(c.name for c in editable_columns(ent, cols) if c.widget in INLINE_WIDGETS)


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


def _path(ent, record: dict, actions: list[dict], lang: str) -> list[dict]:
    """The workflow's states as the path: each picklist option of its field, whether it is the
    current one, passed, and the transition (of those the user may take now) that leads there."""
    wf = ent.workflow or {}
    field = ent.fields.get(wf.get("field") or "")
    if field is None or field.type_name != "picklist" or field.name in hidden_of(ent):
        return []
    current = record.get(field.name)
    values = [o.value for o in field.options]
    here = values.index(current) if current in values else -1
    by_target: dict[str, dict] = {}
    for a in actions:
        if a["kind"] == "transition" and a["value"]:
            by_target.setdefault(a["value"], a)
    return [{"value": o.value, "label": o.label.get(lang), "current": o.value == current, "done": i < here,
             "action": by_target.get(o.value)} for i, o in enumerate(field.options)]


def _related(ent, record_id: int) -> list[dict]:
    """The related lists: the layout's ``related`` entries (entity.field), else every lookup here;
    each its count, its 5 newest rows and where to see all."""
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
        q.sort = check_sort(child, "-created_at")
        page = runtime().records.list(q, context=g.context)
        cols = [c for c in list_columns(child, g.access.hidden(child.name)) if c.name != field_name][:3]
        titles = lookup_titles(runtime().records, child, cols, page.records, g.context)
        out.append({"entity": child, "field": field, "total": page.total, "cols": cols,
                    "rows": [{"id": r["id"], "cells": [(c, display(c, r.get(c.name), lang, titles, r)) for c in cols]}
                             for r in page.records],
                    "new_url": (f"{url_for('ui.new', entity=child.name)}?{urlencode({field_name: value})}"
                                if g.access.can(child.name, "create") else None)})
    return out
