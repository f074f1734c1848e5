"""Approvals on the web UI: an "Approvals" inbox (a navigation entry, the records waiting for the
user's decision, approve or reject with a comment from the inbox), on the page of a record of an
entity with an approval process a panel with its steps and history and the buttons the user may use
(submit, approve, reject with a comment, recall), and the read-only notice while it is pending."""

from __future__ import annotations

from flask import Blueprint, abort, g, render_template, request, url_for

from engine.fields import whole_number
from engine.plugins import NavEntry, Panel, RecordAction, TimelineEntry
from engine.ui.common import back_to, runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import say
from engine.ui.i18n import translate as _

from .plugin import approvals_of
from .service import ApprovalError

ACTIONS = ("submit", "approve", "reject", "recall")
MAX_SELECTED = 200


def blueprint() -> Blueprint:
    bp = ui_routes("approvals_ui", __name__)
    bp.add_url_rule("/ui/approvals", "inbox", inbox, methods=["GET"])
    bp.add_url_rule("/ui/approvals/<entity>/<int:record_id>/<action>", "act", act, methods=["POST"])
    bp.add_url_rule("/ui/approvals/<entity>/_submit", "submit_many", submit_many, methods=["POST"])
    return bp


def nav_entries(service, access) -> list[NavEntry]:
    if service is None or not service.approvals:
        return []
    n = service.waiting(access.user_id)
    count = f" ({n})" if n else ""
    return [NavEntry(key="approvals", label={"en": f"Approvals{count}", "zh": f"审批{count}"},
                     url=url_for("approvals_ui.inbox"), order=40)]


def record_panel(service, ent, record: dict, access) -> list[Panel]:
    """The approvals of the record: the current one's steps and decisions, the buttons, older ones."""
    if service is None or ent.name not in service.entities:
        return []
    history = service.history(ent.name, record["id"], access=access, user_id=access.user_id)
    current = history[0] if history else None
    may_submit = current is None or current["status"] != "pending"
    html = render_template("approvals/panel.html", ent=ent, record=record, history=history, current=current,
                           may_submit=may_submit, lang=current_lang())
    return [Panel(key="approvals", title=_("Approval"), html=html, order=20)]


def timeline_entries(service, ent, record: dict, access) -> list[TimelineEntry]:
    """The record's approvals in its timeline (``crm_record_timeline``): each submission and decision."""
    from datetime import datetime

    if service is None or ent.name not in service.entities:
        return []
    try:
        history = service.history(ent.name, record["id"], access=access, user_id=access.user_id)
    except ApprovalError:
        return []
    lang = current_lang()
    decided = {"approved": _("Approved"), "rejected": _("Rejected")}
    out = []
    for item in history:
        process = item["label"].get(lang) or item["label"].get("en") or ""
        who = (item["submitted_by"] or {}).get("name") or "?"
        out.append(TimelineEntry(at=datetime.fromisoformat(item["submitted_at"]), kind="approval", by=who,
                                 text=_("Submitted for approval: %(process)s") % {"process": process}))
        for step in item["steps"]:
            for d in step["decisions"]:
                if d["decided_at"] and d["decision"] in decided:
                    text = f"{decided[d['decision']]}: {process}" + (f" · “{d['comment']}”" if d["comment"] else "")
                    out.append(TimelineEntry(at=datetime.fromisoformat(d["decided_at"]), kind="approval", text=text,
                                             by=(d["approver"] or {}).get("name") or "?"))
    return out


def list_actions(service, ent, access) -> list[RecordAction]:
    """"Submit for approval" on the list of an entity with a process, for the ticked records."""
    if service is None or ent.name not in service.entities:
        return []
    return [RecordAction(key="approval-submit", label=_("Submit for approval"), kind="approval",
                         style="outline-primary", url=url_for("approvals_ui.submit_many", entity=ent.name))]


def lock_reason(service, ent, record: dict, access) -> str | None:
    """Why a pending record is read-only for this user (``crm_record_lock``)."""
    if service is None or ent.name not in service.entities:
        return None
    with service.db.read() as conn:
        approval = service.lock_of(conn, ent.name, record["id"], access.user_id, access.admin)
    if approval is None:
        return None
    return _("Pending approval (%(process)s): read-only until it is approved, rejected or recalled.") % {
        "process": approval.label.get(current_lang())}


def inbox():
    service = approvals_of(runtime())
    if service is None:
        abort(404)
    items = service.inbox(g.access.user_id)
    model = runtime().model
    for item in items:
        ent = model.entity(item["entity"])
        item["entity_label"] = ent.label.get(current_lang())
    return render_template("approvals/inbox.html", items=items, lang=current_lang())


def submit_many(entity: str):
    """Submit each ticked record; those refused are listed with why."""
    service = approvals_of(runtime())
    if service is None or entity not in service.entities:
        abort(404)
    back = back_to(url_for("ui.list", entity=entity))
    ids = [n for n in (whole_number(v) for v in request.form.getlist("ids")) if n][:MAX_SELECTED]
    if not ids:
        return with_message(back, _("Select at least one record."), "warning")
    failed = []
    for record_id in ids:    # one approval each, in its own transaction
        try:
            service.submit(entity, record_id, user_id=g.access.user_id, access=g.access)
        except ApprovalError as exc:
            failed.append(f"#{record_id}: {say(exc.message)}")
    message = _("Submitted %(n)s record(s) for approval.") % {"n": len(ids) - len(failed)}
    if failed:
        message += " " + _("Not done:") + " " + "; ".join(failed[:10])
    return with_message(back, message, "warning" if failed else "success")


def act(entity: str, record_id: int, action: str):
    service = approvals_of(runtime())
    if service is None or action not in ACTIONS or entity not in service.entities:
        abort(404)
    back = back_to(url_for("ui.record", entity=entity, record_id=record_id))
    comment = request.form.get("comment") or None
    try:
        if action == "submit":
            service.submit(entity, record_id, user_id=g.access.user_id, access=g.access, comment=comment)
        else:
            getattr(service, action)(entity, record_id, user_id=g.access.user_id, comment=comment)
    except ApprovalError as exc:
        return with_message(back, say(exc.message), "danger")
    done = {"submit": _("Submitted for approval."), "approve": _("Approved."), "reject": _("Rejected."),
            "recall": _("Recalled.")}
    return with_message(back, done[action], "success")


def home_panel(service, access) -> list[Panel]:
    """The home page's "Waiting for my approval": the records whose current step the user decides."""
    from markupsafe import Markup, escape

    if service is None or not service.approvals:
        return []
    items = service.inbox(access.user_id, limit=6)
    total = service.waiting(access.user_id) if items else 0
    lang = current_lang()
    rows = "".join(
        f'<li class="d-flex justify-content-between gap-2 py-1"><a class="text-truncate" href="'
        f'{escape(url_for("ui.record", entity=i["entity"], record_id=i["record_id"]))}">{escape(i["title"])}</a>'
        f'<span class="small text-body-secondary text-nowrap">{escape(i["step"]["label"].get(lang) or i["step"]["name"])}</span></li>'
        for i in items)
    body = (f'<p class="small text-body-secondary mb-2" data-count="approvals">{escape(_("%(n)s waiting for you") % {"n": total})}</p>'
            f'<ul class="list-unstyled mb-2">{rows}</ul>' if items else
            f'<p class="text-body-secondary mb-2">{escape(_("Nothing waits for your approval."))}</p>')
    body += f'<a class="small" href="{escape(url_for("approvals_ui.inbox"))}">{escape(_("Open the approvals inbox"))} →</a>'
    return [Panel(key="approvals", title=_("Waiting for my approval"), html=Markup(body), order=40)]
