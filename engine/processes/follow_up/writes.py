"""The follow-up signals' part of every write, attached to the record service through its
lifecycle hooks (``FollowUpWrites`` is registered per runtime as ``"follow_up.writes"``).

* Before a followed record is written: on create, and on an update that changes ``owner_id`` (a
  claim, an assignment, a return to a pool), ``owner_since`` and ``owner_touched`` become now, in
  the same update.
* After a write, the records whose signals it may change are noted in the transaction: the old and
  the new records an activity points at (create, update of a field the signals read, re-parenting,
  delete), the records a ``via`` lookup moved between (a contact moving to another account), a
  record whose owner changed. Just before the transaction commits they are recomputed at once
  (``signals.refresh``, aggregate SQL per target and 500 records), so a bulk write of 2000
  activities costs a few statements, not one per activity.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from engine.plugins import hookimpl

from .signals import refresh
from .spec import FollowUp

#: The write transaction's note of records to recompute: {entity: {ids}}.
PENDING = "follow_up.pending"


class FollowUpWrites:
    """Hook implementations keeping the signals of ``specs`` with the record service ``svc``."""

    def __init__(self, svc: Any, specs: dict[str, FollowUp], clock: Callable[[], datetime] | None = None):
        self.svc = svc
        self.specs = tuple(specs.values())
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.activities = {s.entity for s in self.specs}
        self.followed = {e for s in self.specs for e in (*s.targets, *s.via)}

    @hookimpl
    def crm_watches_writes(self, entity: Any) -> bool:
        return entity.name in self.activities or entity.name in self.followed

    @hookimpl
    def crm_before_write(self, event: str, entity: Any, record: dict, old: dict | None) -> None:
        if event == "delete" or (event == "update" and record.get("owner_id") == old.get("owner_id")):
            return
        now = self.clock()
        for spec in self.specs:
            target = spec.targets.get(entity.name)
            if target is None or target.owner_since is None:
                continue
            if event == "create":   # a value a system write (an import) brings is kept
                record[target.owner_since] = record.get(target.owner_since) or now
                if target.owner_touched:
                    record[target.owner_touched] = record.get(target.owner_touched) or record[target.owner_since]
            else:
                record[target.owner_since] = now
                if target.owner_touched:
                    record[target.owner_touched] = now

    @hookimpl
    def crm_after_write(self, event: str, entity: Any, record: dict, old: dict | None, conn: Any) -> None:
        marks: dict[str, set] = {}
        for spec in self.specs:
            if entity.name == spec.entity:
                self._activity(spec, event, record, old, marks)
            if spec.followed(entity.name):
                self._followed(spec, entity.name, event, record, old, marks)
        if marks:
            self._note(conn, marks)

    # -- what a write changes -----------------------------------------------------------------
    @staticmethod
    def _activity(spec: FollowUp, event: str, record: dict, old: dict | None, marks: dict) -> None:
        if event == "update" and all(record.get(f) == old.get(f) for f in spec.reads):
            return
        for rec in (old, record):
            for link in spec.links if rec is not None else ():
                entity, rid = _pointed(rec.get(link), link, spec)
                if entity is not None and spec.followed(entity):
                    marks.setdefault(entity, set()).add(rid)

    @staticmethod
    def _followed(spec: FollowUp, entity: str, event: str, record: dict, old: dict | None, marks: dict) -> None:
        if event == "create":
            return
        target = spec.targets.get(entity)
        if event == "update" and target is not None and target.owner_touched and \
                record.get("owner_id") != old.get("owner_id"):
            marks.setdefault(entity, set()).add(record["id"])
        for lookup, parent in spec.via.get(entity, ()):
            if event == "delete" or record.get(lookup) != old.get(lookup):
                marks.setdefault(parent, set()).update(v for v in (old.get(lookup), record.get(lookup)) if v)

    def _note(self, conn, marks: dict[str, set]) -> None:
        cache = self.svc.db.txn_cache(conn)
        pending = cache.get(PENDING)
        if pending is None:
            pending = cache[PENDING] = {}
            self.svc.db.before_commit(conn, lambda: self.flush(conn, pending))
        for entity, ids in marks.items():
            pending.setdefault(entity, set()).update(ids)

    # -- recomputing --------------------------------------------------------------------------
    def flush(self, conn, pending: dict[str, set]) -> dict[str, int]:
        """Recompute every noted record (the records of ``via`` entities count for the records their
        lookups point at now); returns how many changed per target entity."""
        changed: dict[str, int] = {}
        for spec in self.specs:
            wanted = {name: set(pending.get(name, ())) for name in spec.targets}
            for entity, pairs in spec.via.items():
                ids = pending.get(entity)
                if ids:
                    for lookup, parent in pairs:
                        wanted[parent].update(_lookups(self.svc, conn, entity, lookup, ids))
            for name in _children_first(spec):
                ids = wanted[name]
                if ids:
                    changed[name] = changed.get(name, 0) + refresh(self.svc, conn, spec, name, ids)
        pending.clear()
        return changed


def _children_first(spec: FollowUp) -> list[str]:
    """The targets in the order their rows are locked: a record before the records its ``via``
    lookups point at (a deal before its account), the order in which the record service locks a
    record and then its rollup parents. Locking an account first while a deal's own update waits
    for it deadlocked on PostgreSQL (a task created for the deal in the background while the deal was won)."""
    def depth(name: str, seen: frozenset = frozenset()) -> int:
        parents = [p for _, p in spec.via.get(name, ()) if p not in seen]
        return 1 + max((depth(p, seen | {name}) for p in parents), default=0)
    return sorted(spec.targets, key=lambda name: -depth(name))


def _pointed(value: Any, link: str, spec: FollowUp) -> tuple[str | None, int | None]:
    """(entity, id) a link value points at: a reference carries its entity, a lookup its field's target."""
    if value is None:
        return None, None
    if hasattr(value, "entity"):
        return value.entity, value.id
    for name, sources in spec.sources.items():
        for source in sources:
            if source.link == link and not source.reference:
                return source.through or name, value
    return None, None


def _lookups(svc, conn, entity: str, lookup: str, ids: set) -> set:
    """The values of ``entity.lookup`` on these records (the parents they count for)."""
    import sqlalchemy as sa

    table = svc.table(entity)
    out: set = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), 1000):
        stmt = sa.select(table.c[lookup]).where(table.c.id.in_(ordered[start:start + 1000]),
                                                table.c[lookup].isnot(None))
        out.update(conn.execute(stmt).scalars())
    return out
