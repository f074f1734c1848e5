"""The key table ``_crm_duplicate_key``: each record's blocking keys under each rule of its entity.

Kept by the write hooks in the write's own transaction: a create inserts its keys (one multi-row
INSERT, so one statement per record whatever the number of rules), an update that changes none of
the compared values costs nothing, one that does deletes and inserts (two), a delete deletes (one).
Records written before a rule existed (or by a path without hooks) are indexed by ``backfill``: it
reads them in id order in batches, and starts again from the first record when the entity's rules
changed (their ``signature``); the scan runs it first, so its groups are never stale.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa

from .spec import DuplicateRule

BATCH = 5000
#: The write transaction's note of keys to write: {entity: {"rows": {record_id: [rows]}, "gone": {ids}}}.
PENDING = "duplicates.pending"


def key_rows(entity: str, rules: list[DuplicateRule], record: dict) -> list[dict]:
    rows = []
    for rule in rules:
        forms = rule.forms(record)
        text = json.dumps(forms, ensure_ascii=False)
        rows += [{"entity": entity, "rule": rule.name, "record_id": record["id"], "key": key, "forms": text}
                 for key in rule.keys(forms)]
    return rows


def changed(rules: list[DuplicateRule], record: dict, old: dict | None) -> bool:
    """Whether an update changes any compared value (normalised: "ACME Ltd" -> "Acme" changes nothing)."""
    return old is None or any(rule.forms(record) != rule.forms(old) for rule in rules)


def index(conn, table: sa.Table, entity: str, rules: list[DuplicateRule], records: list[dict], *,
          replace: bool) -> int:
    """Write the keys of ``records`` (``replace``: their old keys go first); the number of key rows."""
    if replace and records:
        conn.execute(table.delete().where(table.c.entity == entity,
                                          table.c.record_id.in_([r["id"] for r in records])))
    rows = [row for record in records for row in key_rows(entity, rules, record)]
    if rows:
        conn.execute(table.insert(), rows)
    return len(rows)


def unindex(conn, table: sa.Table, entity: str, record_id: int) -> None:
    conn.execute(table.delete().where(table.c.entity == entity, table.c.record_id == record_id))


def signature(rules: list[DuplicateRule]) -> str:
    """What the keys depend on: the rules' names, conditions, match and region (not labels nor actions)."""
    text = repr(sorted((r.name, r.match, r.region, r.conditions) for r in rules))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def backfill(runtime, service, entity: str, *, batch: int = BATCH, progress=None) -> int:
    """Index the records of ``entity`` the key table does not have yet; the number indexed. Rules
    changed since the last backfill (or removed): the entity's keys are rebuilt from the start."""
    rules = service.rules_of(entity)
    keys, state = service.keys, service.state
    sign = signature(rules)
    db = runtime.records.db
    with db.write() as conn:
        row = conn.execute(sa.select(state.c.signature, state.c.upto).where(state.c.entity == entity)).first()
        if row is None or row.signature != sign:
            conn.execute(keys.delete().where(keys.c.entity == entity))
            conn.execute(state.delete().where(state.c.entity == entity))
            conn.execute(state.insert().values(entity=entity, signature=sign, upto=0))
            upto = 0
        else:
            upto = row.upto
    if not rules:
        return 0
    table = runtime.records.table(entity)
    cols = [table.c.id, *(table.c[f] for f in sorted({f for r in rules for f in r.fields}))]
    done = 0
    while True:
        with db.write() as conn:
            records = [dict(r._mapping) for r in conn.execute(
                sa.select(*cols).where(table.c.id > upto).order_by(table.c.id).limit(batch))]
            if not records:
                return done
            index(conn, keys, entity, rules, records, replace=True)
            upto = records[-1]["id"]
            conn.execute(state.update().where(state.c.entity == entity, state.c.signature == sign).values(upto=upto))
        done += len(records)
        if progress is not None:
            progress(done)


def noted(runtime, conn, entity: str) -> dict | None:
    """The note of ``conn``'s write transaction for ``entity`` (keys written by it and not flushed
    yet), or None: ``rows`` {record_id: key rows}, ``gone`` {record ids whose stored keys no longer
    hold} and ``index`` {(rule, key): {record_id: forms}}, kept up to date by ``note_rows`` so that a
    check in a bulk write of thousands of records reads only the keys it needs (not every note)."""
    info = getattr(conn, "info", {})
    return ((info.get("crm.txn") or {}).get(PENDING) or {}).get(entity) or None


def note_rows(note: dict, record_id: int, rows: list[dict] | None, *, replaced: bool) -> None:
    """Record in ``note`` the key rows of a record written in this transaction (None: deleted);
    ``replaced``: its stored keys (if any) no longer hold."""
    index = note.setdefault("index", {})
    for row in note["rows"].pop(record_id, ()):
        index.get((row["rule"], row["key"]), {}).pop(record_id, None)
    if replaced:
        note["gone"].add(record_id)
    if rows is not None:
        note["rows"][record_id] = rows
        for row in rows:
            index.setdefault((row["rule"], row["key"]), {})[record_id] = tuple(json.loads(row["forms"]))
