"""The data-quality report of one entity, within the caller's record scope.

* **Completeness**: for each field the caller may read, how many records hold a value, counted by the
  database in one statement (``COUNT(col)``; a blank text counts as empty) over the records the
  caller may see.
* **Invalid values**: the text-like fields (text, e-mail, phone, URL) read back in pages by id and
  given to their field type's coercion as a write would: a value it refuses is *invalid* (e.g. an
  e-mail stored before e-mail validation), a value it would change is *not normalised* (a phone not
  yet in E.164, a name with spaces around it). At most ``MAX_SCAN`` records are read per report.
* **Duplicate groups**: from the duplicates part (``engine.dataio.duplicates.quality_groups``) when it
  provides them; None otherwise (the page then shows no such panel).

Who may see it: admins, and users whose role may both ``read`` and ``import`` the entity (those who
load data are those who clean it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from engine.fields.base import FieldValueError
from engine.metadata.model import Entity

#: Records read per report to find invalid values (the counts say how many were checked).
MAX_SCAN = 20_000
#: Ids kept per field to link to the records with invalid or unnormalised values.
SAMPLE = 50
PAGE = 1_000
CHECKED_TYPES = ("text", "email", "phone", "url")

__all__ = ["Fill", "Invalid", "QualityReport", "may_check", "quality_report"]


@dataclass(frozen=True)
class Fill:
    """How many of ``total`` records hold a value in ``field``."""

    field: str
    filled: int
    total: int

    @property
    def percent(self) -> float:
        return round(100.0 * self.filled / self.total, 1) if self.total else 100.0


@dataclass
class Invalid:
    """Values of ``field`` today's rules refuse (``invalid``) or would change (``unnormalised``),
    among ``checked`` values read; ``ids``: some of those records; ``reasons``: the first messages."""

    field: str
    checked: int = 0
    invalid: int = 0
    unnormalised: int = 0
    invalid_ids: list[int] = field(default_factory=list)
    unnormalised_ids: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class QualityReport:
    entity: str
    total: int
    fills: list[Fill]
    invalid: list[Invalid]
    scanned: int
    complete_scan: bool
    duplicates: list[dict] | None


def may_check(access, entity: str) -> bool:
    """Whether the data-quality report of ``entity`` is for this user."""
    return bool(getattr(access, "admin", False)) or (access.can(entity, "read") and access.can(entity, "import"))


def quality_report(runtime, ent: Entity, access, context) -> QualityReport:
    """The report of ``ent`` over the records ``access`` may see, with the fields it may read."""
    records = runtime.records
    hidden = access.hidden(ent.name)
    stored = [f for f in ent.fields.values() if f.stored and not f.type.computed and f.name not in hidden]
    table = records.table(ent.name)
    visible = access.visibility(records, ent.name, table)
    total, fills = _completeness(records, table, visible, [*(f.name for f in stored), "owner_id"],
                                 {f.name for f in stored if f.type_name in ("text", "textarea", "email", "phone", "url",
                                                                            "multipicklist")})
    checked = [f for f in stored if f.type_name in CHECKED_TYPES and not f.prop("encrypted")]
    invalid, scanned = _invalid(records, table, visible, checked)
    return QualityReport(ent.name, total, fills, invalid, scanned, scanned >= total,
                         _duplicates(runtime, ent.name, context))


def _completeness(records, table, visible, names: list[str], texts: set[str]) -> tuple[int, list[Fill]]:
    def filled(name):
        col = table.c[name]
        return sa.func.count(sa.func.nullif(col, "") if name in texts else col)

    stmt = sa.select(sa.func.count(), *(filled(n).label(f"c{i}") for i, n in enumerate(names))).select_from(table)
    if visible is not None:
        stmt = stmt.where(visible)
    with records.db.read() as conn:
        row = conn.execute(stmt).one()
    total = int(row[0])
    return total, [Fill(name, int(row[i + 1]), total) for i, name in enumerate(names)]


def _invalid(records, table, visible, fields) -> tuple[list[Invalid], int]:
    found = {f.name: Invalid(f.name) for f in fields}
    if not fields:
        return [], 0
    columns = [table.c.id, *(table.c[f.name] for f in fields)]
    last, scanned = 0, 0
    with records.db.read() as conn:
        while scanned < MAX_SCAN:
            stmt = sa.select(*columns).where(table.c.id > last).order_by(table.c.id).limit(min(PAGE, MAX_SCAN - scanned))
            if visible is not None:
                stmt = stmt.where(visible)
            rows = conn.execute(stmt).all()
            if not rows:
                break
            for row in rows:
                for i, f in enumerate(fields, start=1):
                    _check(found[f.name], f, row[0], row[i])
            last, scanned = rows[-1][0], scanned + len(rows)
    return list(found.values()), scanned


def _check(out: Invalid, f, record_id: int, value: Any) -> None:
    if value is None or value == "":
        return
    out.checked += 1
    try:
        normal = f.coerce(value)
    except FieldValueError as exc:
        out.invalid += 1
        if len(out.invalid_ids) < SAMPLE:
            out.invalid_ids.append(record_id)
        if len(out.reasons) < 3 and exc.message not in out.reasons:
            out.reasons.append(exc.message)
        return
    if normal != value:
        out.unnormalised += 1
        if len(out.unnormalised_ids) < SAMPLE:
            out.unnormalised_ids.append(record_id)


def _duplicates(runtime, entity: str, context) -> list[dict] | None:
    """Groups of likely duplicates from the duplicates part, or None when it gives none.

    The contract (for ``engine/dataio/duplicates``): ``quality_groups(runtime, entity, context, limit)``
    returns up to ``limit`` groups, each ``{"rule": str, "ids": [record id, ...]}``, within the
    caller's scope, or None when the entity has no duplicate rule."""
    from engine.dataio import duplicates

    provider = getattr(duplicates, "quality_groups", None)
    if provider is None:
        return None
    groups = provider(runtime, entity, context, limit=20)
    return None if groups is None else list(groups)
