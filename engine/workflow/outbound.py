"""The built-in actions that reach people and systems: ``notify`` (an in-app notification),
``send_email`` (through the mail transport) and ``webhook`` (a signed POST). The external ones run
outside any transaction and carry the run's idempotency key, so a receiver can drop a repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.error
import urllib.request

from engine.security.profile import wants

from .action_base import ActionError, ActionType, _id_or_text, _json_value, _values_schema


class Notify(ActionType):
    """An in-app notification (a ``notification`` record) for a user."""

    name = "notify"
    schema = {"required": ["message"], "properties": {
        "to": {"type": "string", "description": "formula giving the user's id; default: owner"},
        "message": {"type": "string", "description": "formula giving the text"}}}

    def prepare(self, props, ent, c, where):
        return {"to": c.formula(props.get("to", "owner_id"), ent.name, (*where, "to")),
                "message": c.formula(props["message"], ent.name, (*where, "message"), expect="text")}

    def run(self, act):
        from dataclasses import replace

        user = _id_or_text(act.value(act.step.compiled["to"]))
        if user is None:
            raise ActionError("notify: the recipient is blank")
        # Notifications belong to the engine: whoever started the run may notify the recipient,
        # though no role may create notification records itself.
        system = replace(act.writer, system=True, access=None)
        message = str(act.value(act.step.compiled["message"]) or "")
        about: str | None = f"{act.ent.name}:{act.record['id']}"
        if act.deleted:   # no link to a record that is gone (it could not be saved); say what it was
            title = act.record.get(act.ent.title)
            gone = f" ({act.ent.label} {title if title not in (None, '') else '#' + str(act.record['id'])}, deleted)"
            message, about = message[:max(0, 1000 - len(gone))] + gone, None
        if not wants(act.svc, user, "automation", "in_app"):
            return {"skipped": "the recipient turned automation notifications off"}
        made = act.svc.create("notification", {
            "user": user, "message": message[:1000], "record": about, "automation": act.automation.name,
            "owner_id": user}, context=system, conn=act.conn)
        return {"id": made["id"]}


class SendEmail(ActionType):
    """An e-mail rendered from jinja2 templates (sandboxed, escaped in HTML), sent over SMTP."""

    name = "send_email"
    external = True
    schema = {"required": ["to", "subject", "body"], "properties": {
        "to": {"type": "string", "description": "formula giving the address (or addresses separated by ;)"},
        "subject": {"type": "string", "description": "jinja2 template"},
        "body": {"type": "string", "description": "jinja2 template"},
        "html": {"type": "boolean"},
        "attach": {"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}, "maxItems": 10,
                   "description": "files made from the record to attach, by name (a document: quote_pdf)"},
        "lang": {"enum": ["en", "zh"], "description": "the language of the attached documents (default en)"}}}

    def prepare(self, props, ent, c, where):
        from jinja2 import TemplateSyntaxError

        out = {"to": c.formula(props["to"], ent.name, (*where, "to"))}
        for key in ("subject", "body"):
            try:
                out[key] = _templates(props.get("html", False) and key == "body").from_string(props[key])
            except TemplateSyntaxError as exc:
                c.problem((*where, key), f"template error at line {exc.lineno}: {exc.message}")
        return out

    def run(self, act):
        from .mail import message_id, send_mail

        compiled = act.step.compiled
        to = act.value(compiled["to"])
        addresses = [a.strip() for a in str(to or "").replace(",", ";").split(";") if a.strip()]
        if not addresses:
            raise ActionError("send_email: the recipient address is blank")
        context = {"record": act.record_json(), "entity": act.ent.name, "label": act.ent.label.get()}
        subject = compiled["subject"].render(context).strip().replace("\n", " ")
        body = compiled["body"].render(context)
        attachments = _attachments(act)
        send_mail(act.engine.settings, to=addresses, subject=subject, body=body,
                  html=bool(act.step.props.get("html")), message_id=message_id(act.key, act.step.index),
                  attachments=attachments)
        return {"to": addresses, **({"attached": [a[0] for a in attachments]} if attachments else {})}


def _attachments(act) -> tuple:
    """The files ``attach:`` names, made by the plugin that knows each name (the ``crm_attachments``
    hook: the documents capability renders its PDFs); a name nobody makes is an error of the action."""
    names = act.step.props.get("attach") or ()
    pm = act.svc.hooks.pm
    files = []
    for name in names:
        found = pm.hook.crm_attachments(entity=act.ent, record=act.record, name=name,
                                        lang=act.step.props.get("lang", "en")) if pm is not None else None
        if found is None:
            raise ActionError(f"send_email: nothing makes the attachment {name!r} for {act.ent.name} "
                              "(is it a document of this entity, and is the documents plugin on?)")
        files.append(tuple(found))
    return tuple(files)


def _templates(html: bool):
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(autoescape=html)


class Webhook(ActionType):
    """POST the record as JSON, signed with HMAC-SHA256 (``X-CRM-Signature: sha256=<hex>``)."""

    name = "webhook"
    external = True
    schema = {"properties": {
        "url": {"type": "string", "pattern": "^https?://"}, "url_env": {"type": "string"},
        "secret_env": {"type": "string"}, "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 60},
        "payload": _values_schema("key -> formula; default: the whole record")}}

    def prepare(self, props, ent, c, where):
        if ("url" in props) == ("url_env" in props):
            c.problem(where, "a webhook needs exactly one of url and url_env")
        payload = None
        if "payload" in props:
            payload = {}
            for key, text in props["payload"].items():
                compiled = c.formula(text, ent.name, (*where, "payload", key))
                if compiled is not None:
                    payload[key] = compiled
        return {"payload": payload}

    def run(self, act):
        props = act.step.props
        url = props.get("url") or os.environ.get(props.get("url_env", ""), "")
        if not url:
            raise ActionError(f"webhook: the environment variable {props.get('url_env')} is not set")
        payload = act.step.compiled["payload"]
        data = ({k: _json_value(act.value(v)) for k, v in payload.items()} if payload is not None
                else act.record_json())
        body = json.dumps({"automation": act.automation.name, "entity": act.ent.name,
                           "record_id": act.record.get("id"), "delivery": act.key, "data": data},
                          sort_keys=True, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "crm-engine",
                   "X-CRM-Delivery": act.key, "Idempotency-Key": act.key}
        secret = os.environ.get(props["secret_env"], "") if props.get("secret_env") else ""
        if props.get("secret_env") and not secret:
            raise ActionError(f"webhook: the environment variable {props['secret_env']} is not set")
        if secret:
            headers["X-CRM-Signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=float(props.get("timeout", 10))) as response:  # noqa: S310 - http(s) only (schema)
                status = response.status
        except urllib.error.HTTPError as exc:
            raise ActionError(f"webhook: {url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ActionError(f"webhook: {url} could not be reached: {reason}") from None
        return {"status": status}
