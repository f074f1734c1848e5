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
   process, or rq workers), which calls ``execute(run_id)``.

``execute`` claims the run (so two workers never run it at once), runs the actions not done yet
(each database action commits together with its "done" marker, so a retried job never repeats
it), and records the outcome: done, retrying (exponential backoff) or dead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.metadata.model import Entity
from engine.storage.errors import FieldError, NotFound, ValidationFailed
from engine.storage.records import Context
from engine.storage.tables import USER_ENTITY

from .actions import ActionError, ActionRun
from .spec import Automation, Specs, Transition, Workflow

log = logging.getLogger("crm.jobs")
ADMIN_ROLE = "admin"
#: Run states. queued -> running -> done | retrying -> ... -> dead; stopped: refused (depth limit).
STATUSES = ("queued", "running", "retrying", "done", "dead", "stopped")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


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


class WorkflowEngine:
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

    def _run_row(self, auto: Automation, ent: Entity, record_id, trigger: str, key: str, status: str,
                 context: Context, now: datetime, payload: dict, error: str | None = None,
                 depth: int | None = None) -> dict:
        return dict(key=key[:255], automation=auto.name, entity=ent.name, record_id=record_id, trigger=trigger[:120],
                    status=status, attempts=0, max_attempts=auto.retries + 1,
                    depth=context.depth if depth is None else depth, user_id=context.user_id, payload=payload,
                    error=error, created_at=now, due_at=now,
                    finished_at=now if status in ("done", "stopped", "dead") else None,
                    duration_ms=0 if status == "done" else None)

    def _insert_run(self, conn, *args, **kwargs) -> int | None:
        """Insert a run (None when a run with its key exists: that event was handled already)."""
        stmt = self._insert().values(**self._run_row(*args, **kwargs)).returning(self.runs.c.id)
        return conn.execute(stmt).scalar()

    def _insert(self):
        dialect = sa.dialects.sqlite if self.db.is_sqlite else sa.dialects.postgresql
        return dialect.insert(self.runs).on_conflict_do_nothing(index_elements=["key"])

    def _finished_runs(self, conn) -> list[dict]:
        """Runs of this transaction that finished inside it (before-save only, refused, stopped):
        inserted in one statement just before the commit (a bulk write makes thousands)."""
        cache = self.db.txn_cache(conn)
        rows = cache.get("finished_runs")
        if rows is None:
            rows = cache["finished_runs"] = []
            self.db.before_commit(conn, lambda: conn.execute(self._insert(), rows) if rows else None)
        return rows

    # -- transitions -------------------------------------------------------------------------------
    def _check_transition(self, conn, ent, wf: Workflow, event, record, old, context, errors) -> Transition | None:
        state_field = wf.field
        if event == "create":
            value = record.get(state_field)
            if wf.initial is not None and not context.system and value not in wf.initial:
                errors.append(FieldError(state_field, "transition",
                                         f"a new {ent.name} starts in {', '.join(sorted(wf.initial))}, not {value!r}"))
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
                                                                                   f"{t.name} cannot be taken from {before!r}")))
                return None
            problem = self._may_take(conn, ent, t, record, old, context)
            if problem:
                errors.append(FieldError(state_field, "transition", f"{t.name}: {problem}"))
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
                message = f"{state_field} cannot change from {before!r} to {after!r}" + (f" ({reason})" if reason else "")
                errors.append(FieldError(state_field, "transition", self._refusal(conn, ent, wf, record, old, context, message)))
                return None
            t = usable[0]
        for name in t.requires:
            value = record.get(name)
            if value is None or value == "" or value == []:
                errors.append(FieldError(name, "required", f"is required to {t.name}"))
        return t

    def _refusal(self, conn, ent, wf, record, old, context, message: str) -> str:
        allowed = self.available(conn, ent, old, context, wf=wf)
        names = ", ".join(f"{t.name} (to {t.target})" for t in allowed) or "none"
        return f"{message}; allowed now: {names}"

    def _may_take(self, conn, ent, t: Transition, record, old, context) -> str | None:
        """Why the writer may not take ``t`` now (None when they may)."""
        if t.roles is not None and not context.system:
            user = self.user(conn, context.user_id)
            role = (user or {}).get("role")
            if role != ADMIN_ROLE and role not in t.roles:
                return f"only {', '.join(sorted(t.roles))} may {t.name}"
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

    # -- jobs ----------------------------------------------------------------------------------------
    def submit(self, run_ids: list[int], delay: float = 0.0) -> None:
        """Hand runs to the runner. It runs after their rows committed (the outbox), so a hand-off
        that fails (Redis unreachable) must not fail the write that made them: it is logged, the
        runs stay queued or retrying, and the scheduler's next pass hands them over again."""
        if self.runner is None or not run_ids:
            return
        try:
            self.runner.submit(list(run_ids), delay)
        except Exception as exc:  # noqa: BLE001 - any runner failure: the outbox row still holds the run
            log.warning("could not hand runs %s to the job runner (%s); they stay in the outbox and the "
                        "scheduler's next pass hands them over again", run_ids, exc)

    def next_turn(self, conn, name: str) -> int:
        """The next number of a counter (round-robin turns), in this transaction."""
        counters = self.svc.counters
        insert = (sa.dialects.sqlite if self.db.is_sqlite else sa.dialects.postgresql).insert(counters)
        stmt = insert.values(name=name, value=1).on_conflict_do_update(
            index_elements=["name"], set_={"value": counters.c.value + 1}).returning(counters.c.value)
        return conn.execute(stmt).scalar_one()

    def execute(self, run_id: int) -> str | None:
        """Run one automation run (claimed first); returns its new status, or None if not claimed."""
        runs = self.runs
        now = utcnow()
        claimable = sa.or_(runs.c.status == "queued",
                           sa.and_(runs.c.status == "retrying", runs.c.due_at <= now),
                           sa.and_(runs.c.status == "running", runs.c.lease_until < now))
        started = time.perf_counter()
        step = auto = record = None
        with self.db.write() as conn:   # one transaction: claim, read the run, what it did, its record
            claimed = conn.execute(runs.update().where(runs.c.id == run_id, claimable).values(
                status="running", attempts=runs.c.attempts + 1, started_at=now,
                lease_until=now + timedelta(seconds=self.settings.job_lease))).rowcount
            if claimed != 1:   # taken, finished, or a retry handed over before its time (waits for it)
                early = conn.execute(sa.select(runs.c.due_at).where(
                    runs.c.id == run_id, runs.c.status == "retrying")).scalar()
                if early is not None:
                    self.db.on_commit(conn, lambda: self._resubmit_early(run_id, early, now))
                return None
            run = dict(conn.execute(sa.select(runs).where(runs.c.id == run_id)).one()._mapping)
            done = {row.action for row in conn.execute(sa.select(self.done.c.action).where(self.done.c.run_id == run_id))}
            auto = self.automation(run["automation"])
            ent = self.svc.model.entities.get(run["entity"])
            if auto is not None and ent is not None:
                record = self._record_of(conn, ent, run)
        try:
            if auto is None or ent is None:
                raise _Dead(f"automation {run['automation']!r} no longer exists in the metadata")
            if record is None:
                raise _Dead(f"{ent.name} {run['record_id']} no longer exists")
            context = self._job_context(auto, run)
            pending = [s for s in auto.job_steps if s.index not in done]
            if not pending:
                return self._finish(run_id, "done", None, started)
            for n, step in enumerate(pending):
                last = n == len(pending) - 1
                act = ActionRun(self, auto, step, ent, record, None, context, None, run_id=run_id, key=run["key"],
                                attempt=run["attempts"], deleted="record" in (run["payload"] or {}))
                result = step.impl.run(act) if step.impl.external else None
                with self.db.write() as conn:   # the action's writes, its done marker (and the outcome) together
                    if not step.impl.external:
                        act.conn = conn
                        result = step.impl.run(act)
                    self._mark_done(conn, run_id, step.index, result)
                    if last:
                        self._finish(run_id, "done", None, started, conn=conn)
            return "done"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run, none is lost
            where = f"action {step.index + 1} ({step.kind}): " if step is not None else ""
            message = f"{where}{getattr(exc, 'message', None) or exc}"
            if isinstance(exc, ValidationFailed):
                message = where + "; ".join(f"{e.field or exc.entity}: {e.message}" for e in exc.errors)
            if isinstance(exc, _Dead) or run["attempts"] >= run["max_attempts"]:
                return self._finish(run_id, "dead", message, started)
            delay = self.settings.job_backoff * (2 ** (run["attempts"] - 1))
            self._finish(run_id, "retrying", message, started, due=utcnow() + timedelta(seconds=delay))
            self.submit([run_id], delay)
            return "retrying"

    def _resubmit_early(self, run_id: int, due: datetime, now: datetime) -> None:
        """rq scores scheduled jobs in whole seconds, so a retry may arrive up to a second before its
        ``due_at`` (or a worker's clock may run ahead): hand it over again for the time left."""
        due = due if due.tzinfo else due.replace(tzinfo=timezone.utc)
        self.submit([run_id], max((due - now).total_seconds(), 0.001))

    def _job_context(self, auto: Automation, run: dict) -> Context:
        """Whose rights a job writes with: the user whose write started it (their roles, scopes and
        field permissions, as on their own write), or the engine's for ``run_as: system`` and for
        time triggers (no user)."""
        chain = tuple((run["payload"] or {}).get("chain") or (auto.name,))
        depth = run["depth"] + 1
        if auto.run_as == "system" or run["user_id"] is None:
            return Context(user_id=run["user_id"], system=True, depth=depth, chain=chain)
        from engine.security.permissions import access_for

        user = self.user(None, run["user_id"])
        if user is None or user.get("active") is False:
            raise _Dead(f"the user {run['user_id']} who started this run no longer exists or is disabled; "
                        f"declare run_as: system to run it with the engine's rights")
        return Context(user_id=run["user_id"], depth=depth, chain=chain,
                       access=access_for(self.svc, run["user_id"], user.get("role") or ""))

    def _record_of(self, conn, ent: Entity, run: dict) -> dict | None:
        """The record as it is now, or as it was deleted (kept in the run); None if it is gone."""
        payload = run["payload"] or {}
        if run["record_id"] is not None and "record" not in payload:
            try:
                return self.svc.get(ent.name, run["record_id"], conn=conn)
            except NotFound:
                return None
        out = {}
        for key, value in (payload.get("record") or {}).items():
            fld = ent.fields.get(key)
            out[key] = fld.coerce(value) if fld is not None and value is not None else value
        return out

    def _mark_done(self, conn, run_id: int, index: int, result: Any) -> None:
        conn.execute(self.done.insert().values(run_id=run_id, action=index, result=result, done_at=utcnow()))

    def _finish(self, run_id: int, status: str, error: str | None, started: float, due: datetime | None = None,
                conn=None) -> str:
        values = {"status": status, "error": error, "duration_ms": int((time.perf_counter() - started) * 1000),
                  "lease_until": None}
        if status in ("done", "dead"):
            values["finished_at"] = utcnow()
        if due is not None:
            values["due_at"] = due
        with self.db.write(conn) as conn:
            conn.execute(self.runs.update().where(self.runs.c.id == run_id).values(**values))
        return status

    def rerun(self, run_ids: list[int] | None = None, *, dead: bool = False) -> list[int]:
        """Queue runs again from their first action not done, attempts reset: those named (dead, or
        retrying: run now rather than wait for the backoff), or with ``dead`` every dead run (a run still
        retrying is left to its backoff)."""
        runs = self.runs
        with self.db.write() as conn:
            stmt = sa.select(runs.c.id).where(runs.c.status.in_(("dead", "retrying") if run_ids else ("dead",)))
            if run_ids:
                stmt = stmt.where(runs.c.id.in_(run_ids))
            elif not dead:
                return []
            ids = list(conn.execute(stmt).scalars())
            if ids:
                conn.execute(runs.update().where(runs.c.id.in_(ids)).values(
                    status="queued", attempts=0, due_at=utcnow(), finished_at=None))
        self.submit(ids)
        return ids

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


class _Dead(Exception):
    """A run that can never succeed (its automation or record is gone): dead at once."""


def _jsonable(ent: Entity, record: dict) -> dict:
    from .actions import record_json

    return record_json(ent, record)


def attach(svc, settings, pm=None, functions=None, runner=None) -> WorkflowEngine | None:
    """Compile the model's workflows and automations and attach the engine to the record service's hooks."""
    from .actions import actions_from_plugins, default_actions
    from .spec import compile_specs

    actions = actions_from_plugins(pm) if pm is not None else default_actions()
    specs, problems = compile_specs(svc.model, functions, actions)
    if problems:  # the loader reported these with file:line already; this is a programming error
        raise RuntimeError(f"workflow metadata has problems: {problems[0]}")
    engine = WorkflowEngine(svc, specs, settings, runner)
    from .lifecycle import WorkflowWrites

    svc.hooks.pm.register(WorkflowWrites(engine), name="workflow.writes")
    return engine
