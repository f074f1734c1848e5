"""Rollup fields inside the record service: keeping a parent's aggregates of its children current.

Every rollup field is compiled once into a ``Rollup`` attached to its *child* entity
(``rollups_of``); a child entity that no rollup reads gets an empty tuple and its writes do no
rollup work at all. When a child is created, changed in a field a rollup reads (the lookup, the
aggregated field, a field of ``where``) or deleted, the affected parents (the old and the new
one when a child moves) are recomputed in the write's transaction with one aggregate query::

    SELECT lookup, FUNCTION(field) FROM child WHERE lookup IN (:parents) AND <where> GROUP BY lookup

and the parents whose values change are written through the record service's own update path as a
system write for the writer (``propagate``): each parent row is locked first (so two concurrent
child writes on one parent serialize and the second aggregates the first's committed child), its
stored formulas and ``follows`` fields that read the rollups are recomputed in the order of the
model's dependency graph (``engine.rules.dependencies``), its ``version``, ``updated_at`` and field
history move (so ETags and optimistic concurrency see the change), its hooks run, and its own
change reaches its parent's rollups in turn. Bulk writes recompute each affected parent once per
chunk. ``write_computed`` stays the bookkeeping write of values nothing else reads (follow-up signals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import sqlalchemy as sa

if TYPE_CHECKING:
    from engine.metadata.model import Entity, Field

    from .context import Context
    from .records import RecordService


@dataclass(frozen=True, eq=False)   # hashed by identity: one per rollup field
class Rollup:
    parent: "Entity"
    field: "Field"                  # the rollup field of the parent
    lookup: str                     # the child's lookup pointing at the parent
    function: str                   # COUNT | SUM | MIN | MAX
    value: str | None               # the child field aggregated (None for COUNT)
    where: Any                      # the compiled condition on the child, or None
    reads: frozenset[str]           # child fields whose change can change the value


def rollups_of(svc: "RecordService", child: "Entity") -> tuple[Rollup, ...]:
    """The rollups that aggregate records of ``child`` (computed once per entity)."""
    from engine import rules

    out = []
    for parent in svc.model.entities.values():
        for field in parent.fields.values():
            if field.type_name != "rollup":
                continue
            child_name, _, lookup = field.prop("of").partition(".")
            if child_name != child.name:
                continue
            where = None
            reads = {lookup}
            if field.prop("where"):
                where = rules.compile(field.prop("where"), child.name, svc.model, registry=svc.functions)
                reads.update(where.fields)
            value = field.prop("field") if field.prop("function") != "COUNT" else None
            if value:
                reads.add(value)
            out.append(Rollup(parent, field, lookup, field.prop("function"), value, where, frozenset(reads)))
    return tuple(out)


def affected(rollups: Iterable[Rollup], old: dict | None, new: dict | None,
             into: dict[Rollup, set] | None = None) -> dict[Rollup, set]:
    """Parent ids whose rollups a child write changes: ``old``/``new`` are the child before and
    after (None for a create / a delete)."""
    into = {} if into is None else into
    for r in rollups:
        if old is not None and new is not None and all(old.get(k) == new.get(k) for k in r.reads):
            continue
        for rec in (old, new):
            pid = rec.get(r.lookup) if rec is not None else None
            if pid is not None:
                into.setdefault(r, set()).add(pid)
    return into


def refresh(svc: "RecordService", conn, child: "Entity", parents: dict[Rollup, set],
            skip: set | None = None, context: "Context | None" = None) -> None:
    """Recompute the rollups for the given parent ids and write the parents whose values change
    through the record service (``propagate``). ``skip`` holds (entity, id) pairs being deleted anyway."""
    by_entity: dict[str, dict[Rollup, list]] = {}
    for r, ids in parents.items():
        ids = sorted(i for i in ids if not skip or (r.parent.name, i) not in skip)
        if ids:
            by_entity.setdefault(r.parent.name, {})[r] = ids
    for name, rollups in by_entity.items():
        parent = svc.model.entities[name]
        ids = sorted({i for found in rollups.values() for i in found})
        olds = svc.lock_rows(conn, parent, ids)   # before aggregating: a concurrent writer's lines are then committed
        changes: dict[int, dict] = {}
        for r, wanted in rollups.items():
            for pid, value in aggregates(svc, conn, child, r, [i for i in wanted if i in olds]).items():
                if olds[pid].get(r.field.name) != value:
                    changes.setdefault(pid, {})[r.field.name] = value
        propagate(svc, conn, parent, {pid: changes[pid] for pid in sorted(changes)}, olds, context)


def _statement(svc: "RecordService", key: tuple, build):
    """A statement built once per service (the hot path of every child write)."""
    found = svc._statements.get(key)
    if found is None:
        found = svc._statements[key] = build()
    return found


def aggregates(svc: "RecordService", conn, child: "Entity", r: Rollup, ids: list) -> dict[Any, Any]:
    """The value of rollup ``r`` for each parent of ``ids``: one aggregate query per 1000 parents."""
    timeless = r.where is None or "now" not in r.where.uses   # a where reading TODAY() is built each time
    stmt = (_statement(svc, ("aggregate", r.field.name, r.parent.name), lambda: _aggregate_statement(svc, child, r))
            if timeless else _aggregate_statement(svc, child, r))
    zero = r.field.type.zero(r.field)
    out: dict[Any, Any] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        found = {pid: value for pid, value in conn.execute(stmt, {"ids": chunk})}
        out.update({pid: zero if found.get(pid) is None else found[pid] for pid in chunk})
    return out


def _aggregate_statement(svc: "RecordService", child: "Entity", r: Rollup):
    """``SELECT lookup, FUNCTION(field) FROM child WHERE lookup IN :ids AND <where> GROUP BY lookup``."""
    from engine import rules

    child_table = svc.table(child.name)
    key = child_table.c[r.lookup]
    if r.function == "COUNT":
        agg = sa.func.count(child_table.c.id)
    else:
        value_column = child_table.c[r.value]   # read back as the column reads its values
        agg = sa.type_coerce(getattr(sa.func, r.function.lower())(value_column), value_column.type)
    stmt = sa.select(key, agg).where(key.in_(sa.bindparam("ids", expanding=True))).group_by(key)
    if r.where is not None:
        scope = rules.Scope(svc.metadata, child.name, svc.model, dialect=svc.db.dialect,
                            now=datetime.now(timezone.utc))
        stmt = scope.apply(stmt.where(r.where.where(scope)))
    return stmt


def propagate(svc: "RecordService", conn, parent: "Entity", changes: dict[Any, dict], olds: dict[Any, dict],
              context: "Context | None") -> None:
    """Write new rollup values to their parents as a system write for the writer: the parent's
    formulas and ``follows`` that read them are recomputed, its version, ``updated_at`` and field
    history move, its hooks run, and its own change reaches the grandparent's rollups the same way."""
    from .context import Context, system_for

    system = system_for(context or Context())
    for pid, values in changes.items():
        record, old = svc._update(conn, parent, pid, {}, None, system, old=olds[pid], computed=values)
        if record is not old:
            svc._after_commit(conn, "update", parent, record, old, system)


def write_computed(conn, table: sa.Table, columns: Sequence[str], rows: Iterable[tuple[Any, Sequence]]) -> None:
    """Write values the engine computes (rollups, follow-up signals) straight to rows: ``rows`` are
    ``(id, values)`` with one value per column. Bookkeeping, not an edit: no ``version`` bump, no
    ``updated_at``, no field history, no hooks. One executemany statement."""
    params = [{"_pid": pid, **{f"_v{i}": v for i, v in enumerate(values)}} for pid, values in rows]
    if not params:
        return
    update = (table.update().where(table.c.id == sa.bindparam("_pid"))
              .values({c: sa.bindparam(f"_v{i}", type_=table.c[c].type) for i, c in enumerate(columns)}))
    conn.execute(update, params)


def after_write(svc: "RecordService", conn, child: "Entity", old: dict | None, new: dict | None,
                skip: set | None = None, context: "Context | None" = None) -> None:
    """One child write: recompute the parents it touches (nothing when no rollup reads ``child``)."""
    rollups = svc.rollups_of(child)
    if rollups:
        parents = affected(rollups, old, new)
        if parents:
            refresh(svc, conn, child, parents, skip, context)
