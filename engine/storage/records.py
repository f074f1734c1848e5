"""The record service: the one door through which every record is created, changed or deleted.

Each call runs in one transaction: type coercion -> defaults -> ``crm_before_write`` hooks (the
workflow's transition guard and before-save automations, the security guards, any plugin's) ->
``visible_when`` -> picklist options' ``sets`` -> formulas (and ``follows``) and validation rules ->
required check -> lookup existence -> SQL write + field history -> ``exclusive_within`` flags ->
rollups (each parent whose rollups change is updated through this same path, recursively) ->
``crm_after_write`` hooks -> commit -> ``crm_after_commit`` hooks (``restore`` puts deleted records
back as they were stored: ``restore.py``). One
write's before and after hooks share a ``state`` dict. Updates are optimistic: a stale ``version`` is
a ``Conflict``, never an overwrite. Bulk writes (``bulk.py``) go through the same steps with batched
statements.

``RecordService`` is assembled from its parts: ``Reads`` (reading.py), ``WriteSteps`` (steps.py) and
``Rows`` (rows.py); this module holds the single-record writes. The names callers import from here
(``Context``, ``WritePlan``, ``BulkResult``, ...) live in the small modules below it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.metadata.model import AppModel, Entity

from .bulk import run_bulk
from .context import Context, access_for, guard_write, masked
from .database import Database
from .errors import Conflict, DeleteRestricted, FieldError, ValidationFailed
from .exclusive import clear_others
from .hooks import LifecycleHooks
from .reading import Reads
from .rollups import after_write as rollups_after_write
from .rows import Rows, unique_violation
from .steps import WriteSteps
from .tables import USER_ENTITY, build_metadata
from .values import OWNER, BulkResult, WritePlan, Written, jsonable

__all__ = ["EVENTS", "OWNER", "BulkResult", "Context", "RecordService", "WritePlan", "Written", "access_for",
           "jsonable", "unique_violation"]

EVENTS = ("create", "update", "delete")


class RecordService(Reads, WriteSteps, Rows):
    """create / update / delete / get / query / bulk for any entity of the model."""

    def __init__(self, model: AppModel, db: Database, pm: Any = None):
        self.model = model
        self.db = db
        self.hooks = LifecycleHooks(pm)
        self.metadata = build_metadata(model)
        self.history = self.metadata.tables["_crm_history"]
        self.counters = self.metadata.tables["_crm_counter"]
        self._plans: dict[str, WritePlan] = {}
        self._compiled: dict[tuple, tuple] = {}
        self._functions = None
        self._rules: dict[str, Any] = {}
        self._rollups: dict[str, tuple] = {}
        self._graph = None
        self._statements: dict[tuple, Any] = {}
        self._visible: dict[str, tuple] = {}

    # -- writes -----------------------------------------------------------------------------
    def create(self, entity: str, values: dict, *, context: Context = Context(),
               conn: Connection | None = None) -> dict:
        """Create a record; with ``conn`` inside that write transaction (after-commit work waits for it)."""
        ent = self._entity(entity)
        guard_write(context, ent, "create", values)
        with self.db.write(conn) as conn:
            record = self._create(conn, ent, values, context)
            self.computed(conn, ent, [record])
            self._after_commit(conn, "create", ent, record, None, context)
        return masked(context, ent, record)

    def update(self, entity: str, record_id: int, values: dict, *, version: int | None = None,
               context: Context = Context(), conn: Connection | None = None) -> dict:
        ent = self._entity(entity)
        guard_write(context, ent, "update", values)
        with self.db.write(conn) as conn:
            if context.access is not None:
                context.access.ensure_visible(self, conn, ent.name, record_id)
            record, old = self._update(conn, ent, record_id, values, version, context)
            if record is not old:
                self.computed(conn, ent, [record])
                self._after_commit(conn, "update", ent, record, old, context)
        return masked(context, ent, record)

    def delete(self, entity: str, record_id: int, *, version: int | None = None,
               context: Context = Context(), conn: Connection | None = None) -> None:
        """Delete a record, following each lookup's ``on_delete`` for the records pointing at it."""
        ent = self._entity(entity)
        guard_write(context, ent, "delete", None)
        events: list[tuple[str, Entity, dict, dict | None, Context]] = []
        with self.db.write(conn) as conn:
            if context.access is not None:
                context.access.ensure_visible(self, conn, ent.name, record_id)
            self._delete(conn, ent, record_id, version, context, events, set())
            for event, ent_, record, old, ctx in events:
                self._after_commit(conn, event, ent_, record, old, ctx)

    def restore(self, entity: str, rows: list[dict], *, context: Context = Context(),
                conn: Connection | None = None) -> list[dict]:
        """Put back deleted records exactly as they were stored (their ids, system columns and values;
        ``restore.py`` says what runs and what does not); with ``conn`` inside that write transaction.
        The caller needs ``create`` on the entity."""
        from .restore import restore_rows

        ent = self._entity(entity)
        guard_write(context, ent, "create", None)
        with self.db.write(conn) as conn:
            return restore_rows(self, conn, ent, rows, context)

    def _after_commit(self, conn: Connection, event: str, ent: Entity, record: dict, old: dict | None,
                      context: Context) -> None:
        if self.hooks.active("crm_after_commit"):
            self.db.on_commit(conn, lambda: self.hooks.call("crm_after_commit", event=event, entity=ent,
                                                            record=record, old=old, context=context))

    def bulk(self, entity: str, rows: list[dict], *, mode: str = "create", key: str | None = None,
             atomic: bool = True, context: Context = Context(), conn: Connection | None = None) -> BulkResult:
        """Create, update (rows carry ``id`` or ``key``) or upsert (by the unique field ``key``) many rows;
        with ``conn`` inside that write transaction (after-commit work waits for it)."""
        ent = self._entity(entity)
        for op in ("import", *{"create": ("create",), "update": ("update",)}.get(mode, ("create", "update"))):
            guard_write(context, ent, op, None)
        return run_bulk(self, ent, rows, mode=mode, key=key, atomic=atomic, context=context, conn=conn)

    # -- single-record internals ----------------------------------------------------------------
    def _create(self, conn: Connection, ent: Entity, values: dict, context: Context) -> dict:
        errors: list[FieldError] = []
        record = self.coerce(ent, values, context, errors)
        self.apply_defaults(ent, record)
        if errors:  # report what is missing too, so one round trip shows every problem
            bad = {e.field for e in errors}
            self.check_required(ent, record, errors, [n for n in ent.fields if n not in bad])
            raise ValidationFailed(errors, ent.name)
        state: dict = {}
        self.hooks.call("crm_before_write", event="create", entity=ent, record=record, old=None, context=context,
                        conn=conn, errors=errors, state=state)
        self.apply_option_sets(ent, record, None, values if isinstance(values, dict) else {})
        self.clear_hidden(conn, ent, record, None, context)
        runner = self.rule_runner(conn, ent, context)
        if runner is not None:
            runner.run(record, None, values, errors)
        self.check_required(ent, record, errors)
        errors += [e for _, e in self.missing_targets(conn, ent, [record], context)]
        if errors:
            raise ValidationFailed(errors, ent.name)
        for field in self.plan(ent).autonumbers:
            record[field.name] = self.next_numbers(conn, ent, field, 1)[0]
        now = datetime.now(timezone.utc)
        record.update(created_at=now, updated_at=now, created_by=context.user_id, updated_by=context.user_id,
                      version=1)
        record.setdefault("owner_id", context.user_id)
        for name in self.plan(ent).writable:
            record.setdefault(name, None)  # the record as stored: every field, null when unset
        table = self.table(ent.name)
        params = {k: v for k, v in record.items() if k in table.c}
        record["id"] = self.write_rows(conn, ent, self._insert_returning(table), params).rows[0][0]
        if self.plan(ent).exclusive:
            clear_others(self, conn, ent, record, None, context)
        if self.rollups_of(ent):
            rollups_after_write(self, conn, ent, None, record, context=context)
        self.hooks.call("crm_after_write", event="create", entity=ent, record=record, old=None, context=context,
                        conn=conn, state=state)
        self.audit_writes(conn, ent, "create", [record], context)
        return record

    def _update(self, conn, ent, record_id, values, version, context, *, old: dict | None = None,
                computed: dict | None = None):
        """Update one record. ``old``: the row already read and locked by the caller; ``computed``:
        values the engine computed (a parent's new rollups), written as they are."""
        if old is None:   # a blind write waits for a concurrent one, then reads its result
            old = self._load(conn, ent, record_id, lock=True)
        if version is not None and version != old["version"]:
            raise Conflict(ent.name, record_id, version, old["version"])
        errors: list[FieldError] = []
        changes = self.coerce(ent, values, context, errors)
        if errors:
            raise ValidationFailed(errors, ent.name)
        record = {**old, **changes, **(computed or {})}
        state: dict = {}
        self.hooks.call("crm_before_write", event="update", entity=ent, record=record, old=old, context=context,
                        conn=conn, errors=errors, state=state)
        self.apply_option_sets(ent, record, old, values)
        self.clear_hidden(conn, ent, record, old, context)
        runner = self.rule_runner(conn, ent, context)
        if runner is not None:
            runner.run(record, old, changes, errors)
        self.check_required(ent, record, errors)
        changed = {k: v for k, v in record.items()
                   if (k in ent.fields or k == "owner_id") and old.get(k) != v}
        errors += [e for _, e in self.missing_targets(conn, ent, [changed], context)]
        if errors:
            raise ValidationFailed(errors, ent.name)
        if not changed:
            return old, old
        now = datetime.now(timezone.utc)
        table = self.table(ent.name)
        params = {f"v_{k}": v for k, v in changed.items()}
        params.update(_id=record_id, _version=old["version"], _now=now, _by=context.user_id)
        if self.write_rows(conn, ent, self._update_statement(table, tuple(sorted(changed))), params).rowcount != 1:
            current = conn.execute(sa.select(table.c.version).where(table.c.id == record_id)).scalar()
            raise Conflict(ent.name, record_id, old["version"], current)
        record.update(version=old["version"] + 1, updated_at=now, updated_by=context.user_id)
        self.log_history(conn, ent, self.history_rows(ent, record_id, old, record), context, now)
        if self.plan(ent).exclusive:
            clear_others(self, conn, ent, record, old, context)
        if self.rollups_of(ent):
            rollups_after_write(self, conn, ent, old, record, context=context)
        self.hooks.call("crm_after_write", event="update", entity=ent, record=record, old=old, context=context,
                        conn=conn, state=state)
        return record, old

    def _update_statement(self, table: sa.Table, columns: tuple[str, ...]):
        """``UPDATE .. SET columns, version + 1, updated_at, updated_by WHERE id AND version``, with
        bound parameters, built once per table and set of columns (a parent's rollups change on
        every child write)."""
        key = ("update", table.name, columns)
        stmt = self._statements.get(key)
        if stmt is None:
            t = table
            stmt = self._statements[key] = (
                t.update().where(t.c.id == sa.bindparam("_id"), t.c.version == sa.bindparam("_version"))
                .values({**{c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in columns},
                         "version": t.c.version + 1,
                         "updated_at": sa.bindparam("_now", type_=t.c.updated_at.type),
                         "updated_by": sa.bindparam("_by", type_=t.c.updated_by.type)}))
        return stmt

    def _delete(self, conn, ent, record_id, version, context, events, doomed: set) -> None:
        """Delete one record and apply on_delete to its referrers; ``doomed`` holds the records this
        delete is already removing, so cycles (a record pointing at itself or round a loop) end."""
        doomed.add((ent.name, record_id))
        old = self._load(conn, ent, record_id, lock=True)
        if version is not None and version != old["version"]:
            raise Conflict(ent.name, record_id, version, old["version"])
        errors: list[FieldError] = []
        state: dict = {}
        self.hooks.call("crm_before_write", event="delete", entity=ent, record=old, old=old, context=context,
                        conn=conn, errors=errors, state=state)
        if errors:
            raise ValidationFailed(errors, ent.name)
        referrers = []
        for other, fname, rule, ids, count in self._referrers(conn, ent, record_id):
            left = [i for i in ids if (other.name, i) not in doomed]
            going = [i for i in ids if (other.name, i) in doomed and not (other is ent and i == record_id)]
            if going:  # a cycle: records this delete removes anyway stop pointing here first
                table = self.metadata.tables[other.table]
                conn.execute(table.update().where(table.c.id.in_(going)).values({fname: None}))
            if left:
                referrers.append((other, fname, rule, left, count - (len(ids) - len(left))))
        restricted = [(o.name, f, ids, n) for o, f, rule, ids, n in referrers if rule == "restrict"]
        if restricted:
            raise DeleteRestricted(ent.name, record_id, restricted)
        system = Context(context.user_id, system=True)
        for other, fname, rule, ids, _ in referrers:
            for child_id in ids:
                if (other.name, child_id) in doomed:
                    continue
                if rule == "set_null":
                    record, before = self._update(conn, other, child_id, {fname: None}, None, system)
                    events.append(("update", other, record, before, system))
                else:
                    self._delete(conn, other, child_id, None, context, events, doomed)
        if ent.name == USER_ENTITY:
            self._forget_user(conn, record_id)
        table = self.table(ent.name)
        self.write_rows(conn, ent, table.delete().where(table.c.id == record_id))
        if self.rollups_of(ent):
            rollups_after_write(self, conn, ent, old, None, skip=doomed, context=context)
        self.hooks.call("crm_after_write", event="delete", entity=ent, record=old, old=old, context=context,
                        conn=conn, state=state)
        self.audit_writes(conn, ent, "delete", [old], context)
        events.append(("delete", ent, old, old, context))

    def _forget_user(self, conn: Connection, user_id: int) -> None:
        """The engine's own rows that belong to a user (password, tokens, idempotency keys) go with it."""
        for table in self.metadata.tables.values():
            if table.name.startswith("_crm_") and "user_id" in table.c:
                conn.execute(table.delete().where(table.c.user_id == user_id))

    def _referrers(self, conn, ent, record_id) -> list[tuple[Entity, str, str, list[int], int]]:
        """(entity, field, on_delete, ids, count) for every record pointing at this one (all ids,
        but only the first ten for ``restrict``, which needs names for its message, not the rest).

        Lookups and references follow their ``on_delete``. A user is also pointed at by every
        record's owner and audit columns; those restrict (disable a user instead of deleting).
        """
        out = []
        for other in self.model.entities.values():
            table = self.metadata.tables[other.table]
            checks = []
            for field in other.fields.values():
                if field.target == ent.name:
                    checks.append((field.name, field.type.on_delete(field), table.c[field.name] == record_id))
                elif field.type_name == "reference" and ent.name in (field.prop("to") or self.model.entities):
                    checks.append((field.name, field.type.on_delete(field),
                                   table.c[field.name] == f"{ent.name}:{record_id}"))
            if ent.name == USER_ENTITY:
                checks += [(col, "restrict", table.c[col] == record_id) for col in ("owner_id", "created_by", "updated_by")]
            for name, rule, match in checks:
                query = sa.select(table.c.id).where(match).order_by(table.c.id)
                ids = list(conn.execute(query.limit(10) if rule == "restrict" else query).scalars())
                count = len(ids)
                if rule == "restrict" and count == 10:  # name a few, count them all
                    count = conn.execute(sa.select(sa.func.count()).select_from(table).where(match)).scalar()
                if ids:
                    out.append((other, name, rule, ids, count))
        return out
