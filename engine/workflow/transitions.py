"""Workflow transitions, a part of the ``WorkflowEngine``: the guard every write of a state field
passes (a change of the state must be a transition the writer may take: roles, guard formula,
required fields), the transitions a user may take now, and taking one by name.
"""

from __future__ import annotations

from engine.messages import Msg
from engine.metadata.model import Entity
from engine.storage.errors import FieldError, NotFound
from engine.storage.records import Context

from .spec import Transition, Workflow

ADMIN_ROLE = "admin"


class Transitions:
    """The transitions of the entities' workflows (mixed into ``WorkflowEngine``)."""

    def _check_transition(self, conn, ent, wf: Workflow, event, record, old, context, errors) -> Transition | None:
        state_field = wf.field
        if event == "create":
            value = record.get(state_field)
            if wf.initial is not None and not context.system and value not in wf.initial:
                errors.append(FieldError(state_field, "transition",
                                         Msg("a new {entity} starts in {states}, not {value}", entity=ent.name,
                                             states=", ".join(sorted(wf.initial)), value=repr(value))))
            return None
        if event != "update":
            return None
        before, after = old.get(state_field), record.get(state_field)
        named = context.transition
        if named is not None:
            t = wf.named(named)
            if t is None:
                raise NotFound("transition", named)
            if not t.leaves(before) or after != t.target:
                errors.append(FieldError(state_field, "transition", self._refusal(conn, ent, wf, record, old, context,
                                                                                   Msg("{transition} cannot be taken from {state}", transition=t.name, state=repr(before)))))
                return None
            problem = self._may_take(conn, ent, t, record, old, context)
            if problem:
                errors.append(FieldError(state_field, "transition", Msg("{transition}: {problem}", transition=t.name, problem=problem)))
                return None
        else:
            if before == after:
                return None
            matching = [t for t in wf.transitions if t.leaves(before) and t.target == after]
            if context.system:
                t = matching[0] if matching else None
                return t
            usable = [t for t in matching if not self._may_take(conn, ent, t, record, old, context)]
            if not usable:
                reason = self._may_take(conn, ent, matching[0], record, old, context) if matching else None
                message = (Msg("{field} cannot change from {old} to {new} ({reason})", field=state_field, old=repr(before),
                                   new=repr(after), reason=reason) if reason else
                           Msg("{field} cannot change from {old} to {new}", field=state_field, old=repr(before), new=repr(after)))
                errors.append(FieldError(state_field, "transition", self._refusal(conn, ent, wf, record, old, context, message)))
                return None
            t = usable[0]
        for name in t.requires:
            value = record.get(name)
            if value is None or value == "" or value == []:
                errors.append(FieldError(name, "required", Msg("is required to {transition}", transition=t.name)))
        return t

    def _refusal(self, conn, ent, wf, record, old, context, message: str) -> str:
        allowed = self.available(conn, ent, old, context, wf=wf)
        names = ", ".join(f"{t.name} (to {t.target})" for t in allowed)
        return Msg("{message}; allowed now: {names}", message=message, names=names if allowed else Msg("none"))

    def _may_take(self, conn, ent, t: Transition, record, old, context) -> str | None:
        """Why the writer may not take ``t`` now (None when they may)."""
        if t.roles is not None and not context.system:
            user = self.user(conn, context.user_id)
            role = (user or {}).get("role")
            if role != ADMIN_ROLE and role not in t.roles:
                return Msg("only {roles} may {transition}", roles=", ".join(sorted(t.roles)), transition=t.name)
        if t.guard is not None:
            from engine import rules

            try:
                ok = self.evaluate(conn, ent, t.guard, record, old, context) is True
            except rules.RuleError as exc:
                return f"its condition failed: {exc.message}"
            if not ok:
                return f"it needs {t.guard.expression}"
        return None

    def available(self, conn, ent: Entity, record: dict, context: Context, *, wf: Workflow | None = None) -> list[Transition]:
        """The transitions the user may take from ``record`` as it stands."""
        wf = wf or self.specs.workflows.get(ent.name)
        if wf is None:
            return []
        state = record.get(wf.field)
        out = []
        for t in wf.transitions:
            if not t.leaves(state):
                continue
            target = {**record, wf.field: t.target}
            if self._may_take(conn, ent, t, target, record, context) is None:
                out.append(t)
        return out

    def transition(self, entity: str, record_id: int, name: str, values: dict | None = None, *,
                   version: int | None = None, context=None) -> dict:
        """Take the workflow transition ``name`` (with extra field ``values``): an update through the
        record service whose state change must be that transition."""
        from dataclasses import replace

        ent = self.svc.model.entities[entity]
        target = self.transition_target(ent, name)
        context = context if context is not None else Context()
        return self.svc.update(entity, record_id, {**(values or {}), **target}, version=version,
                              context=replace(context, transition=name))

    def transition_target(self, ent: Entity, name: str) -> dict:
        wf = self.specs.workflows.get(ent.name)
        t = wf.named(name) if wf else None
        if t is None:
            raise NotFound("transition", name)
        return {wf.field: t.target}
