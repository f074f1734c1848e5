"""Matching: which existing records look like the same company or person as some given values.

Shared by the capabilities that must not create a second copy of a customer: the conversion of a
lead proposes the accounts and contacts it may be attached to; duplicate rules (data quality) are
to reuse the same normalisers and search.

* Normalisers (``NORMALISERS``) turn a value into the form two values are compared in:
  ``company_name`` (case, width, punctuation and legal suffixes: "ACME, Inc." = "Acme"; "华为技术
  有限公司" = "华为技术"), ``email`` (trimmed, lower case), ``phone`` (its digits, compared on the last
  eight so a country prefix does not matter), ``name`` (a person's name: case, width, accents,
  punctuation, word order), ``text`` (case, width, spaces).
* ``find_candidates(records, entity, rules, access=...)`` looks in two steps: a bound-parameter SQL
  prefilter per rule (equality on a lower-cased e-mail; a LIKE on the most distinctive word of a
  name; a LIKE on a phone's last digits), limited to the records ``access`` may read, then scoring
  in Python. It returns ranked ``Candidate`` objects, each with the rules that matched and a score.

Scoring uses the standard library's ``difflib`` on the normalised forms: it runs on at most a few
hundred prefiltered rows, so a faster fuzzy-matching library would buy nothing measurable here.

Duplicate rules (``engine/dataio/duplicates``) compare many more values, so they use the stored
forms of ``normalise(by, value, region=)`` (a phone in E.164 through ``phonenumbers``, with the
rule's default region for numbers written without a country code), blocking keys
(``block_keys``: which stored values are worth comparing at all) and ``fuzzy`` (``rapidfuzz``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from rapidfuzz import fuzz, process

from engine.fields.text import e164 as fields_e164

__all__ = ["NORMALISERS", "Candidate", "Reason", "Rule", "block_keys", "company_name", "e164", "email",
           "find_candidates", "fuzzy", "fuzzy_many", "name", "normalise", "phone", "similarity", "text"]

#: Legal forms dropped from the end of a company's name (compared after normalising, so "Co." is "co").
LEGAL_SUFFIXES = (
    "股份有限公司", "有限责任公司", "有限公司", "集团公司", "公司",
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc", "llp", "lp", "plc",
    "gmbh", "ag", "kg", "sa", "sas", "sarl", "srl", "spa", "bv", "nv", "ab", "oy", "as", "pty", "kk", "pte",
)
_SUFFIX_WORDS = frozenset(s for s in LEGAL_SUFFIXES if s.isascii())
_CJK_SUFFIXES = tuple(s for s in LEGAL_SUFFIXES if not s.isascii())
_PUNCT = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACES = re.compile(r"\s+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
#: A match must score at least this much (0..1) to be proposed.
THRESHOLD = 0.85
#: Rows read per rule by the SQL prefilter, at most.
PREFILTER_LIMIT = 200


def _fold(value: Any) -> str:
    """Full-width to half-width (NFKC), lower case, accents off."""
    text = unicodedata.normalize("NFKC", str(value or "")).casefold()
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def text(value: Any) -> str:
    return _SPACES.sub(" ", _fold(value)).strip()


def email(value: Any) -> str:
    return _fold(value).strip()


def phone(value: Any) -> str:
    """The digits of a phone number (a leading ``+`` or ``00`` prefix and the formatting dropped)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", str(value or "")) if ch.isdigit())


def company_name(value: Any) -> str:
    words = _SPACES.sub(" ", _PUNCT.sub(" ", _fold(value))).strip()
    changed = True
    while changed and words:
        changed = False
        for suffix in _CJK_SUFFIXES:
            if words.endswith(suffix) and len(words) > len(suffix):
                words, changed = words[: -len(suffix)].strip(), True
        parts = words.split(" ")
        if len(parts) > 1 and parts[-1] in _SUFFIX_WORDS:
            words, changed = " ".join(parts[:-1]), True
    return words


def name(value: Any) -> str:
    """A person's name with its words sorted, so "Doe, Jane" = "jane doe"."""
    return " ".join(sorted(_SPACES.sub(" ", _PUNCT.sub(" ", _fold(value))).split()))


NORMALISERS: dict[str, Callable[[Any], str]] = {
    "company_name": company_name, "email": email, "phone": phone, "name": name, "text": text,
}


def e164(value: Any, region: str | None = None) -> str:
    """A phone number in E.164 (``+8613800138000``) when ``phonenumbers`` can read it (with ``region``,
    an ISO country code, for numbers written without one), else its digits (``phone``): two spellings
    of the same valid number give the same string, with or without the country code. The one E.164
    function of the engine, ``engine.fields.text.e164``, read leniently (its fast path for plainly
    written numbers included)."""
    return fields_e164(unicodedata.normalize("NFKC", str(value or "")), region, strict=False)


def normalise(by: str, value: Any, region: str | None = None) -> str:
    """The form duplicate rules store and compare ``value`` in, normalised ``by`` (phones in E.164)."""
    if by == "phone":
        return e164(value, region)
    return NORMALISERS[by](value)


#: Characters of a normalised value that make one blocking key (CJK characters carry more: fewer).
BLOCK_WIDTH = 4
BLOCK_WIDTH_CJK = 2


def block_keys(value: str) -> list[str]:
    """Blocking keys of a normalised value for fuzzy comparison: its first and its last few characters
    (spaces off). Two values are compared only when they share a key, so a typo in one half of a name
    is still found through the other half; a value shorter than a key is its own key."""
    compact = value.replace(" ", "")
    if not compact:
        return []
    width = BLOCK_WIDTH_CJK if _CJK.match(compact) else BLOCK_WIDTH
    if len(compact) <= width * 2:
        return ["=" + compact]
    return ["<" + compact[:width], ">" + compact[-width:]]


def fuzzy(a: str, b: str) -> float:
    """How alike two normalised values are, 0..1: ``rapidfuzz``'s normalised Indel similarity of their
    words in sorted order ("acme trading" = "trading acme"; "acme tradng" 0.96)."""
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    return fuzz.token_sort_ratio(a, b, processor=None) / 100.0


def fuzzy_many(value: str, choices: list[str], threshold: float) -> list[tuple[int, float]]:
    """``(index, score)`` of the ``choices`` at least ``threshold`` (0..1) alike ``value`` as ``fuzzy``
    scores them, computed in rapidfuzz's C loop (a block of thousands costs milliseconds)."""
    if not value:
        return []
    found = process.extract(value, choices, scorer=fuzz.token_sort_ratio, processor=None,
                            score_cutoff=threshold * 100.0, limit=None)
    return [(index, score / 100.0) for _, score, index in found if choices[index]]


def similarity(by: str, a: Any, b: Any) -> float:
    """How alike two values are (0..1) once normalised by ``by``."""
    norm = NORMALISERS[by]
    x, y = norm(a), norm(b)
    if not x or not y:
        return 0.0
    if by == "email":
        return 1.0 if x == y else 0.0
    if by == "phone":
        if min(len(x), len(y)) < 6:
            return 0.0
        return 1.0 if x[-8:] == y[-8:] else 0.0
    if x == y:
        return 1.0
    return SequenceMatcher(None, x, y, autojunk=False).ratio()


@dataclass(frozen=True)
class Rule:
    """Compare ``field`` of the candidates with ``value`` (normalised ``by``)."""

    field: str
    value: Any
    by: str


@dataclass(frozen=True)
class Reason:
    field: str
    by: str
    score: float


@dataclass
class Candidate:
    id: int
    record: dict
    score: float = 0.0
    reasons: list[Reason] = field(default_factory=list)

    def as_json(self) -> dict:
        return {"id": self.id, "score": round(self.score, 3),
                "reasons": [{"field": r.field, "by": r.by, "score": round(r.score, 3)} for r in self.reasons]}


def find_candidates(records, entity: str, rules: Iterable[Rule], *, access=None, conn=None,
                    limit: int = 5, threshold: float = THRESHOLD) -> list[Candidate]:
    """Records of ``entity`` that match at least one of ``rules``, best first (at most ``limit``),
    among those ``access`` may read (None: all)."""
    rules = [r for r in rules if NORMALISERS[r.by](r.value)]
    if not rules or (access is not None and not access.can(entity, "read")):
        return []
    if conn is None:
        with records.db.read(timeout_ms=10_000) as conn:
            return find_candidates(records, entity, rules, access=access, conn=conn, limit=limit,
                                   threshold=threshold)
    table = records.table(entity)
    visible = access.visibility(records, entity, table) if access is not None else None
    found: dict[int, Candidate] = {}
    for rule in rules:
        condition = _prefilter(table.c[rule.field], rule)
        if condition is None:
            continue
        stmt = sa.select(table).where(condition, *(() if visible is None else (visible,))).limit(PREFILTER_LIMIT)
        for row in conn.execute(stmt):
            record = dict(row._mapping)
            score = similarity(rule.by, rule.value, record.get(rule.field))
            if score < threshold:
                continue
            cand = found.setdefault(record["id"], Candidate(record["id"], record))
            if all(r.field != rule.field for r in cand.reasons):
                cand.reasons.append(Reason(rule.field, rule.by, score))
    for cand in found.values():   # two rules that agree make a stronger match than either alone
        miss = 1.0
        for reason in cand.reasons:
            miss *= 1.0 - min(reason.score, 0.999)
        cand.score = 1.0 - miss
    return sorted(found.values(), key=lambda c: (-c.score, c.id))[:limit]


def _prefilter(col, rule: Rule):
    """A cheap SQL condition every row the rule could match satisfies (bound parameters only)."""
    value = NORMALISERS[rule.by](rule.value)
    if rule.by == "email":
        return sa.func.lower(sa.func.trim(col)) == value
    if rule.by == "phone":
        if len(value) < 6:
            return None
        # formatting may sit between the digits ("+1 555-0100"): a wildcard between each of the last four
        return col.like("%" + "%".join(value[-4:]) + "%")
    token = _distinctive(value)
    if not token:
        return None
    escaped = token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(col).like(f"%{escaped}%", escape="\\")


def _distinctive(value: str) -> str:
    """The longest word of a normalised name; for a name in Chinese (no spaces) its first two characters."""
    words = sorted(value.split(), key=len, reverse=True)
    if not words:
        return ""
    word = words[0]
    if _CJK.match(word):
        return word[:2]
    return word
