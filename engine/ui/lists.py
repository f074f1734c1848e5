"""The list screen: columns from the ``list`` layout, sorting, the filter builder (rows -> a ``where=``
condition), saved views, keyset pages, bulk actions and the CSV and XLSX export links."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import urlencode

import sqlalchemy as sa
from flask import g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from engine.fields import INT64_MAX, whole_number
from engine.storage.errors import RecordError, ValidationFailed
from engine.storage.query import COUNT_CAP, ListQuery, QueryError, check_sort

from . import filters as fb
from .common import (
    allowed_ops,
    back_to,
    editable_columns,
    entity_of,
    hidden_of,
    link_to,
    parse_input,
    runtime,
    url_with,
    with_message,
)
from .i18n import current_lang, zone_name
from .i18n import say
from .i18n import translate as _
from .present import buttons, column, columns, display, list_columns, lookup_titles, text_title, tone

PAGE_SIZES = (25, 50, 100)


def list_page(entity: str):
    ent = entity_of(entity)
    hidden = hidden_of(ent)
    args = request.args
    if "ff" in args:   # the filter builder was submitted: turn its rows into where= and come back
        return _apply_builder(ent, hidden)
    cols = list_columns(ent, hidden)
    size = whole_number(args.get("size", ""))
    size = size if size in PAGE_SIZES else PAGE_SIZES[0]
    q = ListQuery(ent.name, limit=size, cursor=args.get("cursor") or None, count=True)
    sort = args.get("sort") or (ent.layouts.get("list") or {}).get("sort") or "-id"
    where = args.get("where", "").strip()
    error, page = None, None
    try:
        q.sort = check_sort(ent, sort, hidden)
        q.formula = where or None
        q.columns = tuple(dict.fromkeys(("id", "version", *(c.name for c in cols))))
        page = runtime().records.list(q, timeout_ms=5_000, context=g.context)
    except (QueryError, ValidationFailed) as exc:
        error = "; ".join(str(e) for e in exc.errors)
    except RecordError as exc:
        error = say(exc)
    rows = page.records if page else []
    lang = current_lang()
    titles = lookup_titles(runtime().records, ent, cols, rows, g.context)
    table = [{"id": r["id"], "cells": [(c, display(c, r.get(c.name), lang, titles, r), link_to(c, r.get(c.name)))
                                       for c in cols], "tones": {c.name: tone(c, r.get(c.name)) for c in cols}}
             for r in rows]
    offered = (ent.layouts.get("list") or {}).get("filters") or []   # the layout's filter fields first
    names = dict.fromkeys([*offered, "id", *ent.fields, "owner_id", "created_at", "updated_at"])
    filterable = [c for c in columns(ent, names, hidden) if c.sortable and c.kind not in ("json", "reference")]
    editable = [c for c in editable_columns(ent, [column(ent, n) for n in ent.fields]) if c.widget not in ("json", "reference")]
    return render_template(
        "ui/list.html", ent=ent, cols=cols, table=table, page=page, error=error, where=where, sort=sort, size=size,
        sizes=PAGE_SIZES, count_cap=COUNT_CAP, filterable=filterable,
        chips=[{**c, "label": _chip_label(ent, hidden, c["text"], lang)} for c in chips(where)] if where else [],
        options_of=lambda c: [(o.value, o.label.get(lang)) for o in c.field.options], operators=fb.OPERATORS,
        operators_for=fb.operators_for, views=_views(ent), editable=editable,
        export_url=_export_url(ent, cols, where, sort), can=allowed_ops(ent), actions=_list_actions(ent),
        sort_url=lambda name: url_with(sort=_toggle(sort, name), cursor=None),
        next_url=url_with(cursor=page.next_cursor) if page and page.next_cursor else None,
        first_url=url_with(cursor=None) if args.get("cursor") else None)


def _list_actions(ent) -> list[dict]:
    """The plugins' buttons acting on the selected records of this list (``crm_list_actions``)."""
    rt = runtime()
    return buttons(rt.pm.hook.crm_list_actions(runtime=rt, entity=ent, access=g.access))


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
            if col.kind in ("lookup", "user") and op in ("eq", "ne") and whole_number(value.strip()) is None:
                value = _pointer_by_title(col, value)
            parts.append(fb.condition(col, op, value))
        except fb.FilterError as exc:
            problems.append(say(exc))
    where = fb.combine(parts)
    params = {"where": where, "sort": args.get("sort", "")}
    if problems:
        params["problem"] = "; ".join(problems)
    return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({k: v for k, v in params.items() if v})}")


def _pointer_by_title(col, text: str) -> str:
    """The id of the one record of a lookup's target the user may read whose title is ``text``."""
    target = runtime().model.entity(col.target) if col.target in runtime().model.entities else None
    name = text_title(target) if target is not None else None
    if name is None or not g.access.can(target.name, "read") or name in hidden_of(target):
        raise fb.FilterError(f"{col.name}: expected a record id (a number)")
    table = runtime().records.table(target.name)
    page = runtime().records.list(ListQuery(target.name, limit=2, where=sa.func.lower(table.c[name]) == text.strip().lower()),
                                  context=g.context)
    if len(page.records) != 1:
        why = _("no record is called %(t)s") if not page.records else _("several records are called %(t)s")
        raise fb.FilterError(f"{col.name}: expected a record id (a number) or a title; " + why % {"t": repr(text.strip())})
    return str(page.records[0]["id"])


def chips(where: str) -> list[dict]:
    """The conditions ANDed at the top level of ``where``, each with the condition left without it
    (the "x" of its chip)."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(where):
        ch = where[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and where[i:i + 5].upper() == " AND ":
            parts.append(where[start:i])
            start, i = i + 5, i + 4
        i += 1
    parts.append(where[start:])
    parts = [p.strip() for p in parts if p.strip()]
    if len(parts) == 1:
        return [{"text": where.strip(), "rest": ""}]

    def bare(p: str) -> str:
        return p[1:-1].strip() if p.startswith("(") and p.endswith(")") else p
    return [{"text": bare(p), "rest": fb.combine([bare(o) for o in parts if o is not p])} for p in parts]


_SIMPLE = re.compile(r"^([a-z_][a-z0-9_]*) (=|<>|>=|<=|>|<) '((?:[^'\\]|\\.)*)'$")
_CALL = re.compile(r"^(CONTAINS|BEGINS)\(([a-z_][a-z0-9_]*), '((?:[^'\\]|\\.)*)'\)$")
_SHOWN_OPS = {"=": "equals", "<>": "not equal to", ">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}


def _chip_label(ent, hidden, text: str, lang: str) -> str:
    """A condition as a person reads it when it is ``field op 'text'`` (labels, option labels), else
    the condition itself."""
    call = _CALL.match(text)
    if call:
        col = column(ent, call.group(2))
        if col is None or col.name in hidden:
            return text
        op = _("contains") if call.group(1) == "CONTAINS" else _("starts with")
        return f"{col.label(lang)} {op} {_unescaped(call.group(3))}"
    found = _SIMPLE.match(text)
    col = column(ent, found.group(1)) if found else None
    if col is None or col.name in hidden:
        return text
    raw = _unescaped(found.group(3))
    shown = display(col, raw, lang) if col.kind == "picklist" else raw
    return f"{col.label(lang)} {_(_SHOWN_OPS[found.group(2)])} {shown}"


def _unescaped(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _toggle(sort: str, name: str) -> str:
    first = sort.split(",")[0]
    return f"-{name}" if first == name else name


def _export_url(ent, cols, where: str, sort: str) -> str | None:
    """The CSV export of what the list shows (its condition, sort and columns), as the user reads it:
    labels as headers, titles, option labels and amounts in the page's language, times in its zone.
    The XLSX button is the same link with ``file=xlsx``."""
    if not g.access.can(ent.name, "export"):
        return None
    params = {"fields": ",".join(c.name for c in cols if c.field.stored or c.system or c.field.computed_on_read),
              "sort": sort, "format": "readable", "lang": current_lang(), "headers": "label", "tz": zone_name()}
    if where:
        params["where"] = where
    return f"/api/v1/{ent.name}/_export?{urlencode(params)}"


def _views(ent) -> list[dict]:
    table = runtime().records.metadata.tables["_crm_saved_view"]
    with runtime().db.read() as conn:
        rows = conn.execute(sa.select(table).where(table.c.user_id == g.identity.user_id, table.c.entity == ent.name)
                            .order_by(table.c.name)).mappings().all()
    return [{"id": r["id"], "name": r["name"],
             "url": f"{url_for('ui.list', entity=ent.name)}?{urlencode({k: v for k, v in (('where', r['where_text']), ('sort', r['sort']), ('view', r['id'])) if v})}"}
            for r in rows]


def save_view(entity: str):
    ent = entity_of(entity)
    name = request.form.get("name", "").strip()[:120]
    where, sort = request.form.get("where", "").strip(), request.form.get("sort", "").strip()[:255]
    if not name:
        return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({'where': where, 'sort': sort, 'problem': _('Give the view a name.')})}")
    try:   # a view is saved only if it runs
        check_sort(ent, sort, hidden_of(ent)) if sort else None
        runtime().records.list(ListQuery(ent.name, limit=1, formula=where or None), context=g.context)
    except (QueryError, ValidationFailed) as exc:
        return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode({'where': where, 'sort': sort, 'problem': '; '.join(map(str, exc.errors))})}")
    table = runtime().records.metadata.tables["_crm_saved_view"]
    with runtime().db.write() as conn:
        conn.execute(table.delete().where(table.c.user_id == g.identity.user_id, table.c.entity == ent.name,
                                          table.c.name == name))
        view_id = conn.execute(table.insert().values(user_id=g.identity.user_id, entity=ent.name, name=name,
                                                     where_text=where or None, sort=sort or None,
                                                     created_at=datetime.now(timezone.utc))).inserted_primary_key[0]
    params = {k: v for k, v in (("where", where), ("sort", sort), ("view", view_id)) if v}
    return redirect(f"{url_for('ui.list', entity=ent.name)}?{urlencode(params)}")


def delete_view(entity: str, view_id: int):
    ent = entity_of(entity)
    table = runtime().records.metadata.tables["_crm_saved_view"]
    if view_id <= INT64_MAX:   # a larger id (a made-up URL) is no view; the database would refuse the number
        with runtime().db.write() as conn:
            conn.execute(table.delete().where(table.c.id == view_id, table.c.user_id == g.identity.user_id))
    return redirect(url_for("ui.list", entity=ent.name))


def bulk(entity: str):
    ent = entity_of(entity)
    ids = [n for n in map(whole_number, request.form.getlist("ids")) if n is not None][:500]
    action = request.form.get("action")
    back = back_to(url_for("ui.list", entity=ent.name))
    if not ids:
        return with_message(back, _("Select at least one record."), "warning")
    if action == "delete":
        entity_of(entity, "delete")
        write, done = (lambda rid: runtime().records.delete(ent.name, rid, context=g.context)), _("Deleted %(n)s record(s).")
    elif action == "update":
        entity_of(entity, "update")
        col = column(ent, request.form.get("field", ""))
        if col is None or col not in editable_columns(ent, [col]):
            return with_message(back, _("Choose a field you may change."), "danger")
        typed = request.form.get("value", "")
        if col.kind == "picklist" and typed.strip():   # a label in any language names its option
            typed = fb.option_value(col, typed) or typed
        elif col.kind == "date" and typed.strip():
            found = fb.local_date(typed, current_lang())
            typed = found.isoformat() if found else typed
        # a yes/no field is typed here as text (yes, true, 1, no, ...): its field type reads it, and
        # blank is "no" as an unticked box in the form
        value = (typed.strip() or False) if col.widget == "checkbox" else parse_input(col, MultiDict({col.name: typed}))
        write = lambda rid: runtime().records.update(ent.name, rid, {col.name: value}, context=g.context)  # noqa: E731
        done = _("Updated %(n)s record(s).")
    else:
        return with_message(back, _("Unknown action."), "danger")
    failed: list[str] = []
    for record_id in ids:   # one write per record, each through the record service (not an import)
        try:
            write(record_id)
        except RecordError as exc:
            failed.append(f"#{record_id}: {exc}")
    message = done % {"n": len(ids) - len(failed)}
    if failed:
        message += " " + _("Not done:") + " " + "; ".join(failed[:10])
    return with_message(back, message, "warning" if failed else "success")
