"""The metadata of duplicate rules: the ``duplicate_rule`` document kind compiled into frozen
``DuplicateRule`` objects, and every problem of a declaration (an unknown entity or field, a field
that holds no text, an unknown normaliser or region) as a ``Problem`` at its path in the document.

```yaml
duplicate_rule: account_name
of: account
label: {en: Similar account name, zh: 相似的客户名称}
match: all                  # all conditions must hold (any: one is enough)
conditions:
  - {field: name, by: company_name, fuzzy: 0.9}   # similarity 0..1 (rapidfuzz); without it: exact
  - {field: billing_city, by: text}
action: warn                # warn: the user may save anyway (audited); block: refused
region: CN                  # phones written without a country code are read in this region
```

A rule also says how it is stored: ``keys(record)`` are the record's blocking keys (the normalised
value of an exact condition, the first and last characters of a fuzzy one; for ``all`` one key per
combination, for ``any`` one per condition) and ``forms(record)`` the normalised values compared.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import phonenumbers

from engine import matching
from engine.metadata.declared import DocProblem as Problem
from engine.metadata.declared import compile_documents
from engine.metadata.model import AppModel, Label

ACTIONS = ("block", "warn")
#: Field types whose values the normalisers read.
TEXT_TYPES = ("text", "email", "phone", "url", "textarea")
#: A stored key is at most this long (longer ones are stored as their hash: equal values, equal keys).
KEY_LENGTH = 190
SEP = "\x1f"


@dataclass(frozen=True)
class Condition:
    field: str
    by: str                          # a normaliser of engine.matching
    fuzzy: float | None = None       # None: exact
    region: str | None = None        # phones: the field's own region (its ``region:`` prop), unless the rule names one

    def score(self, a: str, b: str) -> float:
        """How well two normalised values agree under this condition (0..1; 0 when either is blank)."""
        if not a or not b:
            return 0.0
        if self.fuzzy is None:
            return 1.0 if a == b else 0.0
        return matching.fuzzy(a, b)

    def holds(self, a: str, b: str) -> bool:
        return self.score(a, b) >= (self.fuzzy or 1.0)


@dataclass(frozen=True)
class DuplicateRule:
    name: str
    label: Label
    entity: str
    conditions: tuple[Condition, ...]
    match: str = "all"               # all | any
    action: str = "warn"             # block | warn
    region: str | None = None

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(c.field for c in self.conditions)

    @property
    def exact(self) -> bool:
        """Every condition exact: records sharing a key are duplicates without scoring."""
        return all(c.fuzzy is None for c in self.conditions)

    def forms(self, record: dict) -> tuple[str, ...]:
        """The normalised values of the record's compared fields, one per condition."""
        return tuple(matching.normalise(c.by, record.get(c.field), self.region or c.region) for c in self.conditions)

    def keys(self, forms: tuple[str, ...]) -> list[str]:
        """Blocking keys of a record with these normalised values (none when it cannot match)."""
        parts = [[] if not f else [f] if c.fuzzy is None else matching.block_keys(f)
                 for c, f in zip(self.conditions, forms)]
        if self.match == "all":
            if not all(parts):
                return []
            keys = [SEP.join(combo) for combo in itertools.product(*parts)]
        else:
            keys = [f"{i}{SEP}{k}" for i, ks in enumerate(parts) for k in ks]
        return sorted({_short(k) for k in keys})

    def score(self, a: tuple[str, ...], b: tuple[str, ...]) -> float:
        """How alike two records are under this rule (0: not duplicates). ``all``: the weakest of the
        conditions, each of which must hold; ``any``: the best of those that hold."""
        scores = [c.score(x, y) if c.holds(x, y) else 0.0 for c, x, y in zip(self.conditions, a, b)]
        if self.match == "all":
            return min(scores) if all(scores) else 0.0
        return max(scores)


    def match_block(self, forms: tuple[str, ...], members: list[tuple], key: str) -> list[tuple[int, float]]:
        """``(index, score)`` of the ``members`` (normalised forms) sharing ``key`` with ``forms`` that
        this rule matches. What the key already says is not compared again: an ``all`` key holds the
        exact values, an ``any`` key names its condition. One fuzzy condition left is scored for the
        whole block at once (``matching.fuzzy_many``); the hits are then checked in full."""
        if self.match == "any":
            free = [int(key.split(SEP, 1)[0])] if SEP in key else list(range(len(self.conditions)))
        else:
            free = [i for i, c in enumerate(self.conditions) if c.fuzzy is not None]
        fuzzy = [i for i in free if self.conditions[i].fuzzy is not None]
        if len(fuzzy) == 1:
            k = fuzzy[0]
            hits = matching.fuzzy_many(forms[k], [m[k] for m in members], self.conditions[k].fuzzy)
            if not key.startswith("#") and len(free) == 1:   # the key holds every other condition
                return hits
            indexes = [i for i, _ in hits]
        else:
            indexes = range(len(members))
        return [(i, score) for i in indexes if (score := self.score(forms, members[i]))]


def _short(key: str) -> str:
    if len(key) <= KEY_LENGTH:
        return key
    return "#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def compile_rules(model: AppModel) -> tuple[dict[str, DuplicateRule], list[Problem]]:
    """Every ``duplicate_rule`` document as a ``DuplicateRule``, and the problems of those that do not compile."""
    return compile_documents("duplicate_rule", model, lambda doc, problem: _compile(model, doc, problem))


def rules_of(rules: dict[str, DuplicateRule], entity: str) -> list[DuplicateRule]:
    return [r for r in rules.values() if r.entity == entity]


def _compile(model: AppModel, doc: dict, problem) -> DuplicateRule | None:
    ent = model.entities.get(doc["of"])
    if ent is None:
        problem(("of",), f"there is no entity {doc['of']!r}")
        return None
    conditions = []
    for j, cond in enumerate(doc.get("conditions") or ()):
        fld = ent.fields.get(cond["field"])
        if fld is None or not fld.stored:
            problem(("conditions", j, "field"), f"{ent.name} has no stored field {cond['field']!r}")
            continue
        if fld.type_name not in TEXT_TYPES:
            problem(("conditions", j, "field"), f"{ent.name}.{fld.name} is a {fld.type_name}; duplicate rules "
                                                f"compare text fields ({', '.join(TEXT_TYPES)})")
            continue
        if fld.prop("encrypted"):
            problem(("conditions", j, "field"), f"{ent.name}.{fld.name} is encrypted: its normalised value "
                                                f"would be stored in clear in the key table")
            continue
        by = cond.get("by", "text")
        if by not in matching.NORMALISERS:
            problem(("conditions", j, "by"), f"there is no normaliser {by!r} (normalisers: "
                                             f"{', '.join(sorted(matching.NORMALISERS))})")
            continue
        threshold = cond.get("fuzzy")
        if threshold is not None and by in ("email", "phone"):
            problem(("conditions", j, "fuzzy"), f"{by} values are compared exactly; fuzzy applies to names and text")
            continue
        field_region = fld.prop("region") if by == "phone" else None
        conditions.append(Condition(fld.name, by, None if threshold is None else float(threshold),
                                    str(field_region).upper() if field_region else None))
    if len({c.field for c in conditions}) != len(conditions):
        problem(("conditions",), "a field is compared twice")
    region = doc.get("region")
    if region is not None and region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        problem(("region",), f"{region!r} is no region phonenumbers knows (an ISO 3166 code such as CN, US, DE)")
    if not conditions:
        return None
    return DuplicateRule(doc["duplicate_rule"], Label.of(doc.get("label"), doc["duplicate_rule"]), ent.name,
                         tuple(conditions), doc.get("match", "all"), doc.get("action", "warn"),
                         region.upper() if region else None)
