"""Bulk create / update / upsert through the record service's steps, with batched statements.

Rows are handled in chunks: one query fetches the existing records of a chunk, one checks its
lookups, one per unique field checks collisions, and the writes are one multi-row INSERT and one
executemany UPDATE per set of changed columns. ``atomic`` writes all or nothing; otherwise the
valid items are written and every invalid one is reported with its errors.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.fields import INT64_MAX

from . import exclusive
from . import rollups as rollup_sums
from .context import Context
from .errors import Conflict, FieldError, ValidationFailed
from .values import BulkResult

if TYPE_CHECKING:
    from engine.metadata.model import Entity

    from .records import RecordService

CHUNK = 2000
MODES = ("create", "update", "upsert")


class _Abort(Exception):
    """Leaves the transaction of an atomic bulk call that had errors (rolls it back)."""


def run_bulk(svc: RecordService, ent: Entity, rows: list[dict], *, mode: str, key: str | None,
             atomic: bool, context: Context, conn=None) -> BulkResult:
    """The bulk call, in its own write transaction or, with ``conn``, in a savepoint of that one
    (an atomic call with errors then undoes only its own rows). The write hooks run record by
    record only when a plugin watches the entity (decided once here); otherwise none run."""
    _check_call(ent, rows, mode, key)
    items: list[dict | None] = [None] * len(rows)
    seen_keys: set = set()
    watched = svc.hooks.watches(ent)
    try:
        with svc.db.write(conn) as conn, svc.db.savepoint(conn):
            failed = False
            done: list[tuple[str, dict, dict | None]] = []
            for start in range(0, len(rows), CHUNK):
                chunk = _Chunk(svc, conn, ent, mode, key, context, start, rows[start:start + CHUNK], seen_keys,
                               watched)
                chunk.validate()
                failed = failed or chunk.failed
                if not (atomic and failed):
                    done += chunk.write()
                chunk.report(items)
            if atomic and failed:
                raise _Abort
            after_commit = svc.hooks.for_entity("crm_after_commit", ent) if watched else None
            if done and after_commit is not None:
                svc.db.on_commit(conn, lambda: _after_commit(after_commit, ent, done, context))
    except _Abort:
        for i, item in enumerate(items):
            if item["status"] != "error":
                items[i] = {"index": i, "status": "skipped",
                            "errors": [{"field": None, "code": "atomic", "message": "not written: other items failed"}]}
    return BulkResult(items)


def _after_commit(hook, ent: Entity, done: list, context: Context) -> None:
    for event, record, old in done:
        hook(event=event, entity=ent, record=record, old=old, context=context)


def _check_call(ent: Entity, rows: Any, mode: str, key: str | None) -> None:
    problems = []
    if not isinstance(mode, str) or mode not in MODES:
        problems.append(FieldError("mode", "choice", f"mode must be one of {', '.join(MODES)}"))
    if mode == "upsert" and key is None:
        problems.append(FieldError("key", "required", "upsert needs a key: a unique field"))
    if key is not None and (not isinstance(key, str) or key not in ent.fields or not ent.fields[key].unique):
        problems.append(FieldError("key", "unique", f"key {key!r} must be a unique field of {ent.name}"))
    if not isinstance(rows, list):
        problems.append(FieldError("rows", "type", "rows must be a list of objects"))
    if problems:
        raise ValidationFailed(problems, ent.name)


class _Chunk:
    def __init__(self, svc, conn, ent, mode, key, context, start, rows, seen_keys, watched: bool):
        self.svc, self.conn, self.ent, self.mode, self.key, self.context = svc, conn, ent, mode, key, context
        self.start, self.rows, self.seen_keys, self.watched = start, rows, seen_keys, watched
        self.table = svc.table(ent.name)
        self.errors: list[list[FieldError]] = [[] for _ in rows]
        self.records: list[dict | None] = [None] * len(rows)   # the full record to write
        self.olds: list[dict | None] = [None] * len(rows)      # the stored record, for updates
        self.ids: list[int | None] = [None] * len(rows)
        self.status: list[str] = ["skipped"] * len(rows)

    @property
    def failed(self) -> bool:
        return any(self.errors)

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        svc, ent = self.svc, self.ent
        values_of: list[dict] = []
        for i, row in enumerate(self.rows):
            row = dict(row) if isinstance(row, dict) else row
            rid = row.pop("id", None) if isinstance(row, dict) else None
            values = svc.coerce(ent, row, self.context, self.errors[i])
            if self.context.access is not None and not self.context.system:
                self.errors[i] += self.context.access.write_errors(ent.name, row)
            values_of.append(values)
            self.ids[i] = rid
        hooked = svc.hooks.for_entity("crm_before_write", ent) if self.watched else None
        runner = svc.rule_runner(self.conn, ent, self.context)
        self.states: dict[int, dict] = {}   # id(record) -> the state its before and after hooks share
        # whole records when something besides the input may change them (hooks, formulas, options' sets)
        self.whole = self.watched or runner is not None or bool(svc.plan(ent).option_sets)
        self.values_of = values_of
        existing = self._existing(values_of)
        built: list[tuple[int, str, dict, dict | None]] = []
        for i, values in enumerate(values_of):
            if self.errors[i]:
                continue
            old = self._match(i, values, existing)
            if self.errors[i]:
                continue
            if old is None:
                record = values
                svc.apply_defaults(ent, record)
                built.append((i, "create", record, None))
            else:
                built.append((i, "update", {**old, **values}, old))
        chunk_hook = svc.hooks.for_entity("crm_before_write_chunk", ent) if self.watched else None
        if chunk_hook is not None and built:   # whole-chunk checks first (one query, not one per record)
            items = []
            for i, event, record, old in built:
                self.states[id(record)] = {}
                items.append({"event": event, "record": record, "old": old, "errors": self.errors[i],
                              "state": self.states[id(record)]})
            chunk_hook(entity=ent, items=items, context=self.context, conn=self.conn)
        for i, event, record, old in built:
            if self.errors[i]:   # refused by a chunk hook: its other checks are skipped
                continue
            if hooked:
                state = self.states.setdefault(id(record), {})
                try:
                    hooked(event=event, entity=ent, record=record, old=old, context=self.context, conn=self.conn,
                           errors=self.errors[i], state=state)
                except ValidationFailed as exc:  # a rule refused this item, not the whole request
                    self.errors[i].extend(exc.errors)
                    continue
            svc.apply_option_sets(ent, record, old, self.rows[i] if isinstance(self.rows[i], dict) else {})
            svc.clear_hidden(self.conn, ent, record, old, self.context)
            if runner is not None:
                runner.run(record, old, self.rows[i], self.errors[i])
            svc.check_required(ent, record, self.errors[i])
            self.records[i], self.olds[i] = record, old
        self._check_targets(values_of)
        self._check_unique()
        if svc.plan(ent).exclusive:
            live = [r if not self.errors[i] else None for i, r in enumerate(self.records)]
            for i, error in exclusive.duplicates(ent, svc.plan(ent).exclusive, live, self.olds).items():
                self.errors[i].append(error)

    def _existing(self, values_of: list[dict]) -> dict:
        """Stored records this chunk addresses, by id (update) or by key value (upsert/update by key)."""
        if self.mode == "create":
            return {}
        column = self.key or "id"
        wanted = [v.get(self.key) if self.key else self.ids[i] for i, v in enumerate(values_of)]
        wanted = [w for w in wanted if w is not None and not (isinstance(w, int) and not 0 < w <= INT64_MAX)]
        if not wanted:   # (an id beyond 64 bits is no record: the driver could not even send it; _match says so)
            return {}
        stmt = sa.select(*self._columns_needed(values_of)).where(self.table.c[column].in_(set(wanted)))
        access = None if self.context.system else self.context.access
        visible = access.visibility(self.svc, self.ent.name, self.table) if access is not None else None
        if visible is not None:   # records the caller may not see are not found, never updated
            stmt = stmt.where(visible)
        result = self.conn.execute(stmt)
        names = list(result.keys())
        at = names.index(column)
        return {row[at]: dict(zip(names, row)) for row in result}

    def _columns_needed(self, values_of: list[dict]) -> list[sa.Column]:
        """Hooks see whole records; without hooks an update needs only what it checks and compares."""
        if self.whole:
            return list(self.table.c)
        plan = self.svc.plan(self.ent)
        names = {"id", "version", self.key or "id", *plan.required, *(f.name for f in plan.tracked)}
        names.update(name for key in self.ent.unique_keys for name in key)
        for rollup in self.svc.rollups_of(self.ent):   # which parents an update moves between
            names.update(rollup.reads)
        for flag in plan.exclusive:                     # whether an update newly sets a flag
            names.update((flag.name, flag.prop("exclusive_within")))
        for picklist, by_option in plan.option_sets:    # whether an update changes to an option with sets
            names.add(picklist)
            names.update(target for sets in by_option.values() for target, _ in sets)
        for values in values_of:
            names.update(values)
        return [c for c in self.table.c if c.name in names]

    def _match(self, i: int, values: dict, existing: dict) -> dict | None:
        errors = self.errors[i]
        if self.mode == "create":
            return None
        if self.key:
            ident = values.get(self.key)
            if ident is None:
                errors.append(FieldError(self.key, "required", f"the key {self.key} is required"))
                return None
        else:
            ident = self.ids[i]
            if not isinstance(ident, int) or isinstance(ident, bool):
                errors.append(FieldError("id", "required", "an update needs the record's id (or use a key)"))
                return None
            if not 0 < ident <= INT64_MAX:   # the database could not even compare it with its ids
                errors.append(FieldError("id", "range", f"{ident} is no record id (ids are 1 to 2^63-1)"))
                return None
        if ident in self.seen_keys:
            errors.append(FieldError(self.key or "id", "duplicate", f"{ident!r} appears more than once in this request"))
            return None
        self.seen_keys.add(ident)
        old = existing.get(ident)
        if old is None and self.mode == "update":
            errors.append(FieldError(self.key or "id", "not_found", f"there is no {self.ent.name} {ident!r}"))
        return old

    def _check_targets(self, values_of: list[dict]) -> None:
        live = [i for i, r in enumerate(self.records) if r is not None and not self.errors[i]]
        # New values only: what an update leaves alone was checked when it was written.
        checked = [self.records[i] if self.olds[i] is None else values_of[i] for i in live]
        for pos, error in self.svc.missing_targets(self.conn, self.ent, checked, self.context):
            self.errors[live[pos]].append(error)

    def _check_unique(self) -> None:
        """Unique fields and unique indexes: collisions inside the request and with stored records."""
        for key in self.ent.unique_keys:
            owners: dict[tuple, int] = {}
            for i, record in enumerate(self.records):
                if record is None or self.errors[i]:
                    continue
                value = tuple(record.get(name) for name in key)
                if None in value:
                    continue
                if value in owners:
                    self.errors[i].append(FieldError(key[0], "unique", f"{_show(key, value)} appears more than once in this request"))
                else:
                    owners[value] = i
            if not owners or key == (self.key,):
                continue
            cols = [self.table.c[name] for name in key]
            firsts = list({v[0] for v in owners})
            for start in range(0, len(firsts), 5000):
                stmt = sa.select(self.table.c.id, *cols).where(cols[0].in_(firsts[start:start + 5000]))
                for rid, *stored in self.conn.execute(stmt):
                    i = owners.get(tuple(stored))
                    if i is None:
                        continue
                    old = self.olds[i]
                    if old is None or old["id"] != rid:
                        self.errors[i].append(FieldError(key[0], "unique", f"another {self.ent.name} already has "
                                                                            f"{_show(key, tuple(stored))}"))

    # -- writing ----------------------------------------------------------------------------
    def write(self) -> list[tuple[str, dict, dict | None]]:
        svc, ent, ctx = self.svc, self.ent, self.context
        now = datetime.now(timezone.utc)
        creates = [i for i, r in enumerate(self.records) if r is not None and not self.errors[i] and self.olds[i] is None]
        updates = [i for i, r in enumerate(self.records) if r is not None and not self.errors[i] and self.olds[i] is not None]
        history: list[dict] = []
        done = []
        for field in svc.plan(ent).autonumbers:
            if creates:
                for i, number in zip(creates, svc.next_numbers(self.conn, ent, field, len(creates))):
                    self.records[i][field.name] = number
        if creates:
            system = {"created_at": now, "updated_at": now, "created_by": ctx.user_id, "updated_by": ctx.user_id,
                      "version": 1}
            keys = set().union(*(self.records[i] for i in creates)) | set(system) | {"owner_id"}
            payload = []
            for i in creates:
                record = self.records[i]
                record.update(system)
                record.setdefault("owner_id", ctx.user_id)
                for k in keys:  # executemany needs every row to carry the same keys
                    record.setdefault(k, None)
                payload.append(record)
            for i, rid in zip(creates, svc.insert_many(self.conn, ent, payload, constants=system)):
                self.records[i]["id"] = rid
                self.status[i] = "created"
                done.append(("create", self.records[i], None))
            svc.audit_writes(self.conn, ent, "create", [self.records[i] for i in creates], ctx)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i in updates:
            old, record = self.olds[i], self.records[i]
            candidates = record if self.whole else self.values_of[i]   # without hooks only the input can differ
            changed = tuple(sorted(k for k in candidates
                                   if (k in ent.fields or k == "owner_id") and record[k] != old.get(k)))
            self.ids[i] = old["id"]
            if not changed:
                self.status[i] = "unchanged"
                continue
            groups.setdefault(changed, []).append(i)
        for columns, members in groups.items():
            t = self.table

            def build(t=t, columns=columns):
                return (t.update().where(t.c.id == sa.bindparam("_id"), t.c.version == sa.bindparam("_version"))
                        .values({**{c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in columns},
                                 "version": t.c.version + 1,
                                 "updated_at": sa.bindparam("_now", type_=t.c.updated_at.type),
                                 "updated_by": sa.bindparam("_by", type_=t.c.updated_by.type)}))

            params = []
            for i in members:
                record, old = self.records[i], self.olds[i]
                row = {f"v_{c}": record[c] for c in columns}
                row["_id"], row["_version"] = old["id"], old["version"]
                params.append(row)
            affected = svc.execute_many(self.conn, ent, ("update", t.name, columns), build, params,
                                        constants={"_now": now, "_by": ctx.user_id})
            if affected not in (-1, len(members)):
                raise Conflict(ent.name, "(bulk)", "read", "changed during the request")
            for i in members:
                record = self.records[i]
                record.update(version=self.olds[i]["version"] + 1, updated_at=now, updated_by=ctx.user_id)
                self.status[i] = "updated"
                history += svc.history_rows(ent, record["id"], self.olds[i], record)
                done.append(("update", record, self.olds[i]))
        svc.log_history(self.conn, ent, history, ctx, now)
        if svc.plan(ent).exclusive:
            for _, record, old in done:
                exclusive.clear_others(svc, self.conn, ent, record, old, ctx)
        rollups = svc.rollups_of(ent)
        if rollups and done:   # each affected parent once per chunk
            parents: dict = {}
            for _, record, old in done:
                rollup_sums.affected(rollups, old, record, parents)
            rollup_sums.refresh(svc, self.conn, ent, parents, context=ctx)
        after = svc.hooks.for_entity("crm_after_write", ent) if self.watched else None
        if after is not None:
            for event, record, old in done:
                after(event=event, entity=ent, record=record, old=old, context=ctx, conn=self.conn,
                      state=self.states.get(id(record), {}))
        return done

    def report(self, items: list) -> None:
        for i, errors in enumerate(self.errors):
            index = self.start + i
            if errors:
                items[index] = {"index": index, "status": "error",
                                "errors": [{"field": e.field, "code": e.code, "message": e.message} for e in errors]}
            else:
                rid = self.records[i]["id"] if self.records[i] and "id" in self.records[i] else self.ids[i]
                items[index] = {"index": index, "status": self.status[i], "id": rid}


def _show(key: tuple[str, ...], value: tuple) -> str:
    return " and ".join(f"{k} {v!r}" for k, v in zip(key, value))
