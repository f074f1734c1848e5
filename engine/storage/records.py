"""The record service: the one door through which every record is created, changed or deleted.

Each call runs in one transaction: type coercion -> defaults -> ``crm_before_write`` hooks
(formulas, validation rules, workflow guards, before-save automations attach here) -> required
check -> lookup existence -> SQL write + field history -> ``crm_after_write`` hooks -> commit ->
``crm_after_commit`` hooks. Updates are optimistic: a stale ``version`` is a ``Conflict``, never an
overwrite. Bulk writes go through the same steps with batched statements.
"""

from __future__ import annotations

import sqlite3
from copy import copy
from functools import lru_cache
from dataclasses import dataclass, field
from types import MappingProxyType
from datetime import date, datetime, timezone
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.fields import INT64_MAX, FieldValueError
from engine.fields.relation import UserType
from engine.metadata.errors import Location
from engine.metadata.model import SYSTEM_COLUMNS, AppModel, Entity, Field, Label

from .database import Database
from .errors import Conflict, DeleteRestricted, FieldError, NotFound, ValidationFailed
from .query import ListQuery, Page
from .tables import USER_ENTITY, build_metadata

EVENTS = ("create", "update", "delete")
_ENGINE_COLUMNS = frozenset(SYSTEM_COLUMNS) - {"owner_id"}


@dataclass(frozen=True)
class Context:
    """Who writes, and how. ``system`` writes (seeding, automations) may set read-only fields."""

    user_id: int | None = None
    system: bool = False
    #: Automations: how deep in a chain of automations this write is, and which ones led to it.
    depth: int = 0
    chain: tuple[str, ...] = ()
    #: The workflow transition this update takes (set by ``RecordService.transition``).
    transition: str | None = None
    #: False for writes that must not start automations (seeding, restores).
    automations: bool = True
    #: The caller's rights (``engine.security.permissions.Access``); None: unrestricted (system, CLI).
    access: Any = None


@dataclass
class Hooks:
    """The lifecycle hooks of a plugin manager; empty when no plugin implements them."""

    pm: Any = None

    def call(self, name: str, **kwargs) -> None:
        if self.pm is not None:
            hook = getattr(self.pm.hook, name)
            if hook.get_hookimpls():
                hook(**kwargs)

    def active(self, name: str) -> bool:
        return self.pm is not None and bool(getattr(self.pm.hook, name).get_hookimpls())


class RecordService:
    """create / update / delete / get / query / bulk for any entity of the model."""

    def __init__(self, model: AppModel, db: Database, pm: Any = None):
        self.model = model
        self.db = db
        self.hooks = Hooks(pm)
        self.metadata = build_metadata(model)
        self.history = self.metadata.tables["_crm_history"]
        self.counters = self.metadata.tables["_crm_counter"]
        self._plans: dict[str, WritePlan] = {}
        self._compiled: dict[tuple, tuple] = {}
        self._functions = None
        self._rules: dict[str, Any] = {}
        self._rollups: dict[str, tuple] = {}
        self._visible: dict[str, tuple] = {}
        #: The workflow and automation engine (``engine.workflow.Automation``), set at boot.
        self.automation: Any = None

    # -- reads ------------------------------------------------------------------------------
    def table(self, entity: str) -> sa.Table:
        return self.metadata.tables[self._entity(entity).table]

    def get(self, entity: str, record_id: int, *, conn: Connection | None = None, context: Context = Context()) -> dict:
        ent = self._entity(entity)
        if conn is None:
            with self.db.read() as conn:
                return self.get(entity, record_id, conn=conn, context=context)
        access = _access(context, ent, "read")
        record = self.computed(conn, ent, [self._load(conn, ent, record_id)])[0]
        if access is not None:
            access.ensure_visible(self, conn, ent.name, record_id)
            access.mask(ent.name, [record])
        return record

    def query(self, entity: str, *, where: dict[str, Any] | None = None, order_by: Iterable[str] = ("id",),
              limit: int = 100, offset: int = 0) -> list[dict]:
        """Records whose fields equal ``where``'s values, sorted by ``order_by`` (``-field`` descending).

        Values are coerced by their field types first, as a write would store them.
        """
        ent = self._entity(entity)
        table = self.table(entity)
        stmt = sa.select(table)
        writable = self.plan(ent).writable
        for name, value in (where or {}).items():
            if value is not None and name in writable:
                field = writable[name][0]
                try:
                    value = field.type.coerce(field, value)
                except FieldValueError as exc:
                    raise ValidationFailed([FieldError(name, exc.code, exc.message)], ent.name) from None
            stmt = stmt.where(table.c[name].is_(None) if value is None else table.c[name] == value)
        for key in order_by:
            col = table.c[key.lstrip("-")]
            stmt = stmt.order_by(col.desc() if key.startswith("-") else col.asc())
        with self.db.read() as conn:
            return self.computed(conn, ent, [dict(row._mapping) for row in conn.execute(stmt.limit(limit).offset(offset))])

    def list(self, q: "ListQuery", *, timeout_ms: int | None = None, context: Context = Context()) -> "Page":
        """One page of records: filters, a formula condition, sort, keyset cursor (or offset), and a
        capped count."""
        from dataclasses import replace

        from .query import COUNT_CAP, Page, after_cursor, build_select, decode_cursor, encode_cursor

        ent = self._entity(q.entity)
        table = self.table(ent.name)
        compiled = self._condition(ent, q.formula) if q.formula else None
        access = _access(context, ent, "read")
        if access is not None:   # filters, sorts, fields and where= may name only readable fields
            access.check_names(ent.name, [*(f.field for f in q.filters), *(k.field for k in q.sort), *(q.columns or ()),
                                          *(compiled.fields if compiled is not None else ())])
            visible = access.visibility(self, ent.name, table)
            if visible is not None:
                q = replace(q, where=visible if q.where is None else sa.and_(q.where, visible))
        with self.db.read(timeout_ms=timeout_ms) as conn:
            scope = None
            if compiled is not None:
                scope = self._scope(conn, ent, compiled, context)
                condition = self._where(ent, compiled, scope)
                q = replace(q, where=condition if q.where is None else sa.and_(q.where, condition))
            stmt, keys = build_select(table, q, self._list_columns(ent, table, q))
            if q.cursor:
                stmt = stmt.where(after_cursor(table, keys, decode_cursor(ent, keys, q.cursor)))
            elif q.offset:
                stmt = stmt.offset(q.offset)
            if scope is not None:
                stmt = scope.apply(stmt)
            result = conn.execute(stmt.limit(q.limit + 1))
            names = list(result.keys())
            rows = [dict(zip(names, row)) for row in result]
            more = len(rows) > q.limit
            rows = self.computed(conn, ent, rows[:q.limit])
            if access is not None:
                access.mask(ent.name, rows)
            page = Page(rows, encode_cursor(keys, rows[-1]) if more and rows else None)
            if q.count:
                counted, _ = build_select(table, ListQuery(q.entity, q.filters, where=q.where), [table.c.id])
                counted = (scope.apply(counted) if scope is not None else counted).order_by(None)
                capped = sa.select(sa.func.count()).select_from(counted.limit(COUNT_CAP + 1).subquery())
                page.total = conn.execute(capped).scalar()
                if page.total > COUNT_CAP:  # never count millions exactly on a page request
                    page.total, page.total_is_estimate = self.db.estimate_rows(conn, counted, COUNT_CAP + 1), True
        return page

    def _condition(self, ent: Entity, text: str):
        """A formula condition compiled once for SQL; any problem is a 400-class QueryError."""
        from engine import rules

        from .query import QueryError

        try:
            compiled = rules.compile(text, ent.name, self.model, registry=self.functions)
            if compiled.type not in ("boolean", "null"):
                raise rules.RuleTypeError(f"where needs a condition (TRUE or FALSE), not a {compiled.type}")
            if not compiled.sql_capable:
                raise rules.NotInSQLError(compiled.sql_problem or "this condition cannot run in the database")
        except rules.RuleError as exc:
            raise _where_error(ent, exc) from None
        return compiled

    @staticmethod
    def _where(ent: Entity, compiled, scope):
        """The condition in SQL; what only the SQL back end finds (a number the database cannot
        hold) is a QueryError too."""
        from engine import rules

        try:
            return compiled.where(scope)
        except rules.RuleError as exc:
            raise _where_error(ent, exc) from None

    def _scope(self, conn: Connection, ent: Entity, compiled, context: Context):
        from engine import rules

        user = None
        if "user" in compiled.uses and context.user_id is not None:
            user = self._load(conn, self.model.entity(USER_ENTITY), context.user_id)
        return rules.Scope(self.metadata, ent.name, self.model, dialect=self.db.dialect, user=user,
                           now=datetime.now(timezone.utc))

    @property
    def functions(self):
        """The formula functions: built-ins and every plugin's (``crm_formula_functions``)."""
        if self._functions is None:
            from engine import rules

            self._functions = rules.registry_from_plugins(self.hooks.pm) if self.hooks.pm else rules.default_registry()
        return self._functions

    def fetch_many(self, entity: str, ids: Iterable[int], *, context: Context = Context()) -> dict[int, dict]:
        """Records by id (for expanding lookups), one query per 1000 ids; only those the caller may see."""
        table = self.table(entity)
        wanted = sorted({i for i in ids if i is not None})
        found: dict[int, dict] = {}
        access = _access(context, self._entity(entity), "read")
        visible = access.visibility(self, entity, table) if access is not None else None
        with self.db.read() as conn:
            for start in range(0, len(wanted), 1000):
                stmt = sa.select(table).where(table.c.id.in_(wanted[start:start + 1000]))
                if visible is not None:
                    stmt = stmt.where(visible)
                found.update({row.id: dict(row._mapping) for row in conn.execute(stmt)})
            self.computed(conn, self._entity(entity), list(found.values()))
        if access is not None:
            access.mask(entity, list(found.values()))
        return found

    # -- the formula language ------------------------------------------------------------------
    def rules_of(self, ent: Entity):
        """The compiled rules of ``ent`` (``EntityRules``), or None when it declares none."""
        try:
            return self._rules[ent.name]
        except KeyError:
            from .formulas import EntityRules

            found = self._rules[ent.name] = EntityRules.of(self, ent)
            return found

    def rollups_of(self, ent: Entity) -> tuple:
        """The rollups aggregating records of ``ent`` (``rollups.Rollup``); empty for most entities."""
        try:
            return self._rollups[ent.name]
        except KeyError:
            from .rollups import rollups_of

            found = self._rollups[ent.name] = rollups_of(self, ent)
            return found

    def rule_runner(self, conn: Connection, ent: Entity, context: Context):
        """A runner of ``ent``'s write-time rules for one transaction, or None when it has none."""
        rules = self.rules_of(ent)
        if rules is None or not rules.on_write:
            return None
        from .formulas import RuleRunner

        return RuleRunner(self, conn, ent, rules, context)

    def _list_columns(self, ent: Entity, table: sa.Table, q: "ListQuery") -> list | None:
        """The columns a page needs: all of them, or with sparse fields only those asked for, the id
        and the sort keys (computed-on-read formulas may read anything, so they get every column)."""
        rules = self.rules_of(ent)
        if not q.columns or (rules is not None and rules.on_read):
            return None
        wanted = {"id", *q.columns, *(k.field for k in q.sort)}
        return [c for c in table.c if c.name in wanted]

    def computed(self, conn: Connection, ent: Entity, rows: list[dict]) -> list[dict]:
        """Fill in the formula fields computed on read (those reading other records); returns ``rows``."""
        rules = self.rules_of(ent)
        if rules is not None and rules.on_read:
            from .formulas import fill_on_read

            fill_on_read(self, conn, ent, rules, rows)
        return rows

    def history_of(self, entity: str, record_id: int, *, context: Context = Context()) -> list[dict]:
        """The field history of a record, oldest first (none of the fields the caller may not read)."""
        h = self.history
        stmt = sa.select(h).where(h.c.entity == entity, h.c.record_id == record_id).order_by(h.c.id)
        access = _access(context, self._entity(entity), "read")
        with self.db.read() as conn:
            if access is not None:
                access.ensure_visible(self, conn, entity, record_id)
                hidden = access.hidden(entity)
                stmt = stmt.where(h.c.field.not_in(sorted(hidden))) if hidden else stmt
            return [dict(row._mapping) for row in conn.execute(stmt)]

    # -- writes -----------------------------------------------------------------------------
    def create(self, entity: str, values: dict, *, context: Context = Context(),
               conn: Connection | None = None) -> dict:
        """Create a record; with ``conn`` inside that write transaction (after-commit work waits for it)."""
        ent = self._entity(entity)
        _guard_write(context, ent, "create", values)
        with self.db.write(conn) as conn:
            record = self._create(conn, ent, values, context)
            self.computed(conn, ent, [record])
            self._after_commit(conn, "create", ent, record, None, context)
        return _masked(context, ent, record)

    def update(self, entity: str, record_id: int, values: dict, *, version: int | None = None,
               context: Context = Context(), conn: Connection | None = None) -> dict:
        ent = self._entity(entity)
        _guard_write(context, ent, "update", values)
        with self.db.write(conn) as conn:
            if context.access is not None:
                context.access.ensure_visible(self, conn, ent.name, record_id)
            record, old = self._update(conn, ent, record_id, values, version, context)
            if record is not old:
                self.computed(conn, ent, [record])
                self._after_commit(conn, "update", ent, record, old, context)
        return _masked(context, ent, record)

    def delete(self, entity: str, record_id: int, *, version: int | None = None,
               context: Context = Context(), conn: Connection | None = None) -> None:
        """Delete a record, following each lookup's ``on_delete`` for the records pointing at it."""
        ent = self._entity(entity)
        _guard_write(context, ent, "delete", None)
        events: list[tuple[str, Entity, dict, dict | None, Context]] = []
        with self.db.write(conn) as conn:
            if context.access is not None:
                context.access.ensure_visible(self, conn, ent.name, record_id)
            self._delete(conn, ent, record_id, version, context, events, set())
            for event, ent_, record, old, ctx in events:
                self._after_commit(conn, event, ent_, record, old, ctx)

    def _after_commit(self, conn: Connection, event: str, ent: Entity, record: dict, old: dict | None,
                      context: Context) -> None:
        if self.hooks.active("crm_after_commit"):
            self.db.on_commit(conn, lambda: self.hooks.call("crm_after_commit", event=event, entity=ent,
                                                            record=record, old=old, context=context))

    def bulk(self, entity: str, rows: list[dict], *, mode: str = "create", key: str | None = None,
             atomic: bool = True, context: Context = Context(), conn: Connection | None = None) -> "BulkResult":
        """Create, update (rows carry ``id`` or ``key``) or upsert (by the unique field ``key``) many rows;
        with ``conn`` inside that write transaction (after-commit work waits for it)."""
        from .bulk import run_bulk

        ent = self._entity(entity)
        for op in ("import", *{"create": ("create",), "update": ("update",)}.get(mode, ("create", "update"))):
            _guard_write(context, ent, op, None)
        return run_bulk(self, ent, rows, mode=mode, key=key, atomic=atomic, context=context, conn=conn)

    # -- the steps, shared with the bulk path ------------------------------------------------------
    def plan(self, ent: Entity) -> "WritePlan":
        """What a write to ``ent`` needs, computed once per entity (the hot path of bulk writes)."""
        plan = self._plans.get(ent.name)
        if plan is None:
            plan = self._plans[ent.name] = WritePlan.of(ent)
        return plan

    def coerce(self, ent: Entity, values: dict, context: Context, errors: list[FieldError]) -> dict:
        """Raw input -> typed values of known, writable fields; problems are appended to ``errors``."""
        if not isinstance(values, dict):
            errors.append(FieldError(None, "type", "a record must be an object of field values"))
            return {}
        writable = self.plan(ent).writable
        out = {}
        for name, raw in values.items():
            entry = writable.get(name)
            if entry is None:
                code = "readonly" if name in _ENGINE_COLUMNS else "unknown"
                errors.append(FieldError(name, code, "is set by the engine" if code == "readonly"
                                         else f"{ent.name} has no field {name!r}"))
                continue
            field, coerce, readonly, blank_is_null = entry
            if readonly and not context.system:
                errors.append(FieldError(name, "readonly", "is read-only"))
            elif raw is None or (blank_is_null and raw == ""):
                out[name] = None
            else:
                try:
                    out[name] = coerce(raw)
                except FieldValueError as exc:
                    errors.append(FieldError(name, exc.code, exc.message))
        return out

    def apply_defaults(self, ent: Entity, record: dict) -> None:
        for name, value in self.plan(ent).defaults:
            if name not in record:
                record[name] = copy(value) if isinstance(value, (list, dict)) else value

    def check_required(self, ent: Entity, record: dict, errors: list[FieldError], only: Iterable[str] | None = None) -> None:
        required = self.plan(ent).required
        for name in required if only is None else (n for n in only if n in required):
            value = record.get(name)
            if value is None or value == "" or value == []:
                errors.append(FieldError(name, "required", "is required"))

    def missing_targets(self, conn: Connection, ent: Entity, records: list[dict],
                        context: Context = Context()) -> list[tuple[int, FieldError]]:
        """(position, error) for every lookup or reference value whose target record does not exist,
        or that the caller may not read (an entity their role cannot read, a record outside their
        scope): both get the same answer, so a link never confirms that a record exists. One query
        per target entity and 5000 ids, whatever the number of records."""
        access = None if context.system else context.access
        problems = []
        for field in self.plan(ent).pointers:
            wanted: dict[tuple[str, int], list[int]] = {}
            for i, record in enumerate(records):
                value = record.get(field.name)
                if value is None:
                    continue
                target, rid = (value.entity, value.id) if field.type_name == "reference" else (field.target, value)
                wanted.setdefault((target, rid), []).append(i)
            for target in {t for t, _ in wanted}:
                if target not in self.model.entities:
                    for (t, rid), positions in wanted.items():
                        if t == target:
                            problems += [(i, FieldError(field.name, "lookup", f"there is no entity {t!r}"))
                                         for i in positions]
                    continue
                ids = [rid for t, rid in wanted if t == target]
                found = self._existing_ids(conn, target, ids, access)
                for rid in set(ids) - found:
                    problems += [(i, FieldError(field.name, "lookup", f"there is no {target} with id {rid}"))
                                 for i in wanted[(target, rid)]]
        return problems

    def clear_hidden(self, conn: Connection, ent: Entity, record: dict, old: dict | None, context: Context) -> None:
        """``visible_when``: after a write by anyone but the engine itself (``system``), a field whose
        condition is not TRUE on the record being written holds nothing. A value sent for it is
        ignored (the web form posts its hidden inputs too) and a value it held is cleared when the
        condition turns false (e.g. ``lost_reason`` once the stage is no longer ``lost``)."""
        if context.system:
            return
        for name, compiled in self._visibility_of(ent):
            if record.get(name) is None:
                continue
            related = None
            paths = frozenset(p for p in compiled.fields if "." in p)
            if paths:
                from engine import rules

                related = rules.fetch_related(conn, self.metadata, self.model, ent.name, record, paths)
            user = self._writer(conn, context) if "user" in compiled.uses else None
            try:
                shown = compiled.evaluate(record, prior=old, is_new=old is None, related=related, user=user,
                                          now=datetime.now(timezone.utc))
            except Exception:  # noqa: BLE001 - a condition that cannot be evaluated hides nothing
                shown = True
            if shown is not True:
                record[name] = None

    def _visibility_of(self, ent: Entity) -> tuple:
        """(field name, compiled ``visible_when``) of ``ent``'s stored fields, compiled once."""
        found = self._visible.get(ent.name)
        if found is None:
            from engine import rules

            found = self._visible[ent.name] = tuple(
                (f.name, rules.compile(f.prop("visible_when"), ent.name, self.model, registry=self.functions))
                for f in ent.fields.values() if f.stored and isinstance(f.prop("visible_when"), str))
        return found

    def _writer(self, conn: Connection, context: Context) -> dict | None:
        """The writing user's record (for ``$user``), read once per write transaction."""
        if context.user_id is None:
            return None
        cache = self.db.txn_cache(conn)
        if ("writer", context.user_id) not in cache:
            try:
                cache[("writer", context.user_id)] = self._load(conn, self.model.entity(USER_ENTITY), context.user_id)
            except NotFound:
                cache[("writer", context.user_id)] = None
        return cache[("writer", context.user_id)]

    def audit_writes(self, conn: Connection, ent: Entity, event: str, records: list[dict], context: Context) -> None:
        """Creates and deletes made for a user (a context with ``access``: API, UI, bulk, their
        automations) go to the audit log (``record_created`` / ``record_deleted``, a delete with the
        record's last values) in the write's own transaction, one INSERT just before it commits."""
        if context.access is None or context.system or not records:
            return
        cache = self.db.txn_cache(conn)
        pending = cache.get("audit")
        if pending is None:
            pending = cache["audit"] = []
            table = self.metadata.tables["_crm_audit"]
            self.db.before_commit(conn, lambda: conn.execute(table.insert(), pending))
        now = datetime.now(timezone.utc)
        kind = {"create": "record_created", "delete": "record_deleted"}[event]
        shown = [f for f in ent.fields.values() if f.stored and not f.prop("encrypted")] if event == "delete" else []
        for record in records:
            detail = {"values": {f.name: _jsonable(f, record.get(f.name)) for f in shown}} if shown else {}
            pending.append(dict(at=now, kind=kind, actor_id=context.user_id, ip=None, entity=ent.name,
                                record_id=record.get("id"), detail=detail))

    def history_rows(self, ent: Entity, record_id: int, old: dict, new: dict) -> list[dict]:
        """Field history of an update: one row per tracked field whose value changed."""
        rows = []
        for field in self.plan(ent).tracked:
            before, after = old.get(field.name), new.get(field.name)
            if before != after:
                rows.append({"record_id": record_id, "field": field.name,
                             "old_value": _jsonable(field, before), "new_value": _jsonable(field, after)})
        return rows

    def log_history(self, conn: Connection, ent: Entity, rows: list[dict], context: Context, now: datetime) -> None:
        """Write history rows of one entity, by one user, at one time."""
        keys = ("entity", "record_id", "field", "old_value", "new_value", "changed_by", "changed_at")
        self.execute_many(conn, ent, ("history",), self.history.insert, rows, keys,
                          constants={"entity": ent.name, "changed_by": context.user_id, "changed_at": now})

    def next_numbers(self, conn: Connection, ent: Entity, field: Field, count: int) -> list[str]:
        """Reserve ``count`` autonumbers for ``field`` in this transaction."""
        name = f"{ent.name}.{field.name}"
        start = int(field.prop("start", 1))
        insert = (sa.dialects.postgresql.insert if not self.db.is_sqlite else sa.dialects.sqlite.insert)(self.counters)
        stmt = insert.values(name=name, value=start - 1 + count).on_conflict_do_update(
            index_elements=["name"], set_={"value": self.counters.c.value + count}).returning(self.counters.c.value)
        last = conn.execute(stmt).scalar_one()
        today = date.today()
        return [field.type.format(field, n, today) for n in range(last - count + 1, last + 1)]

    # -- single-record internals ----------------------------------------------------------------
    def _create(self, conn: Connection, ent: Entity, values: dict, context: Context) -> dict:
        errors: list[FieldError] = []
        record = self.coerce(ent, values, context, errors)
        self.apply_defaults(ent, record)
        if errors:  # report what is missing too, so one round trip shows every problem
            bad = {e.field for e in errors}
            self.check_required(ent, record, errors, [n for n in ent.fields if n not in bad])
            raise ValidationFailed(errors, ent.name)
        triggered = self._automation_before(conn, ent, "create", record, None, context, errors)
        self.hooks.call("crm_before_write", event="create", entity=ent, record=record, old=None, context=context)
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
        if self.rollups_of(ent):
            from .rollups import after_write

            after_write(self, conn, ent, None, record)
        if self.automation is not None:
            self.automation.after_write(conn, ent, "create", record, None, context, triggered)
        self.hooks.call("crm_after_write", event="create", entity=ent, record=record, old=None, context=context)
        self.audit_writes(conn, ent, "create", [record], context)
        return record

    def _update(self, conn, ent, record_id, values, version, context):
        old = self._load(conn, ent, record_id, lock=True)   # a blind write waits for a concurrent one, then reads its result
        if version is not None and version != old["version"]:
            raise Conflict(ent.name, record_id, version, old["version"])
        errors: list[FieldError] = []
        changes = self.coerce(ent, values, context, errors)
        if errors:
            raise ValidationFailed(errors, ent.name)
        record = {**old, **changes}
        triggered = self._automation_before(conn, ent, "update", record, old, context, errors)
        self.hooks.call("crm_before_write", event="update", entity=ent, record=record, old=old, context=context)
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
        stmt = (table.update().where(table.c.id == record_id, table.c.version == old["version"])
                .values(**changed, version=old["version"] + 1, updated_at=now, updated_by=context.user_id))
        if self.write_rows(conn, ent, stmt).rowcount != 1:
            current = conn.execute(sa.select(table.c.version).where(table.c.id == record_id)).scalar()
            raise Conflict(ent.name, record_id, old["version"], current)
        record.update(version=old["version"] + 1, updated_at=now, updated_by=context.user_id)
        self.log_history(conn, ent, self.history_rows(ent, record_id, old, record), context, now)
        if self.rollups_of(ent):
            from .rollups import after_write

            after_write(self, conn, ent, old, record)
        if self.automation is not None:
            self.automation.after_write(conn, ent, "update", record, old, context, triggered)
        self.hooks.call("crm_after_write", event="update", entity=ent, record=record, old=old, context=context)
        return record, old

    def _delete(self, conn, ent, record_id, version, context, events, doomed: set) -> None:
        """Delete one record and apply on_delete to its referrers; ``doomed`` holds the records this
        delete is already removing, so cycles (a record pointing at itself or round a loop) end."""
        doomed.add((ent.name, record_id))
        old = self._load(conn, ent, record_id, lock=True)
        if version is not None and version != old["version"]:
            raise Conflict(ent.name, record_id, version, old["version"])
        errors: list[FieldError] = []
        triggered = self._automation_before(conn, ent, "delete", old, old, context, errors)
        if errors:
            raise ValidationFailed(errors, ent.name)
        self.hooks.call("crm_before_write", event="delete", entity=ent, record=old, old=old, context=context)
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
            from .rollups import after_write

            after_write(self, conn, ent, old, None, skip=doomed)
        if self.automation is not None:
            self.automation.after_write(conn, ent, "delete", old, old, context, triggered)
        self.hooks.call("crm_after_write", event="delete", entity=ent, record=old, old=old, context=context)
        self.audit_writes(conn, ent, "delete", [old], context)
        events.append(("delete", ent, old, old, context))

    def _automation_before(self, conn, ent, event, record, old, context, errors):
        """Workflow transitions and before-save automations (``engine.workflow``), if any apply."""
        if self.automation is None:
            return None
        return self.automation.before_write(conn, ent, event, record, old, context, errors)

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

    def _load(self, conn: Connection, ent: Entity, record_id: Any, *, lock: bool = False) -> dict:
        """The stored row; with ``lock`` locked until the write transaction ends (FOR UPDATE on
        PostgreSQL; SQLite's write transaction already holds the whole database), so the version
        read is still the stored one when the UPDATE runs."""
        if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id <= INT64_MAX:
            raise NotFound(ent.name, record_id)
        table = self.table(ent.name)
        stmt = sa.select(table).where(table.c.id == record_id)
        result = conn.execute(stmt.with_for_update() if lock and not self.db.is_sqlite else stmt)
        row = result.first()
        if row is None:
            raise NotFound(ent.name, record_id)
        return dict(zip(result.keys(), row))

    def _existing_ids(self, conn: Connection, entity: str, ids: list[int], access: Any = None) -> set[int]:
        """Which of ``ids`` exist (and, with ``access``, are records the caller may read)."""
        if access is not None and not access.can(entity, "read"):
            return set()
        table = self.table(entity)
        visible = access.visibility(self, entity, table) if access is not None else None
        found: set[int] = set()
        unique = sorted(set(ids))
        for start in range(0, len(unique), 5000):
            stmt = sa.select(table.c.id).where(table.c.id.in_(unique[start:start + 5000]))
            found.update(conn.execute(stmt if visible is None else stmt.where(visible)).scalars())
        return found

    def insert_many(self, conn: Connection, ent: Entity, records: list[dict],
                    constants: dict | None = None) -> list[int]:
        """Insert records (all with the same keys) in one executemany; return their ids in order.

        On SQLite the ids are the consecutive ids AUTOINCREMENT gives a table's new rows after the
        last one it gave, while this transaction holds the write lock, checked by counting them;
        elsewhere SQLAlchemy's batched INSERT .. RETURNING gives them.
        """
        table = self.table(ent.name)
        keys = tuple(k for k in records[0] if k in table.c)
        if not self.db.is_sqlite:
            stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
            rows = self.write_rows(conn, ent, stmt, [{k: r.get(k) for k in keys} for r in records]).rows
            return [row[0] for row in rows]
        before = self._last_id(conn, table)
        self.execute_many(conn, ent, ("insert", table.name, keys), lambda: sa.insert(table), records, keys,
                          constants=constants)
        ids = list(range(before + 1, before + 1 + len(records)))
        count = conn.execute(sa.select(sa.func.count()).where(table.c.id.between(ids[0], ids[-1]))).scalar()
        if count != len(records):  # pragma: no cover - would mean SQLite changed how it assigns rowids
            raise RuntimeError(f"bulk insert into {ent.name}: could not establish the new ids")
        return ids

    @lru_cache(maxsize=None)  # noqa: B019 - one statement per table for the service's lifetime
    def _insert_returning(self, table: sa.Table):
        return table.insert().returning(table.c.id)

    @staticmethod
    def _last_id(conn: Connection, table: sa.Table) -> int:
        """The id SQLite gave last in this table (AUTOINCREMENT keeps it in sqlite_sequence)."""
        seq = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table.name}).scalar()
        highest = conn.execute(sa.select(sa.func.max(table.c.id))).scalar()
        return max(seq or 0, highest or 0)

    def execute_many(self, conn: Connection, ent: Entity, key: tuple, build, rows: list[dict],
                     column_keys: tuple[str, ...] | None = None, constants: dict | None = None) -> int:
        """One statement, many parameter sets: the bulk path's hot loop. Returns the rows affected.

        The statement (made by ``build()`` once per ``key``) is compiled once; on SQLite it goes to
        the driver's executemany with parameters processed by the columns' own bind processors,
        skipping SQLAlchemy's per-row bookkeeping; ``constants`` (the same for every row, such as
        timestamps) are processed once. Elsewhere SQLAlchemy runs it (psycopg pipelines).
        """
        if not rows:
            return 0
        if not self.db.is_sqlite:
            if constants:
                rows = [{**constants, **row} for row in rows]
            return self.write_rows(conn, ent, build(), rows).rowcount
        cached = self._compiled.get(key)
        if cached is None:
            compiled = build().compile(dialect=conn.dialect, column_keys=list(column_keys) if column_keys else None)
            order = list(compiled.positiontup)
            binds = [(name, compiled.binds[name].type._cached_bind_processor(conn.dialect),
                      None if compiled.binds[name].required else compiled.binds[name].effective_value)
                     for name in order]  # literals in the statement (version + 1) keep their value
            cached = self._compiled[key] = (str(compiled), binds)
        sql, binds = cached
        constants = constants or {}
        template, varying = [], []
        for index, (name, proc, fixed) in enumerate(binds):
            if name in constants or fixed is not None:
                value = constants.get(name, fixed)
                template.append(proc(value) if proc else value)
            else:
                template.append(None)
                varying.append((index, name, proc))
        params = []
        for row in rows:
            values = template.copy()
            for index, name, proc in varying:
                value = row.get(name)
                values[index] = proc(value) if proc and value is not None else value
            params.append(values)
        try:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.executemany(sql, params)
                count = cursor.rowcount
            finally:
                cursor.close()
        except sqlite3.IntegrityError as exc:
            raise ValidationFailed([unique_violation(ent, exc)], ent.name) from None
        return count

    def write_rows(self, conn: Connection, ent: Entity, stmt, params: Any = None) -> "Written":
        """Run a write; a unique-index violation becomes a field error, never a 500. (No savepoint:
        any error ends the whole write's transaction, which rolls back.)"""
        try:
            result = conn.execute(stmt, params)
            rows = result.all() if result.returns_rows else []
            return Written(rows, result.rowcount)
        except sa.exc.IntegrityError as exc:
            raise ValidationFailed([unique_violation(ent, exc)], ent.name) from None

    def _entity(self, name: str) -> Entity:
        try:
            return self.model.entities[name]
        except KeyError:
            raise NotFound("entity", name) from None


@dataclass(frozen=True)
class WritePlan:
    """Per-entity facts every write needs, precomputed."""

    writable: dict[str, tuple[Field, Any, bool, bool]]   # name -> (field, coerce, readonly, blank is null)
    defaults: tuple[tuple[str, Any], ...]
    required: frozenset[str]
    tracked: tuple[Field, ...]
    autonumbers: tuple[Field, ...]
    pointers: tuple[Field, ...]

    @classmethod
    def of(cls, ent: Entity) -> "WritePlan":
        fields = [f for f in ent.fields.values() if f.stored]
        writable = {f.name: (f, f.coerce, f.readonly, f.type_name not in ("text", "textarea"))
                    for f in (*fields, OWNER)}
        return cls(
            writable=writable,
            defaults=tuple((f.name, f.coerce(f.default)) for f in fields
                           if f.default is not None and f.default_formula is None)
            + tuple((f.name, f.type.zero(f)) for f in fields if f.type_name == "rollup"),
            required=frozenset(f.name for f in fields if f.required and not f.type.computed),
            tracked=tuple(f for f in fields if f.prop("track_history")),
            autonumbers=tuple(f for f in fields if f.type_name == "autonumber"),
            pointers=tuple(f for f in (*fields, OWNER) if f.target or f.type_name == "reference"),
        )


@dataclass(frozen=True)
class Written:
    rows: list
    rowcount: int


@dataclass
class BulkResult:
    items: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(i["status"] != "error" for i in self.items)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item["status"]] = out.get(item["status"], 0) + 1
        return out


def _where_error(ent: Entity, exc) -> "ValidationFailed":
    from .query import QueryError

    where = f" at column {exc.column}" if exc.column else ""
    return QueryError([FieldError("where", exc.kind, f"{exc.message}{where}")], ent.name)


def unique_violation(ent: Entity, exc: Exception) -> FieldError:
    from .tables import index_name

    text = str(getattr(exc, "orig", exc))
    for key in ent.unique_keys:
        sqlite_words = ", ".join(f"{ent.table}.{name}" for name in key)
        names = {index_name(ent.table, key, True)} | {i.name for i in ent.indexes if i.fields == key and i.name}
        if f"failed: {sqlite_words}" in text or any(f'"{name}"' in text for name in names):
            return FieldError(key[0], "unique", f"another {ent.name} already has this {' and '.join(key)}")
    first = text.splitlines()[0] if text else "constraint violated"
    return FieldError(None, "constraint", f"the database refused the write: {first}")


def _access(context: Context, ent: Entity, op: str):
    """The caller's ``Access`` after checking ``op`` on ``ent`` (None: unrestricted)."""
    access = None if context.system else context.access
    if access is not None:
        access.require(ent.name, op)
    return access


def _guard_write(context: Context, ent: Entity, op: str, values: dict | None) -> None:
    """``op`` is allowed and every field of ``values`` is writable for the caller (else 403 / 422)."""
    access = _access(context, ent, op)
    if access is not None and values:
        errors = access.write_errors(ent.name, values)
        if errors:
            raise ValidationFailed(errors, ent.name)


def _masked(context: Context, ent: Entity, record: dict) -> dict:
    if context.access is not None and not context.system:
        return context.access.mask(ent.name, [dict(record)])[0]
    return record


def _jsonable(field: Field, value: Any) -> Any:
    return None if value is None else field.type.to_json(field, value)


#: ``owner_id`` is a system column that callers may write, like a user lookup.
OWNER = Field(name="owner_id", type=UserType(), label=Label.of({"en": "Owner", "zh": "负责人"}, "owner"),
              props=MappingProxyType({"type": "user", "on_delete": "restrict"}),
              origin=Location("system", "engine", 0))
