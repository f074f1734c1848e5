"""The workflow on the web UI: the buttons of the transitions a user may take on a record page
(``crm_record_actions``) and the screen that takes one, asking first for the fields it requires.

A kanban move needs nothing here: it is a change of the board's field, which the workflow's write
hook takes as the transition to that value (or refuses, naming the ones allowed).
"""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request, url_for

from engine.fields import whole_number
from engine.plugins import RecordAction
from engine.storage.errors import RecordError, ValidationFailed
from engine.storage.records import Context
from engine.ui.common import (
    editable_columns,
    entity_of,
    load_record,
    parse_input,
    runtime,
    with_message,
)
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import say
from engine.ui.i18n import translate as _
from engine.ui.present import column, input_value, title_of


def blueprint() -> Blueprint:
    bp = ui_routes("workflow_ui", __name__)
    bp.add_url_rule("/ui/<entity:entity>/<int:record_id>/transition/<name>", "transition", transition,
                    methods=["GET", "POST"])
    return bp


def transition_actions(rt, ent, record: dict, access) -> list[RecordAction]:
    """A button per transition ``access``'s user may take from ``record`` now: one that requires
    fields opens the screen asking for them, the others are taken at once."""
    engine = rt.workflow
    if engine is None or ent.name not in engine.specs.workflows or not access.can(ent.name, "update"):
        return []
    with rt.db.read() as conn:
        allowed = engine.available(conn, ent, record, Context(user_id=access.user_id, access=access))
    lang = current_lang()
    return [RecordAction(key=t.name, label=t.label.get(lang), kind="transition", style="outline-primary",
                         method="get" if t.requires else "post", order=10 + i, value=str(t.target),
                         url=url_for("workflow_ui.transition", entity=ent.name, record_id=record["id"], name=t.name))
            for i, t in enumerate(allowed)]


def transition(entity: str, record_id: int, name: str):
    """Take a transition; one that requires fields first asks for them."""
    ent = entity_of(entity, "update")
    record = load_record(ent, record_id)
    wf = runtime().workflow.specs.workflows.get(ent.name)
    t = wf.named(name) if wf else None
    if t is None:
        abort(404)
    cols = editable_columns(ent, [column(ent, n) for n in t.requires])
    if request.method == "GET":
        return render_template("workflow/transition.html", ent=ent, record=record, t=t, cols=cols, errors={},
                               values={c.name: input_value(c, record.get(c.name)) for c in cols},
                               title=title_of(ent, record))
    values = {c.name: parse_input(c, request.form) for c in cols if c.name in request.form or c.widget == "checkbox"}
    version = request.form.get("version", "")
    back = url_for("ui.record", entity=ent.name, record_id=record_id)
    try:
        runtime().workflow.transition(ent.name, record_id, name, values, version=whole_number(version), context=g.context)
    except ValidationFailed as exc:
        if cols:
            errors: dict[str, list[str]] = {}
            for e in exc.errors:
                errors.setdefault(e.field if e.field in t.requires else "", []).append(
                    say(e.message) if e.field in t.requires else say(ValidationFailed([e], ent.name)))
            return render_template("workflow/transition.html", ent=ent, record=record, t=t, cols=cols, errors=errors,
                                   values={c.name: request.form.get(c.name, "") for c in cols},
                                   title=title_of(ent, record)), 422
        return with_message(back, say(exc), "danger")
    except RecordError as exc:
        return with_message(back, say(exc), "danger")
    return with_message(back, _("Done: %(name)s.") % {"name": t.label.get(current_lang())}, "success")
