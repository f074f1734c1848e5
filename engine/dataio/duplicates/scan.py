"""The duplicate scan: groups of records of an entity that its rules say are likely the same.

Never row against row: per rule, the database groups the key table by key (``GROUP BY key HAVING
COUNT(*) > 1``, joined to the records the caller may read), and only records sharing a key are
compared, on their stored normalised forms, a member against the rest of its block at once in
rapidfuzz's C loop (``DuplicateRule.match_block``). Every pair of a block up to ``PAIRWISE`` members
is compared; in a larger block
(a very common first word) each record is compared with its ``WINDOW`` neighbours in sorted order
(the sorted-neighbourhood method), so the cost stays linear in the block. Pairs that match are
joined into groups (union-find): A~B and B~C make one group of three.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.storage.errors import PermissionDenied

from .spec import DuplicateRule

PAIRWISE = 2000
WINDOW = 20


@dataclass
class Group:
    """Records ``ids`` a rule matched together; ``score``: the weakest link that joined them (0..1)."""

    entity: str
    rule: str
    ids: list[int]
    score: float
    titles: dict[int, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "rule": self.rule, "score": round(self.score, 3),
                "records": [{"id": i, "title": self.titles.get(i)} for i in self.ids]}


def duplicate_groups(runtime, entity: str, access=None, *, rule: str | None = None, backfill: bool = True) -> list[Group]:
    """Every group of likely duplicates of ``entity`` among the records ``access`` may read (None:
    all), the most alike first. ``backfill``: index records the key table lacks first."""
    from .keys import backfill as fill
    from .plugin import service_of

    service = service_of(runtime)
    if access is not None and not access.can(entity, "read"):
        raise PermissionDenied(entity, "read")
    if backfill:
        fill(runtime, service, entity)
    groups: list[Group] = []
    with runtime.records.db.read(timeout_ms=600_000) as conn:
        for r in service.rules_of(entity):
            if rule is None or r.name == rule:
                groups += _rule_groups(runtime, service.keys, conn, entity, r, access)
    groups.sort(key=lambda g: (-g.score, g.ids[0]))
    seen: set[tuple[int, ...]] = set()
    unique = []
    for grp in groups:   # the same records found by two rules: shown once, under the stronger match
        if tuple(grp.ids) not in seen:
            seen.add(tuple(grp.ids))
            unique.append(grp)
    return unique


def _rule_groups(runtime, keys: sa.Table, conn, entity: str, rule: DuplicateRule, access) -> list[Group]:
    table = runtime.records.table(entity)
    visible = access.visibility(runtime.records, entity, table) if access is not None else None
    where = [keys.c.entity == entity, keys.c.rule == rule.name, *(() if visible is None else (visible,))]
    joined = keys.join(table, table.c.id == keys.c.record_id)
    blocks = (sa.select(keys.c.key).select_from(joined).where(*where)
              .group_by(keys.c.key).having(sa.func.count() > 1).subquery())
    members = (sa.select(keys.c.key, keys.c.record_id, keys.c.forms)
               .select_from(joined.join(blocks, blocks.c.key == keys.c.key)).where(*where)
               .order_by(keys.c.key, keys.c.record_id))
    links = _Links()
    block: list[tuple[int, tuple]] = []
    current = None
    for key, record_id, forms in conn.execute(members):
        if key != current:
            _compare(rule, current, block, links)
            block, current = [], key
        block.append((record_id, tuple(json.loads(forms))))
    _compare(rule, current, block, links)
    return [Group(entity, rule.name, ids, score) for ids, score in links.groups()]


def _compare(rule: DuplicateRule, key: str, block: list[tuple[int, tuple]], links: _Links) -> None:
    if len(block) < 2:
        return
    if rule.exact and not key.startswith("#"):   # the key is the compared values: all of them match
        for rid, _ in block[1:]:
            links.join(block[0][0], rid, 1.0)
        return
    if len(block) > PAIRWISE:   # sorted neighbourhood: each member against the next WINDOW ones
        block = sorted(block, key=lambda m: m[1])
    forms = [m[1] for m in block]
    for i in range(len(block) - 1):
        end = len(block) if len(block) <= PAIRWISE else min(len(block), i + 1 + WINDOW)
        for at, score in rule.match_block(forms[i], forms[i + 1:end], key):
            links.join(block[i][0], block[i + 1 + at][0], score)


class _Links:
    """Union-find over record ids, keeping each group's weakest joining score."""

    def __init__(self):
        self.parent: dict[int, int] = {}
        self.score: dict[int, float] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, a: int, b: int, score: float) -> None:
        ra, rb = self.find(a), self.find(b)
        low = min(score, self.score.get(ra, 1.0), self.score.get(rb, 1.0))
        if ra != rb:
            self.parent[rb] = ra
        self.score[ra] = low

    def groups(self) -> list[tuple[list[int], float]]:
        members: dict[int, list[int]] = defaultdict(list)
        for x in self.parent:
            members[self.find(x)].append(x)
        return [(sorted(ids), self.score.get(root, 1.0)) for root, ids in members.items() if len(ids) > 1]


def with_titles(runtime, entity: str, groups: list[Group], access=None) -> list[Group]:
    """Fill the titles of ``groups`` (one read for all of them: call it on a page, not on 50,000 groups)."""
    from .check import titles_of

    ids = {i for g in groups for i in g.ids}
    with runtime.records.db.read() as conn:
        titles = titles_of(runtime, conn, entity, ids, access)
    for g in groups:
        g.titles = {i: titles[i][1] for i in g.ids if i in titles}
    return groups
