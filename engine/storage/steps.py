"""The steps of a write, shared by the single-record and the bulk path: the entity's ``WritePlan``,
type coercion, defaults, required fields, lookups that must exist, ``visible_when`` (hidden fields
hold nothing), the audit of creates and deletes, field history and autonumbers.

Each step appends what is wrong to an ``errors`` list rather than raising, so one round trip shows
every problem. ``WriteSteps`` is a part of ``RecordService``; it uses the service's ``Rows``.
"""

from __future__ import annotations

from engine.messages import Msg
from copy import copy
from datetime import date, datetime, timezone
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.fields import FieldValueError
from engine.metadata.model import SYSTEM_COLUMNS, Entity, Field

from .context import Context
from .errors import FieldError, NotFound
from .tables import USER_ENTITY
from .values import WritePlan, jsonable

_ENGINE_COLUMNS = frozenset(SYSTEM_COLUMNS) - {"owner_id"}
AUDIT_KEYS = ("at", "kind", "actor_id", "ip", "entity", "record_id", "detail")


class WriteSteps:
    """The write path's steps (a part of ``RecordService``)."""

    _plans: dict[str, WritePlan]
    _visible: dict[str, tuple]

    def plan(self, ent: Entity) -> WritePlan:
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
                errors.append(FieldError(name, code, Msg("is set by the engine") if code == "readonly"
                                         else Msg("{entity} has no field {field}", entity=ent.name, field=repr(name))))
                continue
            field, coerce, readonly, blank_is_null = entry
            if readonly and not context.system:
                errors.append(FieldError(name, "readonly", Msg("is read-only")))
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

    def apply_option_sets(self, ent: Entity, record: dict, old: dict | None, given: dict) -> None:
        """A picklist option's ``sets``: when a record is created with the option or changes to it,
        the fields it names take its values, unless the write sets them itself. A value the write
        repeats (the stored one on an update, the declared default on a create: what a form posts
        for a field nobody touched) is not setting it."""
        for name, by_option in self.plan(ent).option_sets:
            value = record.get(name)
            if value is None or (old is not None and old.get(name) == value):
                continue
            for target, new in by_option.get(value, ()):
                if target in given and not self._repeated(ent, target, given[target], old):
                    continue
                record[target] = new

    def _repeated(self, ent: Entity, name: str, raw, old: dict | None) -> bool:
        """Whether a value given for ``name`` only repeats what the record holds anyway."""
        field = self.plan(ent).writable.get(name, (None,))[0]
        if field is None:
            return False
        try:
            value = None if raw is None or raw == "" else field.coerce(raw)
        except FieldValueError:
            return False
        if old is not None:
            return old.get(name) == value
        default = field.default if field.default_formula is None else None
        try:
            return value == (None if default is None else field.coerce(default))
        except FieldValueError:
            return False

    def check_required(self, ent: Entity, record: dict, errors: list[FieldError], only: Iterable[str] | None = None) -> None:
        required = self.plan(ent).required
        if only is not None:   # a write refused early: not the fields a later step fills from other records
            required = required - {f.name for f in ent.fields.values() if f.default_lookup is not None}
        for name in required if only is None else (n for n in only if n in required):
            value = record.get(name)
            if value is None or value == "" or value == []:
                errors.append(FieldError(name, "required", Msg("is required")))

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
            self.db.before_commit(conn, lambda: self.execute_many(conn, None, ("audit",), table.insert, pending,
                                                                  AUDIT_KEYS))
        now = datetime.now(timezone.utc)
        kind = {"create": "record_created", "delete": "record_deleted"}[event]
        shown = [f for f in ent.fields.values() if f.stored and not f.prop("encrypted")] if event == "delete" else []
        for record in records:
            detail = {"values": {f.name: jsonable(f, record.get(f.name)) for f in shown}} if shown else {}
            pending.append(dict(at=now, kind=kind, actor_id=context.user_id, ip=None, entity=ent.name,
                                record_id=record.get("id"), detail=detail))

    def history_rows(self, ent: Entity, record_id: int, old: dict, new: dict) -> list[dict]:
        """Field history of an update: one row per tracked field whose value changed."""
        rows = []
        for field in self.plan(ent).tracked:
            before, after = old.get(field.name), new.get(field.name)
            if before != after:
                rows.append({"record_id": record_id, "field": field.name,
                             "old_value": jsonable(field, before), "new_value": jsonable(field, after)})
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
