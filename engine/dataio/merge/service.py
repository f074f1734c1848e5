"""Merging records: one survivor keeps, per field, the value the user chose among the records; every
lookup and reference to the merged records, in every entity of the model, moves to the survivor; the
merged records are deleted. One transaction, every write through the record service (field history,
rollups, exclusive flags, write hooks and the audit hold as for any write); the merge is kept in
``_crm_merge`` so that ``undo.undo`` can put everything back.

Who may merge: a user whose role allows ``update`` and ``delete`` on the entity (there is no separate
merge right: a merge changes the survivor and deletes the others, nothing more), who can see every
record (its scope), and none of them read-only for them (``crm_record_lock``: pending approval,
converted). The children move as system writes on the user's behalf: moving a contact to the
surviving account is the consequence of the merge, not an edit of the contact, so the user need not
have rights on every child entity (as a delete's ``on_delete: set_null`` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from engine.security.audit import audit
from engine.storage.context import Context, system_for
from engine.storage.errors import NotFound, Refused

from . import store
from .references import Pointer, counts, referrers
from .spec import MAX_RECORDS, mergeable, undo_within


class MergeError(Refused):
    """A merge (or its undo) refused (``Refused``: the HTTP status, a kind, a message that says why)."""

    def __init__(self, status: int, kind: str, message: str, field: str | None = None):
        super().__init__(status, kind, message, field=field)


@dataclass
class Merged:
    """What a merge did: the survivor as the caller may see it, and what moved."""

    merge_id: int
    survivor: dict
    merged_ids: list[int]
    moved: list[dict] = field(default_factory=list)     # {entity, field, count}
    dropped: list[dict] = field(default_factory=list)   # {entity, id}: children that duplicated one of the survivor's
    undo_until: datetime | None = None


def merge(runtime, entity: str, survivor_id: int, merged_ids: list[int], choices: dict[str, int] | None,
          context: Context) -> Merged:
    """Merge ``merged_ids`` into ``survivor_id``; ``choices``: {field: id of the record whose value the
    survivor keeps} (a field not named keeps the survivor's value)."""
    records = runtime.records
    ent = _entity(runtime, entity)
    ids = _check_ids(ent, survivor_id, merged_ids)
    access = None if context.system else context.access
    if access is not None:
        access.require(ent.name, "update")
        access.require(ent.name, "delete")
    choices = _check_choices(ent, access, choices or {}, ids)
    system = system_for(context)
    with records.db.write() as conn:
        rows = _lock(runtime, conn, ent, ids, access)
        before = rows[survivor_id]
        values = {name: rows[rid][name] for name, rid in choices.items()
                  if rid != survivor_id and rows[rid][name] != before.get(name)}
        values.update(_self_pointers(ent, {**before, **values}, ids))
        moves = _Moves(records, conn, ent, survivor_id, merged_ids, system)
        moves.plan()
        moves.run()
        _free_unique(records, conn, ent, values, rows, survivor_id, system)
        _unlink_merged(records, conn, ent, rows, merged_ids, system)
        for mid in merged_ids:
            records.delete(ent.name, mid, context=context, conn=conn)
        if values:
            records.update(ent.name, survivor_id, values, context=context, conn=conn)
        now = datetime.now(timezone.utc)
        until = now + undo_within(ent)
        snapshot = {"survivor": store.encode_row(ent, before),
                    "merged": [store.encode_row(ent, rows[m]) for m in merged_ids],
                    "dropped": moves.dropped_rows(), "moved": moves.moved,
                    "versions": _versions(records, conn, ent, survivor_id, moves.moved)}
        table = records.metadata.tables[store.TABLE]
        merge_id = conn.execute(table.insert().values(
            entity=ent.name, survivor_id=survivor_id, merged_ids=list(merged_ids), merged_by=context.user_id,
            merged_at=now, undo_until=until, snapshot=store.dumps(snapshot)).returning(table.c.id)).scalar_one()
        summary = moves.summary()
        audit(records, "record_merged", user_id=context.user_id, entity=ent.name, record_id=survivor_id, conn=conn,
              detail={"merge": merge_id, "survivor": survivor_id, "merged": list(merged_ids), "moved": summary,
                      "dropped": [{"entity": e, "id": i} for e, i in moves.dropped],
                      "fields": sorted(values)})
    survivor = records.get(ent.name, survivor_id, context=context)
    return Merged(merge_id, survivor, list(merged_ids), summary,
                  [{"entity": e, "id": i} for e, i in moves.dropped], until if undo_within(ent) else None)


def preview(runtime, entity: str, ids: list[int], context: Context) -> dict:
    """The records side by side (as the caller may read them), which fields differ and may be chosen,
    and how many records of each entity point at each (what would move: those the caller may see by
    entity and field, the others as one number per record, ``hidden_references``, since the merge
    moves them too)."""
    records = runtime.records
    ent = _entity(runtime, entity)
    if len(set(ids)) < 2 or len(set(ids)) > MAX_RECORDS:
        raise MergeError(422, "validation", f"give 2 to {MAX_RECORDS} different record ids to merge", "ids")
    ids = list(dict.fromkeys(ids))
    access = None if context.system else context.access
    rows = [records.get(ent.name, i, context=context) for i in ids]
    choosable = set(choosable_fields(ent, access))
    hidden = access.hidden(ent.name) if access is not None else frozenset()
    fields = [{"name": f.name, "label": dict(f.label.texts), "choosable": f.name in choosable,
               "differs": len({_key(r.get(f.name)) for r in rows}) > 1}
              for f in ent.fields.values() if f.name not in hidden]
    with records.db.read() as conn:
        found = {i: counts(records, conn, ent.name, [i], access) for i in ids}
        locks = {i: lock_reason(runtime, ent, r, access) for i, r in zip(ids, rows)}
    return {"entity": ent.name, "records": rows, "fields": fields, "references": {i: f[0] for i, f in found.items()},
            "hidden_references": {i: f[1] for i, f in found.items()}, "locks": locks, "max_records": MAX_RECORDS}


def choosable_fields(ent, access) -> list[str]:
    """Fields whose value the user may choose from a merged record: stored values a person writes
    (not computed, read-only or system), which the user's role may read and change."""
    out = []
    for f in ent.fields.values():
        if not f.stored or f.readonly or f.type_name == "autonumber":
            continue
        if access is not None and access.write_errors(ent.name, {f.name: None}):
            continue
        out.append(f.name)
    return out


def lock_reason(runtime, ent, record: dict, access) -> str | None:
    """Why ``record`` is read-only for the user now (``crm_record_lock``: pending approval, converted...).
    The hooks answer in the request's language, so they are asked within a request only; elsewhere
    (CLI, jobs) the plugins' write hooks still refuse what a lock forbids."""
    from flask import has_request_context

    if access is None or not has_request_context():
        return None
    return next((why for why in runtime.pm.hook.crm_record_lock(runtime=runtime, entity=ent, record=record,
                                                                 access=access) if why), None)


# -- checks ------------------------------------------------------------------------------------------

def _entity(runtime, name: str):
    ent = runtime.model.entities.get(name)
    if ent is None:
        raise MergeError(404, "not-found", f"there is no entity {name!r}")
    if not mergeable(ent):
        raise MergeError(422, "not-mergeable", f"records of {name} cannot be merged")
    return ent


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** 63


def _check_ids(ent, survivor_id: Any, merged_ids: Any) -> list[int]:
    if not _is_id(survivor_id):
        raise MergeError(422, "validation", "survivor must be the id of the record that stays", "survivor")
    if not isinstance(merged_ids, list) or not merged_ids or not all(_is_id(i) for i in merged_ids):
        raise MergeError(422, "validation", "merged must be a list of the ids of the records merged into the survivor",
                         "merged")
    if survivor_id in merged_ids:
        raise MergeError(422, "self", f"{ent.name} {survivor_id} cannot be merged into itself", "merged")
    if len(set(merged_ids)) != len(merged_ids):
        raise MergeError(422, "validation", "merged names a record twice", "merged")
    if 1 + len(merged_ids) > MAX_RECORDS:
        raise MergeError(422, "too-many", f"at most {MAX_RECORDS} records can be merged at once "
                                          f"(the survivor and {MAX_RECORDS - 1} others)", "merged")
    return [survivor_id, *merged_ids]


def _check_choices(ent, access, choices: Any, ids: list[int]) -> dict[str, int]:
    if not isinstance(choices, dict):
        raise MergeError(422, "validation", "choices must be an object {field: id of the record whose value to keep}",
                         "choices")
    allowed = set(choosable_fields(ent, access))
    hidden = access.hidden(ent.name) if access is not None else frozenset()
    for name, rid in choices.items():
        if name not in ent.fields or name in hidden:
            raise MergeError(422, "unknown", f"{ent.name} has no field {name!r}", f"choices.{name}")
        if name not in allowed:
            raise MergeError(422, "not-choosable", f"{name} cannot be chosen: it is computed, read-only or not "
                                                   "yours to change", f"choices.{name}")
        if rid not in ids:
            raise MergeError(422, "validation", f"choices.{name} must be the id of one of the merged records "
                                                f"({', '.join(map(str, ids))})", f"choices.{name}")
    return dict(choices)


def _lock(runtime, conn, ent, ids: list[int], access) -> dict[int, dict]:
    """The records, locked for this transaction; each must exist, be visible and not read-only."""
    records = runtime.records
    rows = records.lock_rows(conn, ent, ids)
    for rid in ids:
        if rid not in rows:
            raise NotFound(ent.name, rid)
        if access is not None:
            access.ensure_visible(records, conn, ent.name, rid)
        why = lock_reason(runtime, ent, rows[rid], access)
        if why:
            raise MergeError(409, "locked", f"{ent.name} {rid} cannot be merged: {why}")
    return rows


def _key(value: Any) -> Any:
    return str(value) if isinstance(value, (dict, list)) else value


def _self_pointers(ent, survivor: dict, ids: list[int]) -> dict[str, None]:
    """The survivor's lookups to its own entity that would point at itself after the merge, cleared."""
    return {f.name: None for f in ent.fields.values()
            if f.stored and f.target == ent.name and survivor.get(f.name) in ids}


def _free_unique(records, conn, ent, values: dict, rows: dict, survivor_id: int, system: Context) -> None:
    """A unique value the survivor takes from a merged record is cleared there first (the index
    would refuse two records holding it, even for the moment before the merged one goes)."""
    for name, value in values.items():
        if value is None or not ent.fields[name].unique:
            continue
        for rid, row in rows.items():
            if rid != survivor_id and row.get(name) == value:
                records.update(ent.name, rid, {name: None}, context=system, conn=conn)


def _unlink_merged(records, conn, ent, rows: dict, merged_ids: list[int], system: Context) -> None:
    """Merged records pointing at each other (a parent account merged with its child) let go first,
    so deleting one does not cascade to, or be restricted by, another that is going too."""
    for mid in merged_ids:
        links = {f.name: None for f in ent.fields.values()
                 if f.stored and f.target == ent.name and rows[mid].get(f.name) in merged_ids}
        if links:
            records.update(ent.name, mid, links, context=system, conn=conn)


def _versions(records, conn, ent, survivor_id: int, moved: list[dict]) -> dict:
    """The versions the survivor and each moved record have as the merge commits."""
    out = {f"{ent.name}:{survivor_id}": _version_of(records, conn, ent.name, [survivor_id])[survivor_id]}
    by_entity: dict[str, set[int]] = {}
    for item in moved:
        by_entity.setdefault(item["entity"], set()).add(item["id"])
    for name, ids in by_entity.items():
        out.update({f"{name}:{i}": v for i, v in _version_of(records, conn, name, sorted(ids)).items()})
    return out


def _version_of(records, conn, entity: str, ids: list[int]) -> dict[int, int]:
    table = records.table(entity)
    out = {}
    for start in range(0, len(ids), 1000):
        out.update(conn.execute(sa.select(table.c.id, table.c.version)
                                .where(table.c.id.in_(ids[start:start + 1000]))).all())
    return out


class _Moves:
    """The references to the merged records and their move to the survivor: one bulk update per
    pointing field. Exclusive flags (one primary per parent) keep the survivor's own (a moved child
    loses its flag when the survivor already has one); a child whose unique key would then repeat one
    of the survivor's children (the same campaign member twice) is deleted instead, and kept for undo."""

    def __init__(self, records, conn, ent, survivor_id: int, merged_ids: list[int], system: Context):
        self.records, self.conn, self.ent, self.system = records, conn, ent, system
        self.survivor_id, self.merged_ids = survivor_id, merged_ids
        self.updates: list[tuple[Pointer, list[dict]]] = []
        self.moved: list[dict] = []             # {entity, id, field, from, set: {field: old value}}
        self.dropped: list[tuple[str, int]] = []
        self._dropped_rows: list[dict] = []

    def plan(self) -> None:
        skip = {(self.ent.name, i) for i in (self.survivor_id, *self.merged_ids)}
        for pointer, points in referrers(self.records, self.conn, self.ent.name, self.merged_ids):
            child_ids = [i for i in points if (pointer.entity, i) not in skip]
            if child_ids:
                self._plan_pointer(pointer, child_ids, points)

    def _plan_pointer(self, pointer: Pointer, child_ids: list[int], points: dict[int, int]) -> None:
        child = self.records.model.entity(pointer.entity)
        table = self.records.table(child.name)
        target = pointer.value(self.ent.name, self.survivor_id)
        flags = [f.name for f in child.fields.values()
                 if f.type_name == "boolean" and f.prop("exclusive_within") == pointer.field]
        keys = [k for k in child.unique_keys if pointer.field in k]
        columns = {c for k in keys for c in k} | set(flags)
        rows = {r.id: r._mapping for r in self.conn.execute(
            sa.select(table.c.id, *(table.c[c] for c in columns)).where(table.c.id.in_(child_ids)))}
        taken = self._survivor_children(table, pointer, target, keys, flags)
        out = []
        for cid in sorted(child_ids):
            row = rows[cid]
            if any(self._clash(k, pointer, row, taken) for k in keys):
                self._drop(child, cid)
                continue
            update: dict = {"id": cid, pointer.field: target}
            old: dict = {pointer.field: pointer.value(self.ent.name, points[cid])}
            for flag in flags:
                if row[flag] is True:
                    if flag in taken["flags"]:
                        update[flag], old[flag] = False, True
                    else:
                        taken["flags"].add(flag)
            for k in keys:
                taken[k].add(tuple(row[c] for c in k if c != pointer.field))
            out.append(update)
            self.moved.append({"entity": child.name, "id": cid, "field": pointer.field, "set": store.encode_row(
                child, old)})
        if out:
            self.updates.append((pointer, out))

    def _survivor_children(self, table, pointer: Pointer, target, keys, flags) -> dict:
        """What the survivor's own children already hold: their unique keys and their set flags."""
        column = table.c[pointer.field]
        taken: dict = {"flags": set()}
        for k in keys:
            others = [c for c in k if c != pointer.field]
            taken[k] = {tuple(r) for r in self.conn.execute(
                sa.select(*(table.c[c] for c in others)).where(column == target))} if others else set()
            if not others and self.conn.execute(sa.select(table.c.id).where(column == target).limit(1)).first():
                taken[k].add(())
        for flag in flags:
            if self.conn.execute(sa.select(table.c.id).where(column == target, table.c[flag].is_(True))
                                 .limit(1)).first():
                taken["flags"].add(flag)
        return taken

    @staticmethod
    def _clash(key: tuple, pointer: Pointer, row, taken: dict) -> bool:
        rest = tuple(row[c] for c in key if c != pointer.field)
        return None not in rest and rest in taken[key]

    def _drop(self, child, cid: int) -> None:
        table = self.records.table(child.name)
        row = dict(self.conn.execute(sa.select(table).where(table.c.id == cid)).first()._mapping)
        self._dropped_rows.append({"entity": child.name, "row": store.encode_row(child, row)})
        self.dropped.append((child.name, cid))

    def run(self) -> None:
        for name, cid in self.dropped:
            self.records.delete(name, cid, context=self.system, conn=self.conn)
        for pointer, rows in self.updates:
            result = self.records.bulk(pointer.entity, rows, mode="update", context=self.system, conn=self.conn)
            if not result.ok:
                bad = next(i for i in result.items if i["status"] == "error")
                errors = "; ".join(f"{e['field']}: {e['message']}" if e.get("field") else e["message"]
                                   for e in bad["errors"])
                raise MergeError(422, "move-refused", f"{pointer.entity} {rows[bad['index']]['id']} cannot move to "
                                                      f"{self.ent.name} {self.survivor_id}: {errors}",
                                 f"{pointer.entity}.{pointer.field}")

    def dropped_rows(self) -> list[dict]:
        return self._dropped_rows

    def summary(self) -> list[dict]:
        return [{"entity": p.entity, "field": p.field, "count": len(rows)} for p, rows in self.updates]


__all__ = ["MergeError", "Merged", "choosable_fields", "lock_reason", "merge", "preview"]
