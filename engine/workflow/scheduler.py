"""Time triggers: date-relative schedules planned per record, cron schedules, and the sweep.

A date-relative automation ("3 days before close_date") is planned when a record is saved: its
fire time goes into ``_crm_schedule`` (indexed by fire time), moved when the date changes, dropped
when the record no longer matches or is deleted. ``tick(now)`` then reads only what is due; a
run's key is (automation, record, fire time), so the same date never fires twice, and a
scheduler that was down fires what it missed on its next tick. ``tick`` also fires cron
automations (once for any number of missed slots) and hands back to the runner the runs whose
worker died (lease expired) or whose hand-off was lost.

It is one job of the platform scheduler (engine/jobs.py), contributed by ``workflow.commands``:
``replan`` before its first pass, ``tick`` on each.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import sqlalchemy as sa

from engine.storage.records import Context

if TYPE_CHECKING:
    from .engine import WorkflowEngine
    from .spec import Automation

BATCH = 500
#: A queued run not picked up this long after it was due is handed to the runner again.
GRACE = timedelta(seconds=60)


def fire_key(auto: "Automation", entity: str, record_id: int, when: datetime) -> str:
    return f"{auto.name}:{entity}:{record_id}:at:{when.astimezone(timezone.utc).isoformat()}"


def plan_record(engine: "WorkflowEngine", conn, ent, dated: list["Automation"], record: dict, event: str,
                context: Context, now: datetime, *, only_future: bool = False) -> int:
    """Plan, move or drop the date-relative schedules of one record; returns how many are planned."""
    sched, runs = engine.schedule, engine.runs
    rid = record["id"]
    planned = 0
    for auto in dated:
        when = None
        if event != "delete":
            when = auto.schedule.fire_at(record.get(auto.schedule.field))
            if when is not None and only_future and when <= now:
                if _due_row(conn, sched, auto, rid, now):
                    continue   # planned by a write and due while no scheduler ran: it fires, see replan
                when = None
            if when is not None and not engine._holds(conn, ent, auto, record, None, context, now):
                when = None
            if when is not None:
                key = fire_key(auto, ent.name, rid, when)
                if conn.execute(sa.select(runs.c.id).where(runs.c.key == key)).first() is not None:
                    when = None   # this (automation, record, date) has fired already
        conn.execute(sched.delete().where(sched.c.automation == auto.name, sched.c.record_id == rid))
        if when is not None:
            conn.execute(sched.insert().values(automation=auto.name, record_id=rid, fire_at=when))
            planned += 1
    return planned


def _due_row(conn, sched, auto: "Automation", record_id: int, now: datetime) -> bool:
    return conn.execute(sa.select(sched.c.record_id).where(
        sched.c.automation == auto.name, sched.c.record_id == record_id, sched.c.fire_at <= now)).first() is not None


class Scheduler:
    def __init__(self, engine: "WorkflowEngine"):
        self.engine = engine

    # -- one pass ----------------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> dict[str, int]:
        """Fire what is due at ``now`` (default: the clock), then hand lost runs back to the runner."""
        now = now or self.engine.clock()
        return {"scheduled": self.fire_due(now), "cron": self.fire_cron(now), "reclaimed": self.reclaim(now)}

    def fire_due(self, now: datetime) -> int:
        engine, sched = self.engine, self.engine.schedule
        fired = 0
        while True:
            ids: list[int] = []
            with engine.db.write() as conn:
                due = conn.execute(sa.select(sched).where(sched.c.fire_at <= now)
                                   .order_by(sched.c.fire_at).limit(BATCH)).all()
                if not due:
                    return fired
                for row in due:
                    rid = self._fire_one(conn, row, now)
                    if rid is not None:
                        ids.append(rid)
                    conn.execute(sched.delete().where(sched.c.automation == row.automation,
                                                      sched.c.record_id == row.record_id))
                fired += len(ids)
                engine.db.on_commit(conn, lambda ids=ids: engine.submit(ids))

    def _fire_one(self, conn, row, now: datetime) -> int | None:
        from engine.storage.errors import NotFound

        engine = self.engine
        auto = engine.automation(row.automation)
        if auto is None or not auto.active:
            return None
        ent = engine.svc.model.entity(auto.entity)
        try:
            record = engine.svc._load(conn, ent, row.record_id)
        except NotFound:
            return None
        context = Context(system=True)
        if not engine._holds(conn, ent, auto, record, None, context, now):
            return None
        when = row.fire_at if row.fire_at.tzinfo else row.fire_at.replace(tzinfo=timezone.utc)
        return engine._insert_run(conn, auto, ent, row.record_id, f"schedule:{auto.schedule.field}",
                                  fire_key(auto, ent.name, row.record_id, when), "queued", context, now,
                                  {"chain": [auto.name]}, depth=0)

    def fire_cron(self, now: datetime) -> int:
        from cronsim import CronSim

        engine, timers = self.engine, self.engine.timers
        fired = 0
        for auto in engine.specs.automations.values():
            if not auto.active or auto.schedule is None or not auto.schedule.cron:
                continue
            name = f"cron:{auto.name}"
            ids: list[int] = []
            with engine.db.write() as conn:
                row = conn.execute(sa.select(timers).where(timers.c.name == name)).first()
                upcoming = next(CronSim(auto.schedule.cron, now))
                if row is None or row.signature != auto.schedule.cron:
                    conn.execute(timers.delete().where(timers.c.name == name))
                    conn.execute(timers.insert().values(name=name, signature=auto.schedule.cron, next_at=upcoming))
                    continue
                slot = row.next_at if row.next_at.tzinfo else row.next_at.replace(tzinfo=timezone.utc)
                if slot > now:
                    continue
                ids = self._fire_cron(conn, auto, slot, now)
                conn.execute(timers.update().where(timers.c.name == name).values(next_at=upcoming))
                engine.db.on_commit(conn, lambda ids=ids: engine.submit(ids))
            fired += len(ids)
        return fired

    def _fire_cron(self, conn, auto: "Automation", slot: datetime, now: datetime) -> list[int]:
        from engine import rules

        engine = self.engine
        ent = engine.svc.model.entity(auto.entity)
        table = engine.svc.table(ent.name)
        stmt = sa.select(table.c.id).order_by(table.c.id)
        if auto.condition is not None:
            scope = rules.Scope(engine.svc.metadata, ent.name, engine.svc.model, dialect=engine.db.dialect, now=now)
            stmt = scope.apply(stmt.where(auto.condition.where(scope)))
        context = Context(system=True)
        ids = []
        for rid in conn.execute(stmt).scalars().all():
            made = engine._insert_run(conn, auto, ent, rid, "schedule:cron",
                                      f"{auto.name}:{ent.name}:{rid}:cron:{slot.isoformat()}", "queued", context,
                                      now, {"chain": [auto.name]}, depth=0)
            if made is not None:
                ids.append(made)
        return ids

    def reclaim(self, now: datetime) -> int:
        """Runs whose worker died (lease over) are queued again; queued or retrying runs whose hand-off
        to the runner was lost (still waiting well after they were due) are handed over again."""
        engine, runs = self.engine, self.engine.runs
        with engine.db.write() as conn:
            dead_workers = list(conn.execute(sa.select(runs.c.id).where(
                runs.c.status == "running", runs.c.lease_until < now)).scalars())
            if dead_workers:
                conn.execute(runs.update().where(runs.c.id.in_(dead_workers), runs.c.status == "running")
                             .values(status="queued", lease_until=None))
            waiting = list(conn.execute(sa.select(runs.c.id).where(
                runs.c.status.in_(("queued", "retrying")), runs.c.due_at < now - GRACE)).scalars())
        ids = sorted(set(dead_workers) | set(waiting))
        engine.submit(ids)
        return len(ids)

    # -- planning for records saved before an automation existed -----------------------------------
    def replan(self, now: datetime | None = None) -> dict[str, int]:
        """Plan the future fire times of date-relative automations that are new or changed since the
        last pass (records saved before them have no schedule yet). A past fire time is skipped for a
        record that has none planned (adding a rule does not fire for every past date); one that a
        write planned and that fell due before any scheduler ran is kept and fires on this pass,
        like any missed fire time."""
        engine, timers = self.engine, self.engine.timers
        now = now or engine.clock()
        out = {}
        for auto in engine.specs.automations.values():
            if not auto.active or auto.schedule is None or not auto.schedule.field:
                continue
            name = f"plan:{auto.name}"
            signature = _signature(auto)
            with engine.db.read() as conn:
                row = conn.execute(sa.select(timers.c.signature).where(timers.c.name == name)).first()
            if row is not None and row.signature == signature:
                continue
            out[auto.name] = self._replan(auto, now)
            with engine.db.write() as conn:
                conn.execute(timers.delete().where(timers.c.name == name))
                conn.execute(timers.insert().values(name=name, signature=signature, next_at=None))
        return out

    def _replan(self, auto: "Automation", now: datetime) -> int:
        engine = self.engine
        ent = engine.svc.model.entity(auto.entity)
        table = engine.svc.table(ent.name)
        planned, last = 0, 0
        context = Context(system=True)
        while True:
            with engine.db.write() as conn:
                rows = conn.execute(sa.select(table).where(table.c.id > last).order_by(table.c.id).limit(BATCH)).all()
                if not rows:
                    return planned
                for row in rows:
                    planned += plan_record(engine, conn, ent, [auto], dict(row._mapping), "update", context, now,
                                           only_future=True)
                last = rows[-1].id


def _signature(auto: "Automation") -> str:
    s = auto.schedule
    text = f"{s.field}|{s.offset.total_seconds()}|{s.at}|{auto.condition.expression if auto.condition else ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]
