"""Conversions on the web UI: the Convert button of a record page (when the entity declares a
conversion, its ``when`` holds and the user may convert), the convert screen (per target the mapped
values as editable inputs, the match candidates to attach to instead, skip for optional targets,
every error beside its field) and its result, and a bulk screen converting several records at once.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Blueprint, abort, g, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from engine import rules
from engine.fields import whole_number
from engine.plugins import RecordAction
from engine.storage.errors import RecordError
from engine.ui.common import editable_columns, entity_of, load_record, parse_input, runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import say
from engine.ui.i18n import translate as _
from engine.ui.present import column, display, input_value, lookup_titles, title_of

from . import service
from .lock import locked
from .service import ConversionError

#: Records the bulk screen lists at most.
BULK_ROWS = 50


def blueprint() -> Blueprint:
    bp = ui_routes("conversions_ui", __name__)
    for suffix in ("", "/<name>"):
        bp.add_url_rule(f"/ui/<entity:entity>/<int:record_id>/convert{suffix}", "convert" + suffix[2:-1],
                        convert_page, methods=["GET", "POST"])
        bp.add_url_rule(f"/ui/<entity:entity>/convert{suffix}", "convert_many" + suffix[2:-1], convert_many_page,
                        methods=["GET", "POST"])
    return bp


def convert_url(endpoint: str, conv, **args) -> str:
    """The URL of a convert screen of ``conv`` (``convert`` or ``convert_many``), named unless it is
    the entity's default conversion."""
    if conv.name == _default(conv.source).name:
        return url_for(f"conversions_ui.{endpoint}", entity=conv.source, **args)
    return url_for(f"conversions_ui.{endpoint}name", entity=conv.source, name=conv.name, **args)


def _default(entity: str):
    return next(iter(service.conversions_of(runtime()).get(entity, {}).values()))


def convert_actions(rt, ent, record: dict, access) -> list[RecordAction]:
    """A button per conversion the user may make of this record now (the first keeps the key ``convert``)."""
    out = []
    by_name = service.conversions_of(rt).get(ent.name) or {}
    if not by_name:
        return out
    with rt.db.read() as conn:
        source = rt.records._load(conn, ent, record["id"])
        for i, conv in enumerate(by_name.values()):
            if service.missing_rights(conv, access) or service.state_problem(
                    rt, conn, conv, source, access.user_id, datetime.now(timezone.utc)):
                continue
            out.append(RecordAction(key="convert" if i == 0 else f"convert-{conv.name}",
                                    label=conv.label.get(current_lang()), kind="convert", style="success",
                                    method="get", order=5 + i, url=convert_url("convert", conv, record_id=record["id"])))
    return out


def lock_reason(rt, ent, record: dict) -> str | None:
    """Why a converted record is read-only, for the record page (``crm_record_lock``)."""
    if not any(locked(conv, record) for conv in (service.conversions_of(rt).get(ent.name) or {}).values()):
        return None
    return _("Converted: read-only. Change the records it was converted to.")


def list_actions(rt, ent, access) -> list[RecordAction]:
    """"Convert selected" on the list of an entity with a conversion the user may make: it posts the
    ticked records to the bulk screen."""
    by_name = service.conversions_of(rt).get(ent.name) or {}
    several = len(by_name) > 1
    return [RecordAction(key="convert-selected" if i == 0 else f"convert-selected-{conv.name}",
                         label=(_("%(conversion)s: selected") % {"conversion": conv.label.get(current_lang())}
                                if several else _("Convert selected")),
                         kind="convert", style="outline-success", url=convert_url("convert_many", conv))
            for i, conv in enumerate(by_name.values()) if not service.missing_rights(conv, access)]


def _conversion(entity: str, name: str | None = None):
    ent = entity_of(entity, "read")
    by_name = service.conversions_of(runtime()).get(ent.name) or {}
    conv = next(iter(by_name.values()), None) if name is None else by_name.get(name)
    if conv is None:
        abort(404)
    return ent, conv


def convert_page(entity: str, record_id: int, name: str | None = None):
    ent, conv = _conversion(entity, name)
    load_record(ent, record_id)   # 404 unless the user may see it
    found = service.proposal(runtime(), ent.name, record_id, g.access, name=conv.name)
    back = url_for("ui.record", entity=ent.name, record_id=record_id)
    if found.problem or found.missing:
        message = found.problem or _("Your role does not allow this conversion: %(missing)s") % {
            "missing": ", ".join(found.missing)}
        return with_message(back, message, "warning")
    panels = _panels(found)
    if request.method == "GET":
        return _render(ent, found, panels, {}, {}, 200)
    choices, form_values = _choices(panels, request.form)
    try:
        out = service.convert(runtime(), ent.name, record_id, choices, g.context, name=conv.name)
    except ConversionError as exc:
        if exc.status != 422:
            return with_message(back, exc.detail, "danger")
        errors: dict[str, dict[str, list[str]]] = {}
        for e in exc.errors:
            errors.setdefault(e["target"] or "", {}).setdefault(e["field"] or "", []).append(e["message"])
        return _render(ent, found, panels, errors, form_values, 422)
    except RecordError as exc:
        return with_message(back, say(exc), "danger")
    return render_template("conversions/result.html", ent=ent, conv=conv, record_id=record_id,
                           title=title_of(ent, found.record), results=_results(out))


def _panels(found: service.Proposal) -> list[dict]:
    """Per target: its entity, the columns the user may edit with their mapped values, the candidates."""
    rt = runtime()
    panels = []
    for tp in found.targets:
        ent = rt.model.entity(tp.target.entity)
        cols = editable_columns(ent, [column(ent, v.field) for v in tp.target.values if not v.ref])
        titles = lookup_titles(rt.records, ent, cols, [tp.values], g.context)
        candidates = [{"id": c.id, "title": title_of(ent, c.record), "score": round(c.score * 100),
                       "reasons": ", ".join(f"{ent.fields[r.field].label.get(current_lang())} ({_by(r.by)})"
                                            for r in c.reasons)} for c in tp.candidates]
        panels.append({"target": tp.target, "ent": ent, "cols": cols, "values": tp.values, "titles": titles,
                       "candidates": candidates,
                       "lines": [(rt.model.entity(e).plural.get(current_lang()), n) for e, n in tp.lines.items()],
                       "refs": [(ent.fields[v.field].label.get(current_lang()), v.field,
                                 found.conversion.target(v.ref).label.get(current_lang()))
                                for v in tp.target.values if v.ref]})
    return panels


def _by(normaliser: str) -> str:
    """How a match compared, in the user's language."""
    return {"company_name": _("company name"), "email": _("e-mail"), "phone": _("phone number"),
            "name": _("person's name")}.get(normaliser, _("text"))


def _choices(panels: list[dict], form) -> tuple[dict, dict]:
    choices, shown = {}, {}
    for p in panels:
        name = p["target"].name
        picked = form.get(f"choice.{name}", "create")
        if picked == "skip":
            choices[name] = {"action": "skip"}
        elif picked.startswith("existing:"):
            choices[name] = {"action": "existing", "id": whole_number(picked.partition(":")[2])}
        else:
            prefix = f"{name}."
            sub = MultiDict([(k[len(prefix):], v) for k, v in form.items(multi=True) if k.startswith(prefix)])
            values = {c.name: parse_input(c, sub) for c in p["cols"] if c.name in sub or c.widget == "checkbox"}
            choices[name] = {"action": "create", "values": values}
        shown[name] = {"choice": picked, **{k[len(f"{name}."):]: v for k, v in form.items() if k.startswith(f"{name}.")}}
    return choices, shown


def _render(ent, found, panels, errors: dict, form_values: dict, status: int):
    lang = current_lang()
    for p in panels:
        posted = form_values.get(p["target"].name)
        p["choice"] = posted["choice"] if posted else (f"existing:{p['candidates'][0]['id']}" if p["candidates"] else "create")
        p["inputs"] = {c.name: (posted.get(c.name, "") if posted else input_value(c, p["values"].get(c.name)))
                       for c in p["cols"]}
        p["lookup_text"] = {f"{p['target'].name}.{c.name}": display(c, p["values"].get(c.name), lang, p["titles"])
                            for c in p["cols"] if c.target}
        p["errors"] = errors.get(p["target"].name, {})
    return render_template("conversions/convert.html", ent=ent, conv=found.conversion, record=found.record,
                           title=title_of(ent, found.record), panels=panels, general=errors.get("", {}),
                           action_url=convert_url("convert", found.conversion, record_id=found.record["id"])), status


def _results(out: dict) -> list[dict]:
    rt = runtime()
    rows = []
    for name, done in out["targets"].items():
        ent = rt.model.entity(done["entity"])
        title = ""
        if done["id"] is not None:
            try:
                title = title_of(ent, rt.records.get(ent.name, done["id"], context=g.context))
            except RecordError:
                title = f"#{done['id']}"
        rows.append({"name": name, "ent": ent, "id": done["id"], "action": done["action"], "title": title})
    return rows


def convert_many_page(entity: str, name: str | None = None):
    """The records that may be converted now (newest first); convert the ticked ones, creating new
    targets; those with match candidates are left for the one-by-one screen."""
    ent, conv = _conversion(entity, name)
    missing = service.missing_rights(conv, g.access)
    if missing:
        abort(403)
    results = None
    if request.method == "POST":
        ids = [n for n in (whole_number(v) for v in request.form.getlist("ids")) if n]
        if not ids:
            return with_message(convert_url("convert_many", conv), _("Tick the records to convert."), "warning")
        try:
            results = service.convert_many(runtime(), ent.name, ids, g.context, name=conv.name)
        except ConversionError as exc:
            return with_message(convert_url("convert_many", conv), exc.detail, "danger")
    rows = _convertible(ent, conv)
    return render_template("conversions/bulk.html", ent=ent, conv=conv, rows=rows, results=results,
                           convert_url=convert_url,
                           cols=[column(ent, n) for n in _list_columns(ent)])


def _list_columns(ent) -> list[str]:
    layout = (ent.layouts or {}).get("list") or {}
    names = [n for n in (layout.get("columns") or [ent.title]) if n in ent.fields][:5]
    return names or [ent.title]


def _convertible(ent, conv) -> list[dict]:
    """The newest records the user sees that may be converted now (at most ``BULK_ROWS``)."""
    svc = runtime().records
    table = svc.table(ent.name)
    scope = rules.Scope(svc.metadata, ent.name, svc.model, dialect=svc.db.dialect, now=datetime.now(timezone.utc))
    conditions = [conv.when.where(scope)] if conv.when is not None and conv.when.sql_capable else []
    visible = g.access.visibility(svc, ent.name, table)
    if visible is not None:
        conditions.append(visible)
    stmt = scope.apply(sa.select(table.c.id).where(*conditions).order_by(table.c.id.desc()).limit(BULK_ROWS))
    with svc.db.read(timeout_ms=10_000) as conn:
        ids = conn.execute(stmt).scalars().all()
    found = svc.fetch_many(ent.name, ids, context=g.context)
    lang = current_lang()
    cols = [column(ent, n) for n in _list_columns(ent)]
    return [{"id": rid, "cells": [display(c, found[rid].get(c.name), lang) for c in cols]} for rid in ids if rid in found]
