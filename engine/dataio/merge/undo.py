"""Undoing a merge: the merged records come back with their own ids and values, every reference
the merge moved goes back to the record it pointed at, the children it dropped come back, and the
survivor gets its previous values; one transaction, through the record service.

Refused, with the reason, when the merge's time to undo (``merge: {undo_within:}``) has passed, when
it was undone already, or when the survivor or a moved record changed since the merge (its version
moved: a later edit, or a later merge into the survivor, which must be undone first), since putting
back the old state would silently lose that change. The user needs ``update`` and ``create`` on the
entity, and must be the one who merged (or an administrator).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from engine.fields import INT64_MAX
from engine.security.audit import audit
from engine.storage.context import Context, system_for

from . import store
from .service import MergeError, _version_of


def undo(runtime, merge_id: int, context: Context) -> dict:
    """Undo merge ``merge_id``; returns {entity, survivor (as the caller may see it), restored ids}."""
    records = runtime.records
    table = records.metadata.tables[store.TABLE]
    if isinstance(merge_id, bool) or not isinstance(merge_id, int) or not 0 < merge_id <= INT64_MAX:
        raise MergeError(404, "not-found", f"there is no merge {merge_id}")
    with records.db.write() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == merge_id)).first()
        if row is None:
            raise MergeError(404, "not-found", f"there is no merge {merge_id}")
        ent = runtime.model.entities.get(row.entity)
        _check(row, ent, context)
        snap = store.loads(row.snapshot)
        _check_unchanged(records, conn, row, snap)
        system = system_for(context)
        before = store.decode_row(ent, snap["survivor"])
        current = records.lock_rows(conn, ent, [row.survivor_id])[row.survivor_id]
        merged = [store.decode_row(ent, m) for m in snap["merged"]]
        later = _restore_survivor(records, conn, ent, before, current, set(row.merged_ids), system)
        records.restore(ent.name, merged, context=system, conn=conn)
        for item in snap["dropped"]:
            child = runtime.model.entity(item["entity"])
            records.restore(child.name, [store.decode_row(child, item["row"])], context=system, conn=conn)
        _move_back(runtime, conn, snap["moved"], system)
        if later:
            records.update(ent.name, row.survivor_id, later, context=system, conn=conn)
        now = datetime.now(timezone.utc)
        conn.execute(table.update().where(table.c.id == merge_id).values(undone_at=now, undone_by=context.user_id))
        audit(records, "merge_undone", user_id=context.user_id, entity=ent.name, record_id=row.survivor_id, conn=conn,
              detail={"merge": merge_id, "survivor": row.survivor_id, "restored": list(row.merged_ids),
                      "moved_back": len(snap["moved"]), "dropped_restored": len(snap["dropped"])})
    survivor = records.get(ent.name, row.survivor_id, context=context)
    return {"entity": ent.name, "survivor": survivor, "restored": list(row.merged_ids)}


def last_merge(runtime, entity: str, survivor_id: int, user_id: int | None) -> dict | None:
    """The latest merge into this survivor that can still be undone (for the record page's Undo)."""
    table = runtime.records.metadata.tables[store.TABLE]
    with runtime.db.read() as conn:
        row = conn.execute(sa.select(table.c.id, table.c.undo_until, table.c.merged_by, table.c.merged_ids)
                           .where(table.c.entity == entity, table.c.survivor_id == survivor_id,
                                  table.c.undone_at.is_(None)).order_by(table.c.id.desc()).limit(1)).first()
    if row is None or row.undo_until <= datetime.now(timezone.utc):
        return None
    return {"id": row.id, "undo_until": row.undo_until, "merged_by": row.merged_by, "merged_ids": row.merged_ids}


def _check(row, ent, context: Context) -> None:
    if ent is None:
        raise MergeError(409, "gone", f"merge {row.id} was of entity {row.entity!r}, which the model no longer has")
    access = None if context.system else context.access
    if access is not None:
        access.require(ent.name, "update")
        access.require(ent.name, "create")
        if not access.admin and row.merged_by != context.user_id:
            raise MergeError(403, "forbidden", f"merge {row.id} was made by another user; only they or an "
                                               "administrator may undo it")
    if row.undone_at is not None:
        raise MergeError(409, "undone", f"merge {row.id} was undone already")
    if row.undo_until <= datetime.now(timezone.utc):
        raise MergeError(409, "too-late", f"merge {row.id} can no longer be undone: the time to undo it ended at "
                                          f"{row.undo_until.isoformat(timespec='minutes')}")


def _check_unchanged(records, conn, row, snap: dict) -> None:
    """Every record the merge wrote last must still have the version it left it with."""
    wanted: dict[str, dict[int, int]] = {}
    for key, version in snap["versions"].items():
        name, _, rid = key.rpartition(":")
        wanted.setdefault(name, {})[int(rid)] = version
    changed = []
    for name, versions in wanted.items():
        now = _version_of(records, conn, name, sorted(versions))
        for rid, version in sorted(versions.items()):
            if now.get(rid) != version:
                changed.append(f"{name} {rid} " + ("was deleted" if rid not in now else
                                                   f"changed (version {version}, now {now[rid]})"))
    if changed:
        shown = "; ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise MergeError(409, "changed", f"merge {row.id} cannot be undone: changed since the merge: {shown}")


def _restore_survivor(records, conn, ent, before: dict, current: dict, merged: set[int], system) -> dict:
    """Give the survivor its previous values (those a person writes; computed ones follow), except
    lookups to the merged records, which exist again only later: those are returned, to write then."""
    values, later = {}, {}
    for f in ent.fields.values():
        if not f.stored or f.type.computed or before.get(f.name) == current.get(f.name):
            continue
        (later if f.target == ent.name and before.get(f.name) in merged else values)[f.name] = before.get(f.name)
    if before.get("owner_id") != current.get("owner_id"):
        values["owner_id"] = before.get("owner_id")
    if values:
        records.update(ent.name, current["id"], values, context=system, conn=conn)
    return later


def _move_back(runtime, conn, moved: list[dict], system) -> None:
    """Each moved record gets back the values the merge changed (its pointer, a cleared flag)."""
    by_entity: dict[str, list[dict]] = {}
    for item in moved:
        child = runtime.model.entity(item["entity"])
        by_entity.setdefault(child.name, []).append({"id": item["id"], **store.decode_row(child, item["set"])})
    for name, rows in by_entity.items():
        result = runtime.records.bulk(name, rows, mode="update", context=system, conn=conn)
        if not result.ok:
            bad = next(i for i in result.items if i["status"] == "error")
            raise MergeError(409, "move-back-refused", f"{name} {rows[bad['index']]['id']} cannot move back: "
                                                       + "; ".join(e["message"] for e in bad["errors"]))
