"""The metadata of approvals: the ``approval`` document kind compiled into frozen ``Approval`` objects,
and every problem of a declaration (an unknown entity, field, role or user field, a condition that is
not TRUE/FALSE, a status field that is no picklist with the statuses) as a ``DocProblem`` at its path.

```yaml
approval: quote_discount
of: quote
label: {en: Quote discount, zh: 报价折扣审批}
when: "discount > 15"                    # entry condition: only then may the record be submitted
submitters: [owner, manager]             # the record's owner and/or roles (admin always may)
status_field: approval_status            # a picklist the engine keeps: none/pending/approved/rejected/recalled
editable: [description]                  # fields anyone with the right may still change while pending
lines: [quote_line.quote]                # child records locked with it (entity.lookup to this entity)
steps:
  - {name: manager, label: {en: Manager, zh: 上级}, approvers: [{manager: 1}]}
  - {name: director, approvers: [{role: sales_director}], rule: all, skip_when: "discount <= 30"}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.metadata.declared import DocProblem as Problem
from engine.metadata.declared import compile_documents
from engine.metadata.model import AppModel, Label

ADMIN = "admin"
OWNER = "owner"
#: The values the status field must offer (``none`` too, for a record never submitted).
STATUSES = ("none", "pending", "approved", "rejected", "recalled")
USER_TYPES = ("user",)


@dataclass(frozen=True)
class Approvers:
    """Who approves a step: named users (e-mail), roles, the owner's manager N levels up, user fields."""

    users: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    managers: tuple[int, ...] = ()
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    name: str
    label: Label
    approvers: Approvers
    rule: str = "any"                 # any | all
    skip_when: Any = None             # CompiledRule or None


@dataclass(frozen=True)
class Approval:
    name: str
    label: Label
    entity: str
    steps: tuple[Step, ...]
    when: Any = None                  # CompiledRule or None
    submitters: frozenset[str] = frozenset({OWNER})
    status_field: str | None = None
    editable: frozenset[str] = frozenset()
    lines: tuple[tuple[str, str], ...] = ()   # (child entity, its lookup to this entity): locked with it

    def step(self, index: int) -> Step:
        return self.steps[index]


def compile_approvals(model: AppModel, functions=None) -> tuple[dict[str, Approval], list[Problem]]:
    """Every ``approval`` document of the model as an ``Approval``, and the problems of those that do not compile."""
    return compile_documents("approval", model, lambda doc, problem: _compile(model, doc, functions, problem))


def of_entity(approvals: dict[str, Approval], entity: str) -> list[Approval]:
    return [a for a in approvals.values() if a.entity == entity]


def _compile(model: AppModel, doc: dict, functions, problem) -> Approval | None:
    ent = model.entities.get(doc["of"])
    if ent is None:
        problem(("of",), f"there is no entity {doc['of']!r}")
        return None
    roles = set(model.roles) | {ADMIN}
    for j, name in enumerate(doc.get("submitters") or ()):
        if name != OWNER and name not in roles:
            problem(("submitters", j), f"there is no role {name!r} (roles: {', '.join(sorted(roles))}, or owner)")
    status = doc.get("status_field")
    if status is not None:
        fld = ent.fields.get(status)
        if fld is None or fld.type_name != "picklist":
            problem(("status_field",), f"status_field must name a picklist field of {ent.name}; "
                                       f"{status!r} is {'no field' if fld is None else 'a ' + fld.type_name}")
        elif missing := [s for s in STATUSES if s not in fld.option_values]:
            problem(("status_field",), f"the picklist {ent.name}.{status} needs the option(s) {', '.join(missing)}")
    for j, name in enumerate(doc.get("editable") or ()):
        if name not in ent.fields and name != "owner_id":
            problem(("editable", j), f"there is no field {name!r} in {ent.name}")
        elif name == status:
            problem(("editable", j), f"{name} is the status field: the engine keeps it")
    lines = []
    for j, path in enumerate(doc.get("lines") or ()):
        child_name, _, lookup = path.partition(".")
        child = model.entities.get(child_name)
        fld = child.fields.get(lookup) if child is not None else None
        if fld is None or fld.type_name != "lookup" or fld.target != ent.name:
            problem(("lines", j), f"lines names entity.lookup of a lookup to {ent.name}; {path!r} is none")
        else:
            lines.append((child_name, lookup))
    steps = []
    names: set[str] = set()
    for j, decl in enumerate(doc["steps"]):
        if decl["name"] in names:
            problem(("steps", j, "name"), f"step {decl['name']!r} is declared twice")
        names.add(decl["name"])
        steps.append(Step(decl["name"], Label.of(decl.get("label"), decl["name"]),
                          _approvers(model, ent, decl["approvers"], ("steps", j, "approvers"), roles, problem),
                          decl.get("rule", "any"),
                          _condition(model, ent.name, decl.get("skip_when"), ("steps", j, "skip_when"), functions, problem)))
    return Approval(doc["approval"], Label.of(doc.get("label"), doc["approval"]), ent.name, tuple(steps),
                    _condition(model, ent.name, doc.get("when"), ("when",), functions, problem),
                    frozenset(doc.get("submitters") or (OWNER,)), status, frozenset(doc.get("editable") or ()),
                    tuple(lines))


def _approvers(model: AppModel, ent, declared: list, path: tuple, roles: set, problem) -> Approvers:
    out: dict[str, list] = {"user": [], "role": [], "manager": [], "field": []}
    for k, item in enumerate(declared):
        (kind, value), = item.items()
        if kind == "role" and value not in roles:
            problem((*path, k, "role"), f"there is no role {value!r} (roles: {', '.join(sorted(roles))})")
        if kind == "field":
            fld = ent.fields.get(value)
            if value != "owner_id" and (fld is None or fld.type_name not in USER_TYPES):
                problem((*path, k, "field"), f"field must name a user field of {ent.name}; {value!r} is "
                                             f"{'no field' if fld is None else 'a ' + fld.type_name}")
        if kind == "manager" and "manager" not in model.entity("user").fields:
            problem((*path, k, "manager"), "the user entity has no manager field to follow")
        out[kind].append(value)
    return Approvers(tuple(out["user"]), tuple(out["role"]), tuple(out["manager"]), tuple(out["field"]))


def _condition(model: AppModel, entity: str, text: str | None, path: tuple, functions, problem):
    from engine import rules

    return rules.declared_condition(model, entity, text, path, functions, problem)
