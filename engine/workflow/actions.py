"""The action registry: what an automation or a transition can do.

Each action type is one object: a JSON Schema for its properties, ``prepare`` (compile its formulas
and templates when the metadata loads, reporting problems at their paths) and ``run`` (do it for one
record). Plugins add types through the ``crm_actions`` hook and plain functions for ``call``
through ``crm_action_functions``.

Kinds of action:

* ``before_save`` types (``set_fields``, ``assign``) give field changes: on a write they change the
  record before it is saved, in the same transaction; elsewhere (schedules) they update the record.
* ``external`` types (``send_email``, ``webhook``) talk to the outside world outside any
  transaction; they carry the run's idempotency key so a receiver can drop a repeat delivery.
* the others write records in the job's transaction together with the run's "done" marker, so a
  retried job never repeats them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import sqlalchemy as sa

from engine.metadata.model import Entity
from engine.storage.tables import USER_ENTITY


class ActionError(RuntimeError):
    """An action could not do its work; the run fails (and is retried) with this message."""


@dataclass
class ActionRun:
    """One action about to run for one record."""

    engine: Any                     # the WorkflowEngine
    automation: Any                 # spec.Automation
    step: Any                       # spec.Step
    ent: Entity
    record: dict
    old: dict | None
    writer: Any                     # the Context its writes use
    conn: Any = None                # the transaction (None for external actions)
    run_id: int | None = None
    key: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    attempt: int = 1
    deleted: bool = False           # the record was deleted: ``record`` is what it held then

    @property
    def svc(self):
        return self.engine.svc

    def value(self, compiled) -> Any:
        return self.engine.evaluate(self.conn, self.ent, compiled, self.record, self.old, self.writer, self.now)

    def values(self, compiled: Mapping[str, tuple]) -> dict:
        from engine.storage.formulas import result_value

        out = {}
        for name, (fld, rule) in compiled.items():
            value = self.value(rule)
            out[name] = result_value(fld, value) if fld is not None and fld.type_name not in ("lookup", "user", "reference") \
                else _id_or_text(value)
        return out

    def record_json(self) -> dict:
        return record_json(self.ent, self.record)


def _id_or_text(value: Any) -> Any:
    if value is None or isinstance(value, (int, str)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def record_json(ent: Entity, record: Mapping) -> dict:
    """A record as JSON values (what the API returns), for templates and webhook payloads."""
    out = {}
    for key, value in record.items():
        fld = ent.fields.get(key)
        if value is None:
            out[key] = None
        elif fld is not None:
            out[key] = fld.type.to_json(fld, value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


class ActionType:
    name: str = ""
    before_save = False
    external = False
    schema: dict = {}

    def prepare(self, props: dict, ent: Entity, c, where: tuple) -> dict:
        """Compile what ``props`` holds for records of ``ent``; report problems with ``c.problem``."""
        return {}

    def changes(self, act: ActionRun) -> dict:
        """For ``before_save`` types: the field changes to make to the record."""
        raise NotImplementedError

    def run(self, act: ActionRun) -> Any:
        """Do it; the result (JSON) is kept with the run's done marker. ``before_save`` types update
        the record with their changes when they run outside a write (schedules)."""
        changes = self.changes(act)
        if changes:
            act.svc.update(act.ent.name, act.record["id"], changes, context=act.writer, conn=act.conn)
        return {"changed": sorted(changes)}


def _values_schema(description: str) -> dict:
    return {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"},
            "description": description}


class SetFields(ActionType):
    name = "set_fields"
    before_save = True
    schema = {"required": ["values"], "properties": {"values": _values_schema("field -> formula")}}

    def prepare(self, props, ent, c, where):
        return {"values": c.values(props["values"], ent.name, ent, (*where, "values"))}

    def changes(self, act):
        return act.values(act.step.compiled["values"])


class Assign(ActionType):
    """Round-robin or least-loaded among the active users of a role (and team)."""

    name = "assign"
    before_save = True
    schema = {"required": ["role"], "properties": {
        "role": {"type": "string"}, "team": {"type": "string"},
        "field": {"type": "string"}, "strategy": {"enum": ["round_robin", "least_loaded"]},
        "load_when": {"type": "string"}}}

    def prepare(self, props, ent, c, where):
        fname = props.get("field", "owner_id")
        fld = ent.fields.get(fname)
        if fname != "owner_id" and (fld is None or fld.type_name != "user"):
            c.problem((*where, "field"), f"{fname!r} is not a user field of {ent.name}")
        load = None
        if "load_when" in props:
            load = c.formula(props["load_when"], ent.name, (*where, "load_when"), expect="boolean", sql=True)
        return {"field": fname, "load_when": load}

    def changes(self, act):
        svc, conn = act.svc, act.conn
        users = svc.table(USER_ENTITY)
        props = act.step.props
        cache = act.engine.db.txn_cache(conn)
        cache_key = ("assign", props["role"], props.get("team"))
        candidates = cache.get(cache_key)
        if candidates is None:   # read once per write transaction (a bulk import assigns thousands)
            query = sa.select(users.c.id).where(users.c.active.is_not(False), users.c.role == props["role"])
            if props.get("team"):
                query = query.where(users.c.team == props["team"])
            candidates = cache[cache_key] = list(conn.execute(query.order_by(users.c.id)).scalars())
        if not candidates:
            team = f" in team {props['team']!r}" if props.get("team") else ""
            raise ActionError(f"assign: no active user with role {props['role']!r}{team}")
        fname = act.step.compiled["field"]
        if props.get("strategy") == "least_loaded":
            table = svc.table(act.ent.name)
            col = table.c[fname]
            stmt = sa.select(col, sa.func.count()).where(col.in_(candidates)).group_by(col)
            load = act.step.compiled.get("load_when")
            if load is not None:
                from engine import rules

                scope = rules.Scope(svc.metadata, act.ent.name, svc.model, dialect=svc.db.dialect, now=act.now)
                stmt = scope.apply(stmt.where(load.where(scope)))
            counts = dict(conn.execute(stmt).all())
            chosen = min(candidates, key=lambda uid: (counts.get(uid, 0), uid))
        else:
            turn = act.engine.next_turn(conn, f"assign:{act.automation.name}")
            chosen = candidates[(turn - 1) % len(candidates)]
        return {fname: chosen}


class CreateRecord(ActionType):
    name = "create_record"
    schema = {"required": ["entity"], "properties": {
        "entity": {"type": "string"}, "values": _values_schema("field of the new record -> formula"),
        "link": {"type": "string", "description": "a lookup or reference field of the new record set to this record"}}}

    def prepare(self, props, ent, c, where):
        target = c.model.entities.get(props["entity"])
        if target is None:
            c.problem((*where, "entity"), f"there is no entity {props['entity']!r}")
            return {}
        link = props.get("link")
        if link is not None:
            fld = target.fields.get(link)
            refs = fld is not None and (fld.target == ent.name or (
                fld.type_name == "reference" and ent.name in (fld.prop("to") or c.model.entities)))
            if not refs:
                c.problem((*where, "link"), f"{target.name}.{link} is not a lookup or reference to {ent.name}")
        values = c.values(props.get("values") or {}, ent.name, target, (*where, "values")) if props.get("values") else {}
        return {"target": target.name, "values": values, "link": link}

    def run(self, act):
        compiled = act.step.compiled
        values = act.values(compiled["values"])
        link = compiled["link"]
        if link:
            fld = act.svc.model.entity(compiled["target"]).fields[link]
            values[link] = f"{act.ent.name}:{act.record['id']}" if fld.type_name == "reference" else act.record["id"]
        made = act.svc.create(compiled["target"], values, context=act.writer, conn=act.conn)
        return {"entity": compiled["target"], "id": made["id"]}


class UpdateRelated(ActionType):
    """Change the records a lookup path of this record points at (``account``, ``related_to.account``)."""

    name = "update_related"
    schema = {"required": ["path", "values"], "properties": {
        "path": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "entity": {"type": "string"}, "values": _values_schema("field of the related record -> formula")}}

    def prepare(self, props, ent, c, where):
        paths = [props["path"]] if isinstance(props["path"], str) else list(props["path"])
        reached: set[str] = set()
        for i, path in enumerate(paths):
            at = (*where, "path") if isinstance(props["path"], str) else (*where, "path", i)
            ends = _path_targets(c.model, ent, path)
            if isinstance(ends, str):
                c.problem(at, ends)
            else:
                reached |= ends
        wanted = props.get("entity")
        if wanted is not None:
            if wanted not in reached:
                c.problem((*where, "entity"), f"no path reaches a {wanted!r} record")
                return {}
            reached = {wanted}
        elif len(reached) > 1:
            c.problem((*where, "path"), f"the paths reach {', '.join(sorted(reached))}: say which with 'entity'")
            return {}
        if not reached:
            return {}
        target = c.model.entity(next(iter(reached)))
        return {"paths": paths, "target": target.name,
                "values": c.values(props["values"], ent.name, target, (*where, "values"))}

    def run(self, act):
        compiled = act.step.compiled
        values = act.values(compiled["values"])
        updated = []
        for path in compiled["paths"]:
            for entity, rid in _walk(act.svc, act.conn, act.ent, act.record, path):
                if entity == compiled["target"] and (entity, rid) not in updated:
                    act.svc.update(entity, rid, values, context=act.writer, conn=act.conn)
                    updated.append((entity, rid))
        return {"updated": [rid for _, rid in updated]}


def _path_targets(model, ent: Entity, path: str) -> set[str] | str:
    """The entities ``path`` can reach from ``ent`` (a problem message when it reaches none)."""
    current = {ent.name}
    for segment in path.split("."):
        nxt: set[str] = set()
        for name in current:
            fld = model.entity(name).fields.get(segment)
            if fld is None:
                continue
            if fld.target:
                nxt.add(fld.target)
            elif fld.type_name == "reference":
                nxt |= set(fld.prop("to") or model.entities)
        if not nxt:
            return f"{path!r}: {segment!r} is not a lookup or reference of {', '.join(sorted(current))}"
        current = nxt
    return current


def _walk(svc, conn, ent: Entity, record: Mapping, path: str) -> list[tuple[str, int]]:
    """(entity, id) at the end of ``path`` from ``record`` (empty where a link is blank or absent)."""
    here: list[tuple[Entity, Mapping]] = [(ent, record)]
    found: list[tuple[str, int]] = []
    segments = path.split(".")
    for depth, segment in enumerate(segments):
        step = []
        for cur, rec in here:
            fld = cur.fields.get(segment)
            value = rec.get(segment) if fld is not None else None
            if value is None:
                continue
            if fld.type_name == "reference":
                target, rid = value.entity, value.id
            else:
                target, rid = fld.target, value
            if depth == len(segments) - 1:
                found.append((target, rid))
            else:
                try:
                    step.append((svc.model.entity(target), svc._load(conn, svc.model.entity(target), rid)))
                except Exception:  # noqa: BLE001 - a dangling link ends the path
                    continue
        here = step
    return found


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
        "html": {"type": "boolean"}}}

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
        send_mail(act.engine.settings, to=addresses, subject=subject, body=body,
                  html=bool(act.step.props.get("html")), message_id=message_id(act.key, act.step.index))
        return {"to": addresses}


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


def _json_value(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class Call(ActionType):
    """Call a plugin function (``crm_action_functions``) with formula arguments, in the job's
    transaction: ``function(act, **args)``; it may write records through ``act.svc`` with
    ``conn=act.conn, context=act.writer``."""

    name = "call"
    schema = {"required": ["function"], "properties": {
        "function": {"type": "string"}, "args": {"type": "object", "additionalProperties": {"type": "string"}}}}

    def __init__(self, functions: Mapping[str, Callable] | None = None):
        self.functions = dict(functions or {})

    def prepare(self, props, ent, c, where):
        if props["function"] not in self.functions:
            known = ", ".join(sorted(self.functions)) or "none (plugins add them with crm_action_functions)"
            c.problem((*where, "function"), f"unknown function {props['function']!r}; known: {known}")
        args = {}
        for key, text in (props.get("args") or {}).items():
            compiled = c.formula(text, ent.name, (*where, "args", key))
            if compiled is not None:
                args[key] = compiled
        return {"args": args}

    def run(self, act):
        function = self.functions[act.step.props["function"]]
        args = {k: act.value(v) for k, v in act.step.compiled["args"].items()}
        return _json_value(function(act, **args))


BUILTIN = (SetFields, Assign, CreateRecord, UpdateRelated, Notify, SendEmail, Webhook)


def default_actions(functions: Mapping[str, Callable] | None = None, extra=()) -> dict[str, ActionType]:
    out: dict[str, ActionType] = {}
    for action in (*(cls() for cls in BUILTIN), Call(functions), *extra):
        if action.name in out:
            raise ValueError(f"action type {action.name!r} is registered twice")
        out[action.name] = action
    return out


def actions_from_plugins(pm) -> dict[str, ActionType]:
    """Built-in actions, the plugins' (``crm_actions``) and ``call``'s functions (``crm_action_functions``)."""
    functions: dict[str, Callable] = {}
    for found in pm.hook.crm_action_functions():
        for name, fn in (found or {}).items():
            if name in functions:
                raise ValueError(f"action function {name!r} is registered by two plugins")
            functions[name] = fn
    extra = [a for found in pm.hook.crm_actions() for a in (found or ())]
    return default_actions(functions, extra)
