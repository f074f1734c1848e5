"""Automation runs, a part of the ``WorkflowEngine``: handing runs to the runner after commit, and
``execute(run_id)``, which claims a run (so two workers never run it at once), runs the actions not
done yet (each database action commits with its "done" marker, so a retried job never repeats it)
and records the outcome: done, retrying (exponential backoff) or dead; ``rerun`` queues runs again.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from engine.metadata.model import Entity
from engine.storage.errors import NotFound, ValidationFailed
from engine.storage.records import Context

from .actions import ActionRun
from .spec import Automation

log = logging.getLogger("crm.jobs")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Runs:
    """The run log and its execution (mixed into ``WorkflowEngine``)."""

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
            self.db.before_commit(conn, lambda: self.svc.execute_many(conn, None, ("finished_runs",), self._insert,
                                                                      rows, tuple(rows[0])) if rows else None)
        return rows

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
        """The next number of a counter (round-robin turns), in this transaction. The first turn
        of a transaction increments the stored counter (which locks its row until the commit, so
        no other writer takes turns meanwhile); the next ones count in memory and the last is
        stored just before the commit: one statement per transaction, not one per record (a bulk
        import assigns thousands)."""
        cache = self.db.txn_cache(conn)
        key = ("turn", name)
        turn = cache.get(key)
        if turn is not None:
            cache[key] = turn + 1
            return turn + 1
        counters = self.svc.counters
        insert = (sa.dialects.sqlite if self.db.is_sqlite else sa.dialects.postgresql).insert(counters)
        stmt = insert.values(name=name, value=1).on_conflict_do_update(
            index_elements=["name"], set_={"value": counters.c.value + 1}).returning(counters.c.value)
        stored = cache[key] = conn.execute(stmt).scalar_one()

        def store() -> None:   # (nothing when a savepoint rolled the turns back: the cache is empty then)
            last = cache.get(key)
            if last is not None and last > stored:
                conn.execute(counters.update().where(counters.c.name == name).values(value=last))
        self.db.before_commit(conn, store)
        return stored

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


class _Dead(Exception):
    """A run that can never succeed (its automation or record is gone): dead at once."""
