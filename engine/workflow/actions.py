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

from typing import Callable, Mapping

import sqlalchemy as sa

from engine.metadata.model import Entity
from engine.storage.tables import USER_ENTITY

from .action_base import (ActionError, ActionRun, ActionType, _id_or_text, _json_value,  # noqa: F401 - re-exported
                          _values_schema, record_json)
from .outbound import Notify, SendEmail, Webhook


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
