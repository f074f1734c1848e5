"""The pools at work: claim, assign, return, per-user limits and what a user may still claim.

Every owner change goes through the record service (in one write transaction with the pool's own
rows: the hold, the event, the owner's field history and the audit row) and fires the automation
trigger of the action (``claimed``, ``assigned``, ``returned``) when the workflow is there.

Race-free claims: the claiming user's (pool, user) is locked first (a PostgreSQL advisory lock for
the transaction; on SQLite every write transaction begins IMMEDIATE, so writes run one at a time),
then owned-from-pool and claimed-today are counted in SQL, then each record is taken only if its
owner is still empty (``SELECT ... FOR UPDATE`` with ``owner_id IS NULL``: of two users claiming one
record, the second finds it owned and is told "already claimed"). A request is all or nothing.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable

import sqlalchemy as sa

from engine.messages import Msg
from engine.storage.errors import Refused
from engine.storage.records import Context
from engine.storage.tables import USER_ENTITY

from .spec import Limits, Pool

#: Automation triggers of the pools, by action.
TRIGGERS = {"claim": "claimed", "assign": "assigned", "return": "returned", "recycle": "recycled"}
AUDIT_KINDS = {"claim": "pool_claimed", "assign": "pool_assigned", "return": "pool_returned", "recycle": "pool_recycled"}
MAX_IDS = 200


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PoolError(Refused):
    """A refused pool action (``Refused``: status, kind, message, field, details)."""


@dataclass(frozen=True)
class Quota:
    """What a user holds from a pool and may still claim today."""

    owned: int
    owned_limit: int | None
    today: int
    per_day_limit: int | None
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        left = [n - k for n, k in ((self.owned_limit, self.owned), (self.per_day_limit, self.today)) if n is not None]
        return max(0, min(left)) if left else None

    def as_json(self) -> dict:
        return {"owned": self.owned, "owned_limit": self.owned_limit, "claimed_today": self.today,
                "per_day_limit": self.per_day_limit, "remaining": self.remaining,
                "resets_at": self.resets_at.isoformat()}


class PoolService:
    """The pools of one runtime: ``runtime.extensions["pools"]``."""

    def __init__(self, runtime, pools: dict[str, Pool], clock=utcnow):
        self.runtime = runtime
        self.records = runtime.records
        self.db = runtime.records.db
        self.pools = pools
        self.clock = clock
        tables = self.records.metadata.tables
        self.holds, self.events, self.limits = tables["_crm_pool_hold"], tables["_crm_pool_event"], tables["_crm_pool_limit"]
        self._sqlite_turns = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------
    def pool(self, name: str) -> Pool:
        found = self.pools.get(name)
        if found is None:
            raise PoolError(404, "not-found", f"there is no pool {name!r}; GET /api/v1/_pools lists them")
        return found

    def visible(self, role: str | None) -> list[Pool]:
        return [p for p in self.pools.values() if p.may(role, "see")]

    def member_condition(self, pool: Pool, table, now: datetime | None = None):
        """(condition, scope) of the records in the pool: owner empty and ``members``."""
        from engine import rules

        scope = rules.Scope(self.records.metadata, pool.entity, self.records.model, dialect=self.db.dialect,
                            now=now or self.clock(), table=table)
        condition = table.c.owner_id.is_(None)
        if pool.members is not None:
            condition = sa.and_(condition, pool.members.where(scope))
        return condition, scope

    def page(self, pool: Pool, q, *, access, user_id: int | None, timeout_ms: int | None = None):
        """A page of the pool's records (``q``: a ``ListQuery`` of its entity) for a user whose role may
        see the pool: through the pool they see its records beyond their usual scope, never more fields."""
        if access is not None and not pool.may(role_of(access), "see"):
            raise PoolError(403, "forbidden", f"your role ({role_of(access)}) may not see {pool.name}")
        from dataclasses import replace

        table = self.records.table(pool.entity)
        condition, _ = self.member_condition(pool, table)
        q = replace(q, where=condition if q.where is None else sa.and_(q.where, condition))
        through = ThroughPool(access, pool.entity) if access is not None else None
        return self.records.list(q, timeout_ms=timeout_ms, context=Context(user_id=user_id, access=through))

    def quota(self, pool: Pool, user_id: int, role: str | None, *, conn=None, now: datetime | None = None) -> Quota:
        now = now or self.clock()
        if conn is None:
            with self.db.read() as conn:
                return self.quota(pool, user_id, role, conn=conn, now=now)
        limits = self.user_limits(conn, pool, user_id, role)
        midnight = datetime.combine(now.astimezone(timezone.utc).date(), time(), timezone.utc)
        table = self.records.table(pool.entity)
        h, e = self.holds, self.events
        owned = conn.execute(sa.select(sa.func.count()).select_from(h.join(table, table.c.id == h.c.record_id)).where(
            h.c.pool == pool.name, h.c.user_id == user_id, table.c.owner_id == user_id)).scalar()
        today = conn.execute(sa.select(sa.func.count()).select_from(e).where(
            e.c.pool == pool.name, e.c.user_id == user_id, e.c.action == "claim", e.c.at >= midnight)).scalar()
        return Quota(owned, limits.owned, today, limits.per_day, midnight + timedelta(days=1))

    def user_limits(self, conn, pool: Pool, user_id: int, role: str | None) -> Limits:
        """The role's limits, with the user's own override (``_crm_pool_limit``) where it sets one."""
        base = pool.limits_for(role)
        row = conn.execute(sa.select(self.limits.c.owned, self.limits.c.per_day).where(
            self.limits.c.pool == pool.name, self.limits.c.user_id == user_id)).first()
        if row is None:
            return base
        return Limits(base.owned if row.owned is None else row.owned, base.per_day if row.per_day is None else row.per_day)

    def hold_of(self, entity: str, record_id: int) -> dict | None:
        """The pool a record is held from (pool, user_id, claimed_at, due_at), or None."""
        names = [p.name for p in self.pools.values() if p.entity == entity]
        if not names:
            return None
        with self.db.read() as conn:
            row = conn.execute(sa.select(self.holds).where(self.holds.c.pool.in_(names),
                                                           self.holds.c.record_id == record_id)).first()
        return dict(row._mapping) if row is not None else None

    # -- actions -----------------------------------------------------------------------------------
    def claim(self, name: str, ids: Iterable[int], *, user_id: int, role: str | None,
              now: datetime | None = None) -> list[dict]:
        """``user_id`` takes the records ``ids`` from the pool, within their limits; all or nothing."""
        pool, ids = self.pool(name), _ids(ids)
        self._require(pool, role, "claim")
        now = now or self.clock()
        with self._turn(), self.db.write() as conn:
            self._lock(conn, pool, user_id)
            self._check_limits(conn, pool, user_id, role, len(ids), now, per_day=True)
            self._check_reclaim(conn, pool, ids, user_id, now)
            return [self._take(conn, pool, rid, user_id, user_id, "claim", now) for rid in ids]

    def assign(self, name: str, ids: Iterable[int], *, to_user: int, actor_id: int, role: str | None,
               now: datetime | None = None) -> list[dict]:
        """A manager gives records of the pool to ``to_user``: the target's owned limit applies (they
        cannot hold more than a claim would let them), not their per-day limit (which is what they
        claim themselves) nor the re-claim window (the manager decides)."""
        pool, ids = self.pool(name), _ids(ids)
        self._require(pool, role, "assign")
        now = now or self.clock()
        with self._turn(), self.db.write() as conn:
            target_role = conn.execute(sa.select(self.records.table(USER_ENTITY).c.role).where(
                self.records.table(USER_ENTITY).c.id == to_user,
                self.records.table(USER_ENTITY).c.active.is_not(False))).first()
            if target_role is None:
                raise PoolError(422, "validation", f"there is no active user {to_user}", field="user")
            self._lock(conn, pool, to_user)
            self._check_limits(conn, pool, to_user, target_role[0], len(ids), now, per_day=False)
            return [self._take(conn, pool, rid, to_user, actor_id, "assign", now) for rid in ids]

    def give_back(self, name: str, ids: Iterable[int], *, user_id: int, role: str | None, reason: Any,
                  note: str | None = None, now: datetime | None = None) -> list[dict]:
        """The owner returns records to the pool with a reason from the pool's list (required)."""
        pool, ids = self.pool(name), _ids(ids)
        self._require(pool, role, "return")
        if reason in (None, ""):
            raise PoolError(422, "validation", "a return needs a reason: "
                            + ", ".join(v for v, _ in pool.return_reasons), field="reason")
        if pool.return_reasons and pool.reason(str(reason)) is None:
            raise PoolError(422, "validation", f"{reason!r} is not a return reason of {pool.name}: "
                            + ", ".join(v for v, _ in pool.return_reasons), field="reason")
        if note is not None and (not isinstance(note, str) or len(note) > 2000):
            raise PoolError(422, "validation", "note must be a text of at most 2000 characters", field="note")
        now = now or self.clock()
        out = []
        with self._turn(), self.db.write() as conn:
            table = self.records.table(pool.entity)
            for rid in ids:
                owner = conn.execute(_locked(self.db, sa.select(table.c.owner_id).where(table.c.id == rid), table)).first()
                if owner is None or owner[0] != user_id:
                    raise PoolError(409, "not-owner", f"{pool.entity} {rid} is not yours: only its owner returns it",
                                    field="ids")
                out.append(self._release(conn, pool, rid, user_id, user_id, "return", now, str(reason), note))
        return out

    def set_limit(self, name: str, user_id: int, *, owned: int | None, per_day: int | None, role: str | None,
                  now: datetime | None = None) -> dict:
        """An admin or a role that may assign sets a user's own limits (None: the role's)."""
        pool = self.pool(name)
        self._require(pool, role, "assign")
        now = now or self.clock()
        with self.db.write() as conn:
            users = self.records.table(USER_ENTITY)
            if conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
                raise PoolError(404, "not-found", f"there is no user {user_id}")
            conn.execute(self.limits.delete().where(self.limits.c.pool == pool.name, self.limits.c.user_id == user_id))
            if owned is not None or per_day is not None:
                conn.execute(self.limits.insert().values(pool=pool.name, user_id=user_id, owned=owned,
                                                         per_day=per_day, updated_at=now))
        return {"pool": pool.name, "user_id": user_id, "owned": owned, "per_day": per_day}

    # -- the steps ---------------------------------------------------------------------------------
    def _turn(self):
        """On SQLite, this process's pool writes take turns on a lock of their own before the file's
        write lock: SQLite's busy handler polls with growing sleeps, so writers waiting on it may lose
        their turn again and again (a p99 of seconds under 8 claimers); a queue here keeps them in order."""
        return self._sqlite_turns if self.db.is_sqlite else nullcontext()

    def _require(self, pool: Pool, role: str | None, action: str) -> None:
        if not pool.may(role, action):
            allowed = ", ".join(sorted(pool.roles.get(action, ()))) or "admin only"
            raise PoolError(403, "forbidden", Msg("your role ({role}) may not {action} in {pool} (roles: {allowed})", role=role,
                                                       action=action, pool=pool.name, allowed=allowed))

    def _lock(self, conn, pool: Pool, user_id: int) -> None:
        """Serialize the claims counted against one user of one pool (SQLite: the write lock does)."""
        if not self.db.is_sqlite:
            key = int.from_bytes(hashlib.sha1(f"pool:{pool.name}:{user_id}".encode()).digest()[:8], "big", signed=True)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _check_limits(self, conn, pool: Pool, user_id: int, role, adding: int, now: datetime, *, per_day: bool) -> None:
        q = self.quota(pool, user_id, role, conn=conn, now=now)
        if q.owned_limit is not None and q.owned + adding > q.owned_limit:
            raise PoolError(409, "pool-limit", Msg("limit reached: at most {limit} {entity} records owned from the {pool} at once; owned now {owned}, "
                                "asked {adding} more. Return or convert some first.", limit=q.owned_limit,
                                entity=pool.entity, pool=str(pool.label), owned=q.owned, adding=adding), field="ids", limit="owned", allowed=q.owned_limit,
                            current=q.owned)
        if per_day and q.per_day_limit is not None and q.today + adding > q.per_day_limit:
            raise PoolError(409, "pool-limit", f"limit reached: at most {q.per_day_limit} claims a day from "
                            f"the {pool.label}; claimed today {q.today}, asked {adding} more; resets at "
                            f"{q.resets_at:%Y-%m-%d %H:%M} UTC", field="ids", limit="per_day",
                            allowed=q.per_day_limit, current=q.today, resets_at=q.resets_at.isoformat())

    def _check_reclaim(self, conn, pool: Pool, ids: list[int], user_id: int, now: datetime) -> None:
        if not pool.reclaim_days:
            return
        e = self.events
        since = now - timedelta(days=pool.reclaim_days)
        rows = conn.execute(sa.select(e.c.record_id, sa.func.max(e.c.at)).where(
            e.c.pool == pool.name, e.c.record_id.in_(ids), e.c.user_id == user_id,
            e.c.action.in_(("return", "recycle")), e.c.at > since).group_by(e.c.record_id)).all()
        if rows:
            rid, at = rows[0]
            until = _aware(at) + timedelta(days=pool.reclaim_days)
            raise PoolError(409, "reclaim-window", f"{pool.entity} {rid} left you less than {pool.reclaim_days} days "
                            f"ago: you may claim it again from {until:%Y-%m-%d %H:%M} UTC", field="ids",
                            until=until.isoformat())

    def _take(self, conn, pool: Pool, rid: int, user_id: int, actor_id: int, action: str, now: datetime) -> dict:
        table = self.records.table(pool.entity)
        condition, scope = self.member_condition(pool, table, now)
        found = conn.execute(_locked(self.db, scope.apply(sa.select(table.c.id).where(table.c.id == rid, condition)),
                                     table)).first()
        if found is None:
            owner = conn.execute(sa.select(table.c.owner_id).where(table.c.id == rid)).first()
            if owner is None:
                raise PoolError(404, "not-found", f"there is no {pool.entity} {rid}", field="ids")
            if owner[0] is not None:
                raise PoolError(409, "already-claimed", Msg("{entity} {id} is already claimed by someone else", entity=pool.entity, id=rid),
                                field="ids")
            raise PoolError(409, "not-in-pool", f"{pool.entity} {rid} is not in the {pool.label}", field="ids")
        ctx = Context(user_id=actor_id, system=True)
        record = self.records.update(pool.entity, rid, {"owner_id": user_id}, context=ctx, conn=conn)
        due, warn = due_of(pool, record, now, now)
        conn.execute(self.holds.delete().where(self.holds.c.pool == pool.name, self.holds.c.record_id == rid))
        conn.execute(self.holds.insert().values(pool=pool.name, record_id=rid, user_id=user_id, claimed_at=now,
                                                due_at=due, warn_at=warn, warned=False))
        self.record_actions(conn, pool, action, [(record, None, user_id)], actor_id, now)
        return record

    def _release(self, conn, pool: Pool, rid: int, user_id: int, actor_id: int | None, action: str, now: datetime,
                 reason: str | None = None, note: str | None = None) -> dict:
        ctx = Context(user_id=actor_id, system=True)
        record = self.records.update(pool.entity, rid, {"owner_id": None}, context=ctx, conn=conn)
        conn.execute(self.holds.delete().where(self.holds.c.pool == pool.name, self.holds.c.record_id == rid))
        self.record_actions(conn, pool, action, [(record, user_id, None)], actor_id, now, reason, note)
        return record

    def record_actions(self, conn, pool: Pool, action: str, changes: list[tuple[dict, int | None, int | None]],
                       actor_id: int | None, now: datetime, reason: str | None = None, note: str | None = None) -> None:
        """The rows of an action on records ``(record, old owner, new owner)``: the pool's events, the
        owner's field history, the audit log, and the action's automation trigger."""
        if not changes:
            return
        svc, ent = self.records, self.records.model.entity(pool.entity)
        conn.execute(self.events.insert(), [
            {"pool": pool.name, "record_id": r["id"], "user_id": old if action in ("return", "recycle") else new,
             "actor_id": actor_id, "action": action, "reason": reason, "note": note, "at": now}
            for r, old, new in changes])
        svc.log_history(conn, ent, [{"record_id": r["id"], "field": "owner_id", "old_value": old, "new_value": new}
                                    for r, old, new in changes], Context(user_id=actor_id), now)
        conn.execute(svc.metadata.tables["_crm_audit"].insert(), [
            {"at": now, "kind": AUDIT_KINDS[action], "actor_id": actor_id, "ip": None, "entity": pool.entity,
             "record_id": r["id"], "detail": {"pool": pool.name, "from": old, "to": new,
                                              **({"reason": reason} if reason else {}), **({"note": note} if note else {})}}
            for r, old, new in changes])
        workflow = self.runtime.extensions.get("workflow")
        if workflow is not None:
            ctx = Context(user_id=actor_id)
            for record, _, _ in changes:
                workflow.fire(conn, pool.entity, TRIGGERS[action], record, context=ctx)


class ThroughPool:
    """A user's ``Access`` as a pool's list sees it: the pool's entity readable and every record of
    the query visible (the query holds only the pool's members); fields and everything else as the role has them."""

    def __init__(self, access, entity: str):
        self._access, self._entity = access, entity

    def __getattr__(self, name):
        return getattr(self._access, name)

    def require(self, entity: str, op: str) -> None:
        if not (entity == self._entity and op == "read"):
            self._access.require(entity, op)

    def visibility(self, records, entity: str, table):
        return None if entity == self._entity else self._access.visibility(records, entity, table)


def role_of(access) -> str:
    """The role a pool checks for ``access``: ``admin`` for admins, whatever their role is called."""
    return "admin" if access.admin else access.role


# -- planning the recycle ----------------------------------------------------------------------------

def due_of(pool: Pool, record: dict, claimed_at: datetime, now: datetime,
           holding: Iterable[int] = ()) -> tuple[datetime | None, datetime | None]:
    """When ``record`` goes back to the pool, and when its owner is warned: the earliest of its
    rules, each counted from the later of the claim and its ``since`` value; a rule whose ``unless``
    holds (its index in ``holding``) waits a period from ``now``."""
    dues = []
    holding = set(holding)
    for i, rule in enumerate(pool.recycle):
        if i in holding:
            dues.append(now + timedelta(days=rule.days))
            continue
        base = _aware(claimed_at)
        since = _aware(record.get(rule.since)) if rule.since else None
        if since is not None and since > base:
            base = since
        dues.append(base + timedelta(days=rule.days))
    if not dues:
        return None, None
    due = min(dues)
    return due, (due - timedelta(days=pool.warn_days) if pool.warn_days else None)


def _aware(value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(), timezone.utc)
    return None


def _locked(db, stmt, table):
    """``stmt`` locking the rows of ``table`` it reads (PostgreSQL; SQLite's write lock is the whole file)."""
    return stmt if db.is_sqlite else stmt.with_for_update(of=table)


def _ids(ids: Iterable[Any]) -> list[int]:
    try:
        out = list(dict.fromkeys(int(i) for i in ids))
    except (TypeError, ValueError):
        raise PoolError(422, "validation", "ids must be a list of record ids", field="ids") from None
    if not out or len(out) > MAX_IDS or any(i < 1 for i in out):
        raise PoolError(422, "validation", f"give between 1 and {MAX_IDS} record ids", field="ids")
    return out
