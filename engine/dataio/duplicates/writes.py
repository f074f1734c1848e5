"""The duplicate rules' part of every write, attached to the record service through its lifecycle
hooks (``DuplicateWrites`` is registered per runtime as ``"duplicates.writes"``).

* Before a create, or an update that changes a compared value, by a user (``context.access`` set,
  not a system write): ``check_many`` on the one record. A ``block`` match raises ``DuplicateFound``;
  a ``warn`` match too, unless the writer said ``Context(duplicates="allow")``: then the write goes
  on and is audited (``duplicate_override``, with the candidates). ``duplicates="checked"``: the
  caller checked already (the import engine, per chunk), nothing is read.
* A bulk write (``records.bulk``: imports, the API's bulk endpoint) checks each chunk at once
  (``crm_before_write_chunk``: one ``check_many`` for the chunk's creates, 2 to 3 statements for
  2,000 records instead of one query per record), with the same outcome per record; the
  per-record hook then skips the records of that chunk.
* After a write, the record's keys are noted in the transaction and written just before it commits
  (``flush``: one DELETE of the replaced keys, one SELECT of which noted records still exist, one
  multi-row INSERT, per 5,000 records): a bulk write of 2,000 leads costs three statements for its
  keys, not one per lead. A check later in the same transaction sees the noted keys too.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from engine.plugins import hookimpl
from engine.storage.errors import DuplicateFound

from .check import check_many
from .keys import PENDING, changed, key_rows, note_rows

SLICE = 5000
#: In a write's ``state``: its bulk chunk was checked at once, the per-record hook skips it.
CHECKED = "duplicates.checked"


class DuplicateWrites:
    """Hook implementations checking and indexing the entities that have duplicate rules."""

    def __init__(self, runtime: Any, service: Any):
        self.runtime, self.service = runtime, service

    @hookimpl
    def crm_watches_writes(self, entity: Any) -> bool:
        return bool(self.service.rules_of(entity.name))

    @hookimpl
    def crm_before_write_chunk(self, entity: Any, items: list, context: Any, conn: Any) -> None:
        """A bulk write's chunk, checked at once: one ``check_many`` per set of compared rules (every
        create of a chunk shares one), the same outcome per record as ``crm_before_write`` gives it."""
        groups: dict[tuple, list[dict]] = {}
        for item in items:
            rules = self._rules_to_check(item["event"], entity, item["record"], item["old"], context)
            item["state"][CHECKED] = True
            if rules:
                groups.setdefault(tuple(r.name for r in rules), []).append((item, rules))
        for members in groups.values():
            rules = members[0][1]
            found = check_many(self.runtime, entity.name, [item["record"] for item, _ in members], context.access,
                               conn=conn, rules=rules, ids=[item["record"].get("id") for item, _ in members],
                               within=False)
            for (item, _), matches in zip(members, found):
                try:
                    self._verdict(entity, rules, matches, context, item["state"])
                except DuplicateFound as exc:
                    item["errors"].extend(exc.errors)

    @hookimpl
    def crm_before_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any, conn: Any,
                         state: dict) -> None:
        if state.get(CHECKED):   # its bulk chunk was checked at once (crm_before_write_chunk)
            return
        rules = self._rules_to_check(event, entity, record, old, context)
        if not rules:
            return
        matches = check_many(self.runtime, entity.name, [record], context.access, conn=conn, rules=rules,
                             ids=[record.get("id")], within=False)[0]
        self._verdict(entity, rules, matches, context, state)

    def _rules_to_check(self, event: str, entity: Any, record: dict, old: dict | None, context: Any) -> list:
        """The rules a write must be checked against (none for a delete, a system write, a caller
        that checked already, or an update that changes no compared value)."""
        rules = self.service.rules_of(entity.name)
        if event == "delete" or not rules or context.system or context.access is None:
            return []
        if context.duplicates == "checked" or not changed(rules, record, old):
            return []
        if event == "update":
            rules = [r for r in rules if r.forms(record) != r.forms(old)]
        return rules

    @staticmethod
    def _verdict(entity: Any, rules: list, matches: Any, context: Any, state: dict) -> None:
        """Raise ``DuplicateFound`` for a match the write may not pass; note an allowed warning."""
        if not matches.found:
            return
        fields = tuple(c.field for r in rules for c in r.conditions)
        labels = {r.name: dict(r.label.texts) for r in rules}
        error = DuplicateFound(entity.name, [{**c.as_json(), "rule_label": labels[c.rule]} for c in matches.candidates],
                               matches.hidden, matches.action, fields)
        if matches.action == "block" or context.duplicates != "allow":
            raise error
        state["duplicates.override"] = error

    @hookimpl
    def crm_after_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any, conn: Any,
                        state: dict) -> None:
        rules = self.service.rules_of(entity.name)
        if not rules:
            return
        note = self._pending(conn, entity.name)
        if event == "delete":
            note_rows(note, record["id"], None, replaced=True)
        elif event == "create" or changed(rules, record, old):
            note_rows(note, record["id"], key_rows(entity.name, rules, record), replaced=event == "update")
        override = state.get("duplicates.override")
        if override is not None:
            from engine.security.audit import audit

            audit(self.runtime.records, "duplicate_override", user_id=context.user_id, entity=entity.name,
                  record_id=record["id"], conn=conn,
                  detail={"action": event, "candidates": override.candidates, "hidden": override.hidden})

    def _pending(self, conn, entity: str) -> dict:
        db = self.runtime.records.db
        cache = db.txn_cache(conn)
        pending = cache.get(PENDING)
        if pending is None:
            pending = cache[PENDING] = {}
            db.before_commit(conn, lambda: self.flush(conn, pending))
        return pending.setdefault(entity, {"rows": {}, "gone": set()})

    def flush(self, conn, pending: dict) -> None:
        """Write the noted keys: the replaced and deleted records' keys out, the new ones in (only for
        records that still exist: a savepoint that failed took its records with it)."""
        table = self.service.keys
        for entity, note in pending.items():
            gone = sorted(note["gone"])
            for start in range(0, len(gone), SLICE):
                conn.execute(table.delete().where(table.c.entity == entity,
                                                  table.c.record_id.in_(gone[start:start + SLICE])))
            ids = sorted(note["rows"])
            records = self.runtime.records.table(entity)
            for start in range(0, len(ids), SLICE):
                part = ids[start:start + SLICE]
                alive = {r[0] for r in conn.execute(sa.select(records.c.id).where(records.c.id.in_(part)))}
                rows = [row for rid in part if rid in alive for row in note["rows"][rid]]
                if rows:
                    conn.execute(table.insert(), rows)
        pending.clear()
