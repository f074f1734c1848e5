"""Which stored records (and which earlier rows of the same batch) each of some rows duplicates.

``check_many(runtime, entity, rows, access)`` is the one check: the write hook calls it for one row,
the import engine once per chunk. It costs the same few statements for 1 row or 2,000: one read of
the key table for every blocking key of the chunk (in slices of ``IN_SLICE`` keys) and one read of
the candidate records (their title and whether the caller may see them); the scoring of the pairs
that share a key is in Python on the stored normalised forms (``rapidfuzz``), never row against row.

A candidate the caller may not read is counted (``Matches.hidden``) but not named: the user learns
that a duplicate exists (and a block still holds) without learning whose record it is.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .keys import noted
from .spec import DuplicateRule

#: Keys per ``IN (...)`` of the key table (bind parameters stay far below every driver's limit).
IN_SLICE = 5000
#: Candidates named per row, at most (the best first).
LIMIT = 10


@dataclass(frozen=True)
class Candidate:
    """A likely duplicate: a stored record (``id``) or an earlier row of the same batch (``row``)."""

    entity: str
    id: int | None
    title: str | None
    rule: str
    score: float
    action: str
    row: int | None = None

    def as_json(self) -> dict[str, Any]:
        out = {"entity": self.entity, "id": self.id, "title": self.title, "rule": self.rule,
               "score": round(self.score, 3), "action": self.action}
        if self.row is not None:
            out["row"] = self.row
        return out


@dataclass
class Matches:
    """The duplicates of one row: those the caller may read, and how many others there are."""

    candidates: list[Candidate] = field(default_factory=list)
    hidden: int = 0
    hidden_actions: set[str] = field(default_factory=set)

    @property
    def found(self) -> bool:
        return bool(self.candidates or self.hidden)

    @property
    def action(self) -> str | None:
        """``block`` when any matched rule blocks, ``warn`` when some warn, None without matches."""
        actions = {c.action for c in self.candidates} | self.hidden_actions
        return "block" if "block" in actions else "warn" if actions else None


def check_many(runtime, entity: str, rows: list[dict], access=None, *, conn=None, rules=None,
               ids: list[int | None] | None = None, within: bool = True) -> list[Matches]:
    """Per row, the records of ``entity`` it duplicates under the entity's rules (``rules``: only
    these). ``ids``: each row's own id (an update is no duplicate of itself). ``within``: rows of the
    batch are compared with the earlier ones too (two rows of one import file). ``access``: the
    caller's rights (None: every record is named)."""
    from .plugin import service_of

    service = service_of(runtime)
    rules = [r for r in (rules if rules is not None else service.rules_of(entity))]
    out = [Matches() for _ in rows]
    if not rules or not rows:
        return out
    ids = list(ids) if ids is not None else [r.get("id") for r in rows]
    forms = [{rule.name: rule.forms(row) for rule in rules} for row in rows]
    keys = [{rule.name: rule.keys(f[rule.name]) for rule in rules} for f in forms]
    if conn is None:
        with runtime.records.db.read(timeout_ms=30_000) as own:
            return _check(runtime, service, entity, rules, rows, ids, forms, keys, access, own, out, within)
    return _check(runtime, service, entity, rules, rows, ids, forms, keys, access, conn, out, within)


def _check(runtime, service, entity, rules, rows, ids, forms, keys, access, conn, out, within) -> list[Matches]:
    by_name = {r.name: r for r in rules}
    stored = _stored(service.keys, conn, entity, rules, keys)
    note = noted(runtime, conn, entity)   # keys of this transaction's writes, not flushed yet
    if note:
        gone, written, index = note["gone"], note["rows"], note.get("index", {})
        stored = {k: [(rid, f) for rid, f in v if rid not in gone and rid not in written] for k, v in stored.items()}
        for k in {(name, key) for row in keys for name, ks in row.items() for key in ks}:
            if index.get(k):
                stored.setdefault(k, []).extend(index[k].items())
    best: list[dict[int, tuple[float, DuplicateRule]]] = [{} for _ in rows]
    for i in range(len(rows)):
        for name, row_keys in keys[i].items():
            rule = by_name[name]
            for key in row_keys:
                members = [m for m in stored.get((name, key), ()) if m[0] != ids[i]]
                for at, score in rule.match_block(forms[i][name], [m[1] for m in members], key):
                    record_id = members[at][0]
                    before = best[i].get(record_id)
                    # a blocking rule outranks a warning one for the same record
                    if before is None or (rule.action == "block", score) > (before[1].action == "block", before[0]):
                        best[i][record_id] = (score, rule)
    titles = titles_of(runtime, conn, entity, {rid for b in best for rid in b}, access)
    for i, found in enumerate(best):
        for record_id, (score, rule) in sorted(found.items(), key=lambda kv: (-kv[1][0], kv[0])):
            if record_id not in titles:         # deleted since its keys were written
                continue
            visible, title = titles[record_id]
            if visible:
                out[i].candidates.append(Candidate(entity, record_id, title, rule.name, score, rule.action))
            else:
                out[i].hidden += 1
                out[i].hidden_actions.add(rule.action)
        del out[i].candidates[LIMIT:]
    if within:
        _within(rules, entity, keys, forms, out)
    return out


def _stored(table: sa.Table, conn, entity: str, rules, keys) -> dict[tuple[str, str], list[tuple[int, tuple]]]:
    """The stored records sharing a key with some row: ``{(rule, key): [(record_id, forms)]}``."""
    wanted = sorted({k for row in keys for ks in row.values() for k in ks})
    found: dict[tuple[str, str], list] = defaultdict(list)
    names = [r.name for r in rules]
    for start in range(0, len(wanted), IN_SLICE):
        stmt = (sa.select(table.c.rule, table.c.key, table.c.record_id, table.c.forms)
                .where(table.c.entity == entity, table.c.rule.in_(names), table.c.key.in_(wanted[start:start + IN_SLICE])))
        for rule, key, record_id, forms in conn.execute(stmt):
            found[(rule, key)].append((record_id, tuple(json.loads(forms))))
    return found


def titles_of(runtime, conn, entity: str, ids: set[int], access) -> dict[int, tuple[bool, str]]:
    """``{id: (the caller may read it, its title)}`` of the records that still exist."""
    if not ids:
        return {}
    records = runtime.records
    table = records.table(entity)
    ent = runtime.model.entities[entity]
    title_col = table.c.get(ent.title) if ent.title and (access is None or ent.title not in access.hidden(entity)) else None
    visible = None
    if access is not None:
        visible = access.visibility(records, entity, table) if access.can(entity, "read") else sa.false()
    flag = sa.true() if visible is None else sa.case((visible, sa.true()), else_=sa.false())
    cols = [table.c.id, flag.label("visible")] + ([title_col.label("title")] if title_col is not None else [])
    out = {}
    for start in range(0, len(ids), IN_SLICE):
        part = sorted(ids)[start:start + IN_SLICE]
        for row in conn.execute(sa.select(*cols).where(table.c.id.in_(part))):
            title = row.title if title_col is not None and row.title not in (None, "") else f"#{row.id}"
            out[row.id] = (bool(row.visible), str(title))
    return out


def _within(rules, entity: str, keys, forms, out: list[Matches]) -> None:
    """Rows of the batch that duplicate an earlier row (grouped by key: pairs only within a key)."""
    for rule in rules:
        seen: dict[str, list[int]] = defaultdict(list)
        for i, row_keys in enumerate(keys):
            matched: dict[int, float] = {}
            for key in row_keys[rule.name]:
                earlier = seen[key]
                for at, score in rule.match_block(forms[i][rule.name], [forms[j][rule.name] for j in earlier], key):
                    matched[earlier[at]] = max(score, matched.get(earlier[at], 0.0))
                earlier.append(i)
            for j, score in sorted(matched.items()):
                if len(out[i].candidates) < LIMIT:
                    out[i].candidates.append(Candidate(entity, None, None, rule.name, score, rule.action, row=j))
