"""The workflow and automation engine, inside the record service's one door.

On every write of an entity that has a workflow or automations, in the write's transaction:

1. ``before_write``: a change of the workflow's state field must be a transition the writer may
   take (or the write is refused, naming the ones allowed); then the automations this write
   triggers are chosen (event, ``changed`` fields, transition, condition) and their before-save
   actions (``set_fields``, ``assign``) change the record before it is validated and saved.
2. ``after_write``: one run row per triggered automation goes into ``_crm_automation_run`` (the
   outbox: it commits or rolls back with the write), and date-relative schedules of the record
   are planned, moved or dropped in ``_crm_schedule``.
3. After the commit, the runs with after-commit actions are handed to the runner (a thread in this
   process, or rq workers), which calls ``execute(run_id)`` (``runs.py``).

Transitions (the state field's guard, taking one by name) are in ``transitions.py``; plugins fire
their own triggers with ``fire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlalchemy.engine import Connection

from engine.metadata.model import Entity
from engine.storage.errors import FieldError, NotFound, ValidationFailed
from engine.storage.records import Context
from engine.storage.tables import USER_ENTITY

from .actions import ActionError, ActionRun
from .runs import Runs, utcnow
from .spec import Automation, Specs, Transition, Workflow
from .transitions import ADMIN_ROLE, Transitions

#: Run states. queued -> running -> done | retrying -> ... -> dead; stopped: refused (depth limit).
STATUSES = ("queued", "running", "retrying", "done", "dead", "stopped")
__all__ = ["ADMIN_ROLE", "STATUSES", "EntityPlan", "Triggered", "WorkflowEngine", "utcnow"]

@dataclass
class EntityPlan:
    """What one entity's writes must do, computed once."""

    workflow: Workflow | None
    on_event: dict[str, list[Automation]]            # create/update/delete -> automations
    on_transition: dict[str, list[Automation]]       # transition name -> automations (incl. its own actions)
    dated: list[Automation]                          # date-relative schedules


@dataclass
class Triggered:
    """What ``before_write`` decided, handed to ``after_write``."""

    runs: list[tuple[Automation, str]] = field(default_factory=list)    # (automation, trigger)
    transition: Transition | None = None
    stopped: str | None = None
    failed: dict[str, str] = field(default_factory=dict)    # automation -> why a before-save action failed


class WorkflowEngine(Transitions, Runs):
    def __init__(self, svc, specs: Specs, settings, runner=None, clock: Callable[[], datetime] = utcnow):
        self.svc = svc
        self.db = svc.db
        self.specs = specs
        self.settings = settings
        self.runner = runner
        self.clock = clock
        self.runs = svc.metadata.tables["_crm_automation_run"]
        self.done = svc.metadata.tables["_crm_action_done"]
        self.schedule = svc.metadata.tables["_crm_schedule"]
        self.timers = svc.metadata.tables["_crm_timer"]
        self._plans: dict[str, EntityPlan | None] = {}

    # -- what an entity needs ---------------------------------------------------------------------
    def plan(self, ent: Entity) -> EntityPlan | None:
        try:
            return self._plans[ent.name]
        except KeyError:
            pass
        wf = self.specs.workflows.get(ent.name)
        autos = self.specs.of_entity(ent.name)
        on_event: dict[str, list[Automation]] = {}
        on_transition: dict[str, list[Automation]] = {}
        for auto in autos:
            for event in auto.events:
                on_event.setdefault(event, []).append(auto)
            if auto.transition:
                on_transition.setdefault(auto.transition, []).append(auto)
        if wf is not None:
            for t in wf.transitions:
                if t.actions is not None:
                    on_transition.setdefault(t.name, []).insert(0, t.actions)
        dated = [a for a in autos if a.schedule is not None and a.schedule.field]
        plan = None
        if wf is not None or on_event or on_transition or dated:
            plan = EntityPlan(wf, on_event, on_transition, dated)
        self._plans[ent.name] = plan
        return plan

    def automation(self, name: str) -> Automation | None:
        found = self.specs.automations.get(name)
        if found is None and "." in name:
            wf = self.specs.workflows.get(name.split(".", 1)[0])
            t = wf.named(name.split(".", 1)[1]) if wf else None
            found = t.actions if t else None
        return found

    # -- formulas --------------------------------------------------------------------------------
    def evaluate(self, conn, ent: Entity, compiled, record: dict, old: dict | None, context: Context,
                 now: datetime | None = None) -> Any:
        from engine import rules

        related = None
        paths = frozenset(p for p in compiled.fields if "." in p)
        if paths:
            if conn is None:
                with self.db.read() as c:
                    related = rules.fetch_related(c, self.svc.metadata, self.svc.model, ent.name, record, paths)
            else:
                related = rules.fetch_related(conn, self.svc.metadata, self.svc.model, ent.name, record, paths)
        user = self.user(conn, context.user_id) if "user" in compiled.uses else None
        return compiled.evaluate(record, prior=old, is_new=old is None, user=user, now=now or self.clock(),
                                 related=related)

    def user(self, conn, user_id: int | None) -> dict | None:
        if user_id is None:
            return None
        ent = self.svc.model.entity(USER_ENTITY)
        try:
            if conn is None:
                with self.db.read() as c:
                    return self.svc._load(c, ent, user_id)
            return self.svc._load(conn, ent, user_id)
        except NotFound:
            return None

    def _holds(self, conn, ent, auto: Automation, record, old, context, now=None) -> bool:
        if auto.condition is None:
            return True
        from engine import rules

        try:
            return self.evaluate(conn, ent, auto.condition, record, old, context, now) is True
        except rules.RuleError as exc:
            raise ValidationFailed([FieldError(None, f"automation:{auto.name}",
                                               f"automation {auto.name}: its condition failed: {exc.message}")],
                                   ent.name) from None

    # -- the record service's steps ---------------------------------------------------------------
    def before_write(self, conn: Connection, ent: Entity, event: str, record: dict, old: dict | None,
                     context: Context, errors: list[FieldError]) -> Triggered | None:
        plan = self.plan(ent)
        if plan is None:
            return None
        out = Triggered()
        wf = plan.workflow
        if wf is not None:
            out.transition = self._check_transition(conn, ent, wf, event, record, old, context, errors)
            if errors:
                return out
        if not context.automations:
            return out
        candidates = [(a, {"create": "created", "update": "updated", "delete": "deleted"}[event])
                      for a in plan.on_event.get(event, ()) if self._changed(a, record, old)]
        if out.transition is not None:
            candidates += [(a, f"transition:{out.transition.name}") for a in plan.on_transition.get(out.transition.name, ())]
        for auto, trigger in candidates:
            if self._holds(conn, ent, auto, record, old, context):
                out.runs.append((auto, trigger))
        if not out.runs:
            return out
        if context.depth >= self.settings.automation_depth:
            chain = " -> ".join((*context.chain, *(a.name for a, _ in out.runs[:1])))
            out.stopped = (f"stopped: automations triggered each other {context.depth} levels deep "
                           f"(the limit, CRM_AUTOMATION_DEPTH, is {self.settings.automation_depth}): {chain}")
            return out
        if event == "delete":
            return out
        now = self.clock()
        for auto, trigger in out.runs:
            for step in auto.before_steps:
                act = ActionRun(self, auto, step, ent, record, old, self.writer(context, auto), conn, now=now)
                try:
                    changes = step.impl.changes(act)
                except ActionError as exc:   # nothing to do it with (no user to assign): logged, not blocking
                    out.failed[auto.name] = f"action {step.index + 1} ({step.kind}): {exc}"
                    continue
                except Exception as exc:  # noqa: BLE001 - reported on the write, which is refused
                    errors.append(FieldError(None, f"automation:{auto.name}",
                                             f"automation {auto.name}, action {step.index + 1} ({step.kind}): "
                                             f"{getattr(exc, 'message', None) or exc}"))
                    continue
                record.update(changes)
        return out

    def after_write(self, conn: Connection, ent: Entity, event: str, record: dict, old: dict | None,
                    context: Context, triggered: Triggered | None) -> None:
        plan = self.plan(ent)
        if plan is None:
            return
        now = self.clock()
        if triggered is not None and triggered.runs:
            self._queue(conn, ent, event, record, old, context, triggered, now)
        if plan.dated:
            from .scheduler import plan_record

            plan_record(self, conn, ent, plan.dated, record, event, context, now)

    def fire(self, conn: Connection, entity: str, trigger: str, record: dict, *, context: Context,
             occurrence: Any = None) -> int:
        """Fire ``trigger`` (an event a plugin declares with ``crm_automation_triggers``: ``converted``,
        ``claimed``...) on ``record`` inside the write transaction ``conn``: the automations that follow
        it and whose condition holds run after the commit, like those of a write, in the run log.
        ``occurrence`` tells two firings on one record version apart (default: the version). Returns
        how many automations were triggered."""
        ent = self.svc.model.entity(entity)
        plan = self.plan(ent)
        if plan is None or not context.automations:
            return 0
        out = Triggered()
        out.runs = [(a, trigger) for a in plan.on_event.get(trigger, ()) if self._holds(conn, ent, a, record, None, context)]
        if out.runs and context.depth >= self.settings.automation_depth:
            out.stopped = (f"stopped: automations triggered each other {context.depth} levels deep "
                           f"(the limit, CRM_AUTOMATION_DEPTH, is {self.settings.automation_depth})")
        if out.runs:
            self._queue(conn, ent, trigger, record, None, context, out, self.clock(), occurrence)
        return len(out.runs)

    def _queue(self, conn, ent: Entity, event: str, record: dict, old: dict | None, context: Context,
               triggered: Triggered, now: datetime, occurrence: Any = None) -> None:
        """Write the run rows of what ``triggered`` holds; the queued ones go to the runner after commit."""
        ids = []
        for auto, trigger in triggered.runs:
            version = (old or record).get("version") if event == "delete" else record.get("version")
            key = f"{auto.name}:{ent.name}:{record['id']}:{event}:{version if occurrence is None else occurrence}"
            error = triggered.stopped or triggered.failed.get(auto.name)
            status = "stopped" if triggered.stopped else "dead" if error else "queued" if auto.job_steps else "done"
            payload = {"chain": [*context.chain, auto.name]}
            if event == "delete":
                payload["record"] = _jsonable(ent, record)
            if status != "queued":   # a finished run needs no id: written with the others before commit
                self._finished_runs(conn).append(self._run_row(auto, ent, record["id"], trigger, key, status,
                                                               context, now, payload, error))
                continue
            rid = self._insert_run(conn, auto, ent, record["id"], trigger, key, status, context, now, payload,
                                   error=error)
            if rid is not None:
                ids.append(rid)
        if ids:
            self.db.on_commit(conn, lambda: self.submit(ids))

    def writer(self, context: Context, auto: Automation, depth: int | None = None) -> Context:
        """The context an automation's writes use: system rights, one level deeper in the chain."""
        return Context(user_id=context.user_id, system=True,
                       depth=(context.depth if depth is None else depth) + 1,
                       chain=(*context.chain, auto.name))

    @staticmethod
    def _changed(auto: Automation, record: dict, old: dict | None) -> bool:
        if not auto.changed or old is None:
            return True
        return any(record.get(f) != old.get(f) for f in auto.changed)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


def _jsonable(ent: Entity, record: dict) -> dict:
    from .actions import record_json

    return record_json(ent, record)
