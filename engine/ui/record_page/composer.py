"""The record page's composer: the ``quick_actions`` the entity declares (log a call, add a task or
a meeting, write a note, send an e-mail), each a record of ``activity`` or ``note`` related to this
one, created through the record service with the user's context. An e-mail is sent through the
engine's mail settings (``crm_send_mail``, the ``send_email`` action's) and logged as an activity of
type ``email``; if it cannot be sent, nothing stays logged."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from flask import abort, g, render_template, request

from engine.storage.errors import RecordError, ValidationFailed

from ..common import entity_of, load_record, parse_input, runtime
from ..i18n import current_lang, say
from ..i18n import translate as _
from ..present import column
from .timeline import timeline_days

EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


@dataclass(frozen=True)
class QuickAction:
    """What one tab of the composer creates: ``entity`` with the ``fields`` it asks and ``fixed``
    values (the activity's type and status)."""

    key: str
    entity: str
    fields: tuple[str, ...]
    fixed: tuple[tuple[str, str], ...]
    icon: str


KINDS = {
    "call": QuickAction("call", "activity", ("subject", "call_result", "description"),
                        (("type", "call"), ("status", "completed")), "phone"),
    "task": QuickAction("task", "activity", ("subject", "due_date", "priority"),
                        (("type", "task"), ("status", "not_started")), "check-circle"),
    "meeting": QuickAction("meeting", "activity", ("subject", "start_at", "end_at", "location"),
                           (("type", "meeting"), ("status", "not_started")), "calendar"),
    "note": QuickAction("note", "note", ("body",), (), "document-text"),
    "email": QuickAction("email", "activity", ("subject", "description"),
                         (("type", "email"), ("status", "completed")), "envelope"),
}


def _tab_label(key: str) -> str:
    return {"call": _("Log a call"), "task": _("New task"), "meeting": _("New meeting"), "note": _("New note"),
            "email": _("Send e-mail")}[key]


def quick_actions(ent, record: dict, *, active: str = "", values: dict | None = None,
                  errors: dict | None = None, done: str = "") -> dict:
    """The composer as the template draws it: a tab per declared action the user may create."""
    model = runtime().model
    tabs = []
    for key in ent.props.get("quick_actions") or ():
        kind = KINDS.get(key)
        target = model.entities.get(kind.entity) if kind else None
        if target is None or not g.access.can(target.name, "create"):
            continue
        hidden = g.access.hidden(target.name)
        if "related_to" in hidden:
            continue
        cols = [c for c in (column(target, n) for n in kind.fields) if c is not None and c.name not in hidden]
        tabs.append({"key": key, "label": _tab_label(key), "icon": kind.icon, "entity": target, "cols": cols,
                     "to": _default_to(ent, record) if key == "email" else ""})
    active = active if any(t["key"] == active for t in tabs) else (tabs[0]["key"] if tabs else "")
    return {"tabs": tabs, "active": active, "typed": values or {}, "errors": errors or {}, "done": done}


def _default_to(ent, record: dict) -> str:
    """The record's own e-mail address (a contact's, a lead's), if it has one the user may read."""
    for f in ent.fields.values():
        if f.type_name == "email" and f.name not in g.access.hidden(ent.name) and record.get(f.name):
            return str(record[f.name])
    return ""


def compose(entity: str, record_id: int, action: str):
    """Create what a tab of the composer asks for; the composer comes back (with the errors beside
    their inputs, 422) and, on success, the refreshed timeline with it (out of band)."""
    ent = entity_of(entity)
    record = load_record(ent, record_id)
    kind = KINDS.get(action)
    if kind is None or action not in (ent.props.get("quick_actions") or ()):
        abort(404)
    target = entity_of(kind.entity, "create")
    cols = [c for c in (column(target, n) for n in kind.fields)
            if c is not None and c.name not in g.access.hidden(target.name)]
    raw = {c.name: request.form.get(c.name, "") for c in cols}
    values = {c.name: parse_input(c, request.form) for c in cols}
    values = {k: v for k, v in values.items() if v is not None}
    values.update(dict(kind.fixed))
    values["related_to"] = {"entity": ent.name, "id": record_id}
    errors: dict[str, list[str]] = {}
    to = ""
    if action == "email":
        raw["to"] = to = request.form.get("to", "").strip()
        addresses = [a.strip() for a in re.split(r"[,;]", to) if a.strip()]
        if not addresses or not all(EMAIL.match(a) for a in addresses):
            errors["to"] = [_("Enter one or more e-mail addresses, separated by commas.")]
        if not values.get("description"):
            errors["description"] = [_("Write the message.")]
        values["description"] = f"{_('To')}: {', '.join(addresses)}\n\n{values.get('description') or ''}"
        values["status"] = "in_progress"
    if errors:
        return _answer(ent, record, action, raw, errors), 422
    svc = runtime().records
    try:
        made = svc.create(target.name, values, context=g.context)
        if action == "email":
            _send(made, addresses, values.get("subject") or "", request.form.get("description", ""))
            svc.update(target.name, made["id"], {"status": "completed"}, version=made["version"], context=g.context)
    except ValidationFailed as exc:
        shown = {c.name for c in cols}
        for e in exc.errors:
            errors.setdefault(e.field if e.field in shown else "", []).append(
                say(e.message) if e.field in shown else _labelled(target, e))
        return _answer(ent, record, action, raw, errors), 422
    except (RecordError, MailFailed) as exc:
        errors[""] = [say(exc)]
        return _answer(ent, record, action, raw, errors), 422
    return _answer(ent, record, action, {}, {}, done=_("Saved."), timeline=True)


class MailFailed(RuntimeError):
    pass


def _send(made: dict, to: list[str], subject: str, body: str) -> None:
    """Send the e-mail; when it cannot go, the activity just logged is removed (nothing half-done)."""
    rt = runtime()
    error = None
    try:
        sent = rt.pm.hook.crm_send_mail(runtime=rt, to=to, subject=subject, body=body,
                                        key=f"composer:{made['id']}:{secrets.token_hex(8)}")
    except Exception as exc:   # noqa: BLE001 - the mail server's own words, shown to the user
        sent, error = None, exc
    if not sent:
        rt.records.delete("activity", made["id"], context=g.context)
        raise MailFailed(_("The e-mail could not be sent: %(why)s") % {"why": error or _("no mail service")})


def _answer(ent, record: dict, action: str, raw: dict, errors: dict, *, done: str = "", timeline: bool = False):
    composer = quick_actions(ent, record, active=action, values=raw, errors=errors, done=done)
    return render_template("ui/_record_composer.html", ent=ent, record=record, composer=composer,
                           lang=current_lang(), days=timeline_days(ent, record) if timeline else None,
                           oob=timeline)


__all__ = ["compose", "quick_actions"]


def _labelled(ent, error) -> str:
    """An error of a field the composer does not show, with the field's label in the user's language."""
    field = ent.fields.get(error.field) if error.field else None
    text = say(error.message)
    return f"{field.label.get(current_lang())}: {text}" if field is not None else text
