"""Recycling: records go back to their pool when their owner does not follow them up, as one job of
the platform scheduler (``pools.recycle``, contributed through ``crm_scheduled_jobs``).

Each hold carries the time its record is due back and the time its owner is warned, computed when it
was claimed (``service.due_of``). A pass reads only the holds that are due or to be warned (both
indexed), a batch at a time, never the records of the pool; for each it reads the record again:

* the owner changed meanwhile (reassigned by hand, deleted): the hold is dropped;
* ``since`` moved (a follow-up since), or an ``unless`` condition holds: re-planned, not recycled;
* still due: recycled (owner cleared through the record service's bulk path, with the owner's field
  history, the audit log, the pool's event and the ``recycled`` trigger), the hold dropped;
* to warn: a notification to the owner (a ``notification`` record), the hold marked warned.

A pass that did something for a pool is a run in the automation run log (``pool:<pool>``, trigger
``recycle``, its counts in the payload).

``now`` is a parameter everywhere, so tests and benches drive the clock.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import sqlalchemy as sa

from engine.security.profile import wants
from engine.storage.records import Context

from .service import PoolService, due_of
from .spec import Pool

BATCH = 1000
COUNTS = ("recycled", "warned", "replanned", "dropped", "failed")
RETRY = timedelta(days=1)   # a record the record service refused to change is tried again a day later


def recycle(service: PoolService, now: datetime | None = None, *, batch: int = BATCH) -> dict[str, int]:
    """One pass over every pool: counts of recycled, warned, replanned, dropped and failed holds."""
    now = now or service.clock()
    counts = dict.fromkeys(COUNTS, 0)
    for pool in service.pools.values():
        if not pool.recycle:
            continue
        started, mine = time.monotonic(), dict.fromkeys(COUNTS, 0)
        while _batch(service, pool, now, batch, mine, warn=False):
            pass
        if pool.warn_days:
            while _batch(service, pool, now, batch, mine, warn=True):
                pass
        if any(mine.values()):
            _log_run(service, pool, now, mine, started)
        counts = {k: counts[k] + mine[k] for k in COUNTS}
    return counts


def _log_run(service: PoolService, pool: Pool, now: datetime, counts: dict, started: float) -> None:
    """A pass that did something is a run in the automation run log (``pool:<name>``, trigger ``recycle``)."""
    runs = service.records.metadata.tables["_crm_automation_run"]
    error = f"{counts['failed']} record(s) refused by the record service, tried again in a day" if counts["failed"] else None
    with service.db.write() as conn:
        conn.execute(runs.insert().values(
            key=f"pool:{pool.name}:recycle:{now.isoformat()}:{time.time_ns()}"[:255], automation=f"pool:{pool.name}",
            entity=pool.entity, record_id=None, trigger="recycle", status="done", attempts=1, max_attempts=1, depth=0,
            user_id=None, payload={"counts": counts}, error=error, created_at=now, due_at=now, started_at=now,
            finished_at=now, duration_ms=int((time.monotonic() - started) * 1000)))


def _batch(service: PoolService, pool: Pool, now: datetime, batch: int, counts: dict, *, warn: bool) -> bool:
    """One batch in one write transaction; False when nothing was left to do."""
    h = service.holds
    if warn:
        due = sa.and_(h.c.warn_at <= now, sa.not_(h.c.warned), h.c.due_at > now)
        order = h.c.warn_at
    else:
        due, order = h.c.due_at <= now, h.c.due_at
    with service.db.write() as conn:
        holds = conn.execute(sa.select(h).where(h.c.pool == pool.name, due).order_by(order).limit(batch)).all()
        if not holds:
            return False
        current = _records(service, conn, pool, [x.record_id for x in holds], now)
        going, warning, plans, gone = [], [], [], []
        for hold in holds:
            found = current.get(hold.record_id)
            if found is None or found[0]["owner_id"] != hold.user_id:
                gone.append(hold.record_id)
                continue
            record, holding = found
            due_at, warn_at = due_of(pool, record, hold.claimed_at, now, holding)
            if due_at is not None and due_at <= now:
                going.append((hold, record))
            elif warn and warn_at is not None and warn_at <= now:
                warning.append((hold, record, due_at))
            else:
                plans.append({"r": hold.record_id, "due": due_at, "warn": warn_at,
                              "warned": bool(hold.warned) and warn_at is not None and warn_at <= now})
        failed = _recycle(service, conn, pool, going, now) if going else []
        plans += [{"r": rid, "due": now + RETRY, "warn": None, "warned": True} for rid in failed]
        _warn(service, conn, pool, warning, now)
        if plans:
            conn.execute(h.update().where(h.c.pool == pool.name, h.c.record_id == sa.bindparam("r"))
                         .values(due_at=sa.bindparam("due"), warn_at=sa.bindparam("warn"), warned=sa.bindparam("warned")),
                         plans)
        if gone:
            conn.execute(h.delete().where(h.c.pool == pool.name, h.c.record_id.in_(gone)))
    counts["recycled"] += len(going) - len(failed)
    counts["failed"] += len(failed)
    counts["warned"] += len(warning)
    counts["replanned"] += len(plans) - len(failed)
    counts["dropped"] += len(gone)
    return True


def _records(service: PoolService, conn, pool: Pool, ids: list[int], now: datetime) -> dict[int, tuple[dict, set]]:
    """The records of ``ids`` (locked on PostgreSQL) with the indexes of the rules whose ``unless`` holds."""
    from engine import rules

    svc = service.records
    table = svc.table(pool.entity)
    scope = rules.Scope(svc.metadata, pool.entity, svc.model, dialect=service.db.dialect, now=now, table=table)
    unless = [(i, rule.unless.where(scope).label(f"_unless_{i}")) for i, rule in enumerate(pool.recycle)
              if rule.unless is not None]
    stmt = scope.apply(sa.select(table, *(c for _, c in unless)).where(table.c.id.in_(ids)))
    if not service.db.is_sqlite:
        stmt = stmt.with_for_update(of=table)
    out = {}
    for row in conn.execute(stmt).mappings():
        data = dict(row)
        holding = {i for i, _ in unless if data.pop(f"_unless_{i}")}
        out[data["id"]] = (data, holding)
    return out


def _recycle(service: PoolService, conn, pool: Pool, going: list, now: datetime) -> list[int]:
    """Clear the owners of ``going`` through the record service's bulk path; the ids it refused."""
    result = service.records.bulk(pool.entity, [{"id": hold.record_id, "owner_id": None} for hold, _ in going],
                                  mode="update", atomic=False, context=Context(system=True), conn=conn)
    failed = [going[item["index"]][0].record_id for item in result.items if item["status"] == "error"]
    refused = set(failed)
    done = [(hold, record) for hold, record in going if hold.record_id not in refused]
    changes = [({**record, "owner_id": None, "version": record["version"] + 1}, hold.user_id, None)
               for hold, record in done]
    service.record_actions(conn, pool, "recycle", changes, None, now)
    if done:
        h = service.holds
        conn.execute(h.delete().where(h.c.pool == pool.name, h.c.record_id.in_([hold.record_id for hold, _ in done])))
    return failed


def _warn(service: PoolService, conn, pool: Pool, warning: list, now: datetime) -> None:
    """A notification to each owner whose record goes back soon; the holds marked warned."""
    if not warning:
        return
    ent = service.records.model.entity(pool.entity)
    for hold, record, due_at in warning:
        title = record.get(ent.title) if ent.title else None
        name = f"{ent.label} {title}" if title not in (None, "") else f"{ent.label} #{record['id']}"
        message = (f"{name} goes back to the {pool.label} on {due_at:%Y-%m-%d} unless you follow it up "
                   f"({pool.label.get('zh')}: {due_at:%Y-%m-%d} 前未跟进将被收回)")
        if not wants(service.records, hold.user_id, "pool", "in_app"):
            continue   # turned off on the user's profile (home still lists the record)
        service.records.create("notification", {"user": hold.user_id, "message": message[:1000],
                                                "record": f"{ent.name}:{record['id']}", "automation": f"pool:{pool.name}",
                                                "owner_id": hold.user_id},
                               context=Context(system=True, automations=False), conn=conn)
    h = service.holds
    conn.execute(h.update().where(h.c.pool == pool.name, h.c.record_id.in_([x[0].record_id for x in warning]))
                 .values(warned=True))
