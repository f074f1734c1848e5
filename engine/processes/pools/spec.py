"""The metadata of pools: the ``pool`` document kind compiled into frozen ``Pool`` objects, and every
problem of a declaration (an unknown entity, field or role, a ``since`` that is no date, a formula
of the wrong type or one that cannot run in SQL) as a ``Problem`` at its path in the document.

```yaml
pool: lead_pool
of: lead
label: {en: Lead pool, zh: 线索公海}
members: "status IN ('new', 'working')"   # besides an empty owner
roles: {see: [sales, manager], claim: [sales, manager], assign: [manager], return: [sales, manager]}
limits: {owned: 20, per_day: 10, roles: {manager: {owned: 50, per_day: 25}}}
recycle:
  - {days: 14, since: owner_touched_at}
  - {days: 30, unless: "status IN ('qualified', 'converted')"}
warn_days: 3
reclaim_days: 7
return_reasons: [{value: no_need, label: {en: No need, zh: 无需求}}]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.metadata.declared import DocProblem as Problem
from engine.metadata.declared import compile_documents
from engine.metadata.model import AppModel, Label

ACTIONS = ("see", "claim", "assign", "return")
ADMIN = "admin"
#: Entities whose records have no owner to claim for (a user is its own record).
UNOWNED = ("user",)
DATE_TYPES = ("date", "datetime")
SYSTEM_DATES = ("created_at", "updated_at")


@dataclass(frozen=True)
class Limits:
    """The most records a user may own from a pool at once and claim per day (None: no limit)."""

    owned: int | None = None
    per_day: int | None = None


@dataclass(frozen=True)
class RecycleRule:
    """Back to the pool after ``days``: counted from ``since`` (a date field; from the claim when it
    is blank or earlier), or from the claim; while ``unless`` holds the rule waits another period."""

    days: int
    since: str | None = None
    unless: Any = None          # CompiledRule (SQL-capable boolean)
    label: Label | None = None


@dataclass(frozen=True)
class Pool:
    name: str
    label: Label
    entity: str
    members: Any = None                                   # CompiledRule or None: only "owner is empty"
    roles: dict[str, frozenset[str]] = field(default_factory=dict)
    limits: Limits = Limits()
    role_limits: dict[str, Limits] = field(default_factory=dict)
    recycle: tuple[RecycleRule, ...] = ()
    warn_days: int = 0
    reclaim_days: int = 0
    return_reasons: tuple[tuple[str, Label], ...] = ()

    def may(self, role: str | None, action: str) -> bool:
        """Whether ``role`` may ``action`` (see, claim, assign, return) on this pool; admin always may."""
        return role == ADMIN or (role or "") in self.roles.get(action, frozenset())

    def limits_for(self, role: str | None) -> Limits:
        """The role's limits (its line of ``limits.roles`` over the pool's); per-user overrides are the service's."""
        return self.role_limits.get(role or "", self.limits)

    def reason(self, value: str) -> Label | None:
        return next((label for v, label in self.return_reasons if v == value), None)



def compile_pools(model: AppModel, functions=None) -> tuple[dict[str, Pool], list[Problem]]:
    """Every ``pool`` document of the model as a ``Pool``, and the problems of those that do not compile."""
    return compile_documents("pool", model, lambda doc, problem: _compile(model, doc, functions, problem))


def _compile(model: AppModel, doc: dict, functions, problem) -> Pool | None:
    ent = model.entities.get(doc["of"])
    if ent is None:
        problem(("of",), f"there is no entity {doc['of']!r}")
        return None
    if ent.name in UNOWNED:
        problem(("of",), f"{ent.name} records have no owner to claim them for")
        return None
    members = _condition(model, ent.name, doc.get("members"), ("members",), functions, problem)
    if members is not None and any("." in f for f in members.fields):
        problem(("members",), f"members may read only the fields of {ent.name} itself, not "
                              f"{', '.join(sorted(f for f in members.fields if '.' in f))}")
        members = None
    known = set(model.roles) | {ADMIN}
    roles = {}
    for action, names in (doc.get("roles") or {}).items():
        for j, name in enumerate(names):
            if name not in known:
                problem(("roles", action, j), f"there is no role {name!r} (roles: {', '.join(sorted(known))})")
        roles[action] = frozenset(names)
    limits = doc.get("limits") or {}
    role_limits = {}
    for name, own in (limits.get("roles") or {}).items():
        if name not in known:
            problem(("limits", "roles", name), f"there is no role {name!r} (roles: {', '.join(sorted(known))})")
        # a role's line replaces what it names; what it leaves out is the pool's
        role_limits[name] = Limits(own.get("owned", limits.get("owned")), own.get("per_day", limits.get("per_day")))
    rules = []
    for j, rule in enumerate(doc.get("recycle") or ()):
        since = rule.get("since")
        if since is not None:
            fld = ent.fields.get(since)
            kind = "datetime" if since in SYSTEM_DATES else (fld.type_name if fld is not None and fld.stored else None)
            if kind not in DATE_TYPES:
                problem(("recycle", j, "since"), f"since must name a stored date or datetime field of {ent.name}; "
                                                 f"{since!r} is {'no field' if kind is None else 'a ' + kind}")
        unless = _condition(model, ent.name, rule.get("unless"), ("recycle", j, "unless"), functions, problem)
        rules.append(RecycleRule(rule["days"], since, unless, Label.of(rule.get("label"), f"rule {j + 1}")))
    reasons = tuple((r["value"], Label.of(r.get("label"), r["value"])) for r in doc.get("return_reasons") or ())
    if len({v for v, _ in reasons}) != len(reasons):
        problem(("return_reasons",), "a return reason is listed twice")
    return Pool(doc["pool"], Label.of(doc.get("label"), doc["pool"]), ent.name, members, roles,
                Limits(limits.get("owned"), limits.get("per_day")), role_limits, tuple(rules),
                int(doc.get("warn_days", 0)), int(doc.get("reclaim_days", 0)), reasons)


def _condition(model: AppModel, entity: str, text: str | None, path: tuple, functions, problem):
    from engine import rules

    return rules.declared_condition(model, entity, text, path, functions, problem, in_sql=True, per_user=False)
