"""Merge on the web UI: the "Merge" button on a list (2 to 5 ticked records), the merge page
``/ui/<entity>/merge?ids=1,2`` (the records side by side, a radio for the survivor and one per field
whose values differ, the related records that will move, a confirm), and on the survivor's page a
panel with Undo while the merge can be undone."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request, url_for

from engine.fields import whole_number
from engine.plugins import Panel, RecordAction
from engine.storage.errors import RecordError
from engine.ui.common import runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import translate as _
from engine.ui.present import columns, display, lookup_titles, title_of

from .service import MergeError, merge, preview
from .spec import MAX_RECORDS, mergeable
from .undo import last_merge, undo


def blueprint() -> Blueprint:
    bp = ui_routes("merge_ui", __name__)
    bp.add_url_rule("/ui/<entity>/merge", "merge", merge_page, methods=["GET", "POST"])
    bp.add_url_rule("/ui/merges/<int:merge_id>/undo", "undo", undo_merge, methods=["POST"])
    return bp


def list_actions(ent, access) -> list[RecordAction]:
    """"Merge" on the list, for a user who may update and delete its records."""
    if not mergeable(ent) or not (access.can(ent.name, "update") and access.can(ent.name, "delete")):
        return []
    return [RecordAction(key="merge-selected", label=_("Merge"), method="get", style="outline-secondary",
                         kind="merge", order=60, url=url_for("merge_ui.merge", entity=ent.name))]


def undo_panel(ent, record: dict, access) -> list[Panel]:
    """On the survivor's page, while its last merge can be undone by this user: what was merged, Undo."""
    if not mergeable(ent):
        return []
    found = last_merge(runtime(), ent.name, record["id"], access.user_id)
    if found is None or not (access.admin or found["merged_by"] == access.user_id):
        return []
    html = render_template("merge/panel.html", merge=found, ent=ent)
    return [Panel(key="merge", title=_("Merge"), html=html, order=15)]


def _ids() -> list[int]:
    raw = request.values.getlist("ids")
    parts = [p for value in raw for p in value.split(",") if p.strip()]
    return list(dict.fromkeys(i for i in (whole_number(p.strip()) for p in parts) if i))


def merge_page(entity: str):
    rt = runtime()
    ent = rt.model.entities.get(entity)
    if ent is None or not mergeable(ent):
        abort(404)
    ids = _ids()
    back = request.values.get("next") or url_for("ui.list", entity=ent.name)
    if not 2 <= len(ids) <= MAX_RECORDS:
        return with_message(back, _("Select 2 to %(n)s records to merge.") % {"n": MAX_RECORDS}, "warning")
    error = None
    if request.method == "POST":
        survivor = whole_number(request.form.get("survivor", ""))
        choices = {k[len("choice-"):]: whole_number(v) for k, v in request.form.items() if k.startswith("choice-")}
        try:
            if survivor not in ids:
                raise MergeError(422, "validation", _("Choose the record that stays."), "survivor")
            done = merge(rt, ent.name, survivor, [i for i in ids if i != survivor], choices, g.context)
        except (MergeError, RecordError) as exc:
            error = getattr(exc, "message", None) or str(exc)
        else:
            until = done.undo_until.strftime("%Y-%m-%d %H:%M UTC") if done.undo_until else None
            text = _("Merged %(n)s record(s) into this one.") % {"n": len(done.merged_ids)}
            if until:
                text += " " + _("You can undo it until %(until)s (the Merge panel below).") % {"until": until}
            return with_message(url_for("ui.record", entity=ent.name, record_id=survivor), text, "success")
    try:
        found = preview(rt, ent.name, ids, g.context)
    except (MergeError, RecordError) as exc:
        return with_message(back, getattr(exc, "message", None) or str(exc), "danger")
    return render_template("merge/merge.html", **_page(ent, found), error=error, form=request.form,
                           ids=",".join(map(str, ids)), back=back), 422 if error else 200


def _page(ent, found: dict) -> dict:
    """The side-by-side table: per field, each record's value as shown, and whether it may be chosen."""
    lang = current_lang()
    rows = found["records"]
    by_name = {f["name"]: f for f in found["fields"]}
    cols = columns(ent, list(by_name))
    titles = lookup_titles(runtime().records, ent, cols, rows, g.context)
    table = [{"field": c.field, "differs": by_name[c.name]["differs"], "choosable": by_name[c.name]["choosable"],
              "cells": [display(c, r.get(c.name), lang, titles, r) for r in rows]} for c in cols]
    table = [row for row in table if any(row["cells"])]   # a field empty on every record has nothing to choose
    model = runtime().model
    refs = []
    for r in rows:
        refs.append([{"label": model.entity(c["entity"]).plural.get(lang), "field": model.entity(c["entity"]).fields[
            c["field"]].label.get(lang), "count": c["count"]} for c in found["references"][r["id"]]])
    return {"ent": ent, "records": rows, "titles": [title_of(ent, r) for r in rows], "table": table, "refs": refs,
            "hidden_refs": [found["hidden_references"][r["id"]] for r in rows],
            "locks": [found["locks"][r["id"]] for r in rows], "lang": lang}


def undo_merge(merge_id: int):
    rt = runtime()
    try:
        done = undo(rt, merge_id, g.context)
    except (MergeError, RecordError) as exc:
        return with_message(request.form.get("next") or url_for("ui.home"), getattr(exc, "message", None) or str(exc),
                            "danger")
    return with_message(url_for("ui.record", entity=done["entity"], record_id=done["survivor"]["id"]),
                        _("Merge undone: %(n)s record(s) restored.") % {"n": len(done["restored"])}, "success")
