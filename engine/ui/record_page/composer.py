"""The record page's composer: a tab per ``quick_actions`` name the entity lists, each a
``quick_action`` document (``kinds``: the entity it creates, related to this record through its
``link``, the fields it asks and the values it sets), created through the record service with the
user's context. A tab that ``send``s e-mails it through the engine's mail settings (``crm_send_mail``,
the ``send_email`` action's) and logs it as the record created; if it cannot be sent, nothing stays
logged."""

from __future__ import annotations

import re
import secrets

from flask import abort, g, render_template, request

from engine.storage.errors import RecordError, ValidationFailed

from ..common import entity_of, load_record, parse_input, runtime
from ..i18n import current_lang, say
from ..i18n import translate as _
from ..present import column
from .kinds import compile_quick_actions
from .timeline import timeline_days

EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


def _declared() -> dict:
    """The model's ``quick_action`` documents, compiled once per model."""
    rt = runtime()
    cached = rt.extensions.get("quick_actions")
    if cached is None or cached[0] is not rt.model:
        cached = rt.extensions["quick_actions"] = (rt.model, compile_quick_actions(rt.model)[0])
    return cached[1]


def quick_actions(ent, record: dict, *, active: str = "", values: dict | None = None,
                  errors: dict | None = None, done: str = "") -> dict:
    """The composer as the template draws it: a tab per declared action the user may create."""
    model, declared = runtime().model, _declared()
    tabs = []
    for key in ent.props.get("quick_actions") or ():
        kind = declared.get(key)
        target = model.entities.get(kind.entity) if kind else None
        if target is None or not g.access.can(target.name, "create"):
            continue
        hidden = g.access.hidden(target.name)
        if kind.link in hidden:
            continue
        cols = [c for c in (column(target, n) for n in kind.fields) if c is not None and c.name not in hidden]
        tabs.append({"key": key, "label": kind.label.get(current_lang()), "icon": kind.icon, "entity": target,
                     "cols": cols, "sends": bool(kind.body), "to": _default_to(ent, record) if kind.body else ""})
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
    kind = _declared().get(action)
    if kind is None or action not in (ent.props.get("quick_actions") or ()):
        abort(404)
    target = entity_of(kind.entity, "create")
    cols = [c for c in (column(target, n) for n in kind.fields)
            if c is not None and c.name not in g.access.hidden(target.name)]
    raw = {c.name: request.form.get(c.name, "") for c in cols}
    values = {c.name: parse_input(c, request.form) for c in cols}
    values = {k: v for k, v in values.items() if v is not None}
    values.update(kind.values)
    link = target.fields[kind.link]
    values[kind.link] = {"entity": ent.name, "id": record_id} if link.type_name == "reference" else record_id
    errors: dict[str, list[str]] = {}
    to = ""
    if kind.body:
        raw["to"] = to = request.form.get("to", "").strip()
        addresses = [a.strip() for a in re.split(r"[,;]", to) if a.strip()]
        if not addresses or not all(EMAIL.match(a) for a in addresses):
            errors["to"] = [_("Enter one or more e-mail addresses, separated by commas.")]
        if not values.get(kind.body):
            errors[kind.body] = [_("Write the message.")]
        values[kind.body] = f"{_('To')}: {', '.join(addresses)}\n\n{values.get(kind.body) or ''}"
        values.update(kind.while_sending)
    if errors:
        return _answer(ent, record, action, raw, errors), 422
    svc = runtime().records
    try:
        made = svc.create(target.name, values, context=g.context)
        if kind.body:
            _send(target, made, addresses, values.get("subject") or "", request.form.get(kind.body, ""))
            if kind.while_sending:   # sent: the values it has for good
                svc.update(target.name, made["id"], {k: kind.values.get(k) for k in kind.while_sending},
                           version=made["version"], context=g.context)
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


def _send(target, made: dict, to: list[str], subject: str, body: str) -> None:
    """Send the e-mail; when it cannot go, the activity just logged is removed (nothing half-done)."""
    rt = runtime()
    error = None
    try:
        sent = rt.pm.hook.crm_send_mail(runtime=rt, to=to, subject=subject, body=body,
                                        key=f"composer:{made['id']}:{secrets.token_hex(8)}")
    except Exception as exc:   # noqa: BLE001 - the mail server's own words, shown to the user
        sent, error = None, exc
    if not sent:
        rt.records.delete(target.name, made["id"], context=g.context)
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
