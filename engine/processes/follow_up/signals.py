"""Computing the follow-up signals of followed records with aggregate SQL, and writing them.

For a set of records of a target entity, each way activities reach it (a ``Source``: the
activity's link points at the record, or at a record of a ``via`` entity whose lookup points at
it) is one grouped query over the activity table per 1000 records pointed at::

    SELECT followed.id,
           MAX(CASE WHEN <done_when> THEN <happened_at> END),                               -- last
           MIN(CASE WHEN <planned_when> THEN <happened_at> END),                            -- next
           MAX(CASE WHEN <done_when> AND touched_by = followed.owner_id THEN <happened_at> END)
      FROM activity JOIN [via_entity ON link = via_entity.id JOIN] followed ON ... = followed.id
     WHERE <pointed>.id IN (:ids) AND activity.link IN (:links) GROUP BY followed.id

where the records pointed at are the followed ones, or the via entity's records whose lookup
points at them (read first by that lookup's index), and ``:links`` the link values that are those
records (``contact:12`` for a reference), so the activities are read through the link's index,
never by a scan of their table (PostgreSQL hashed the whole table for a join on the computed
``'contact:' || id`` alone).

The sources' rows are folded per record (latest, earliest, latest), ``owner_touched`` is the
later of that and ``owner_since`` (when the current owner got the record: kept by the write hooks,
the record's ``created_at`` where it is empty), and only the records whose values differ are
written, as bookkeeping (``engine.storage.rollups.write_computed``: no version, history or hooks).
The live path (``writes.py``) and the backfill command call the same ``refresh``, so both give
the same values.
"""

from __future__ import annotations

import weakref
from datetime import date, datetime
from typing import TYPE_CHECKING, Iterable

import sqlalchemy as sa

from engine.fields.relation import Ref
from engine.fields.sqltypes import UtcDateTime
from engine.storage.rollups import write_computed

from .spec import FollowUp, Source

if TYPE_CHECKING:
    from engine.storage.records import RecordService

#: Records recomputed per statement.
CHUNK = 500


def refresh(svc: "RecordService", conn, spec: FollowUp, target: str, ids: Iterable[int]) -> int:
    """Recompute the signals of these records of ``target`` and write those that changed; returns
    how many records changed."""
    ids = sorted({i for i in ids if i is not None})
    changed = 0
    for start in range(0, len(ids), CHUNK):
        changed += _refresh_chunk(svc, conn, spec, target, ids[start:start + CHUNK])
    return changed


def _refresh_chunk(svc, conn, spec: FollowUp, target: str, chunk: list[int]) -> int:
    found: dict[int, list] = {}
    for source in spec.sources[target]:
        stmt = _aggregate(svc, spec, target, source)
        for params in _batches(svc, conn, target, source, chunk):
            for pid, last, nxt, touched in conn.execute(stmt, params):
                seen = found.setdefault(pid, [None, None, None])
                seen[0] = _later(seen[0], last)
                seen[1] = _earlier(seen[1], nxt)
                seen[2] = _later(seen[2], touched)
    fields = spec.targets[target].fields          # signal -> field
    table = svc.table(target)
    columns = [table.c[name] for name in fields.values()]
    rows = []
    for row in conn.execute(sa.select(table.c.id, table.c.created_at, *columns).where(table.c.id.in_(chunk))):
        pid, created, stored = row[0], row[1], dict(zip(fields, row[2:]))
        last, nxt, touched = found.get(pid, (None, None, None))
        since = _moment(stored.get("owner_since")) or created
        values = {"last": last, "next": nxt, "owner_touched": _later(since, touched), "owner_since": since}
        wanted = tuple(_as_column(table.c[fields[s]], values[s]) for s in fields)
        if wanted != tuple(stored.values()):
            rows.append((pid, wanted))
    write_computed(conn, table, list(fields.values()), rows)
    return len(rows)


#: Built statements, per record service (the same for every chunk: the ids are an expanding parameter).
_STATEMENTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _aggregate(svc, spec: FollowUp, target: str, source: Source) -> sa.Select:
    """The grouped query of one source for the records ``:ids`` the activities point at (the
    followed records, or those of the ``via`` entity) and the link values ``:links`` that are them."""
    built = _STATEMENTS.setdefault(svc, {})
    key = (spec.name, target, source)
    if key not in built:
        built[key] = _build(svc, spec, target, source)
    return built[key]


def _batches(svc, conn, target: str, source: Source, chunk: list[int]):
    """The parameters of one source's query for these records: the records themselves, or, through
    a ``via`` entity, its records pointing at them (found first by its indexed lookup, then taken
    by the thousand, however many there are). Each comes with the values the activity's link holds
    for them, so the database reads the activities through their link's index, never the table."""
    entity, ids = target, chunk
    if source.through is not None:
        table = svc.table(source.through)
        entity = source.through
        ids = list(conn.execute(sa.select(table.c.id).where(table.c[source.lookup].in_(chunk))).scalars())
    for start in range(0, len(ids), 1000):
        part = ids[start:start + 1000]
        yield {"ids": part, "links": [Ref(entity, i) for i in part] if source.reference else part}


def _build(svc, spec: FollowUp, target: str, source: Source) -> sa.Select:
    from engine import rules

    act = svc.table(spec.entity)
    scope = rules.Scope(svc.metadata, spec.entity, svc.model, dialect=svc.db.dialect)
    happened = spec.happened.to_sql(scope)
    done, planned = spec.done.where(scope), spec.planned.where(scope)
    followed = svc.table(target).alias("followed")
    link = act.c[source.link]
    ids, links = sa.bindparam("ids", expanding=True), sa.bindparam("links", expanding=True)
    if source.through is None:
        joined = act.join(followed, _points_at(link, source, target, followed))
        pointed = followed
    else:
        pointed = svc.table(source.through).alias("through")
        joined = (act.join(pointed, _points_at(link, source, source.through, pointed))
                  .join(followed, followed.c.id == pointed.c[source.lookup]))
    moment = UtcDateTime()
    own = sa.and_(done, act.c[spec.touched_by] == followed.c.owner_id)
    return (sa.select(followed.c.id,
                      sa.type_coerce(sa.func.max(sa.case((done, happened))), moment),
                      sa.type_coerce(sa.func.min(sa.case((planned, happened))), moment),
                      sa.type_coerce(sa.func.max(sa.case((own, happened))), moment))
            .select_from(joined).where(pointed.c.id.in_(ids), link.in_(links)).group_by(followed.c.id))


def _points_at(link, source: Source, entity: str, table) -> sa.ColumnElement:
    """The activity's link points at the record of ``table`` (an entity of name ``entity``)."""
    if source.reference:
        return link == sa.literal(f"{entity}:", sa.String()) + sa.cast(table.c.id, sa.String())
    return link == table.c.id


def _later(a, b):
    return b if a is None else a if b is None else max(a, b)


def _earlier(a, b):
    return b if a is None else a if b is None else min(a, b)


def _moment(value):
    """A stored date or datetime as a moment (a date is midnight UTC)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        from datetime import time, timezone

        return datetime.combine(value, time(0), tzinfo=timezone.utc)
    return value


def _as_column(column, value):
    """A moment as the target column stores it (a date field keeps the day)."""
    if value is not None and isinstance(column.type, sa.Date):
        return value.date()
    return value
