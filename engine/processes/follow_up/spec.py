"""The ``follow_up`` declarations, checked and compiled once per model.

``compile_follow_ups(model, functions)`` turns each document into a frozen ``FollowUp`` and returns
every problem with its path inside the document, so the kind's check reports each at its file and
line (``kinds.py``) and the runtime uses the same compiled objects (``plugin.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.metadata.declared import DocProblem as Problem
from engine.metadata.model import AppModel, Entity

#: What a target may fill: the keys of ``targets.<entity>``.
SIGNALS = ("last", "next", "owner_touched", "owner_since")
DATE_TYPES = ("date", "datetime")


@dataclass(frozen=True)
class Target:
    """A followed entity and the fields its signals fill (None: not kept)."""

    entity: str
    last: str | None = None
    next: str | None = None
    owner_touched: str | None = None
    owner_since: str | None = None

    @property
    def fields(self) -> dict[str, str]:
        """signal -> field, for the signals this target keeps."""
        return {s: getattr(self, s) for s in SIGNALS if getattr(self, s)}


@dataclass(frozen=True)
class Source:
    """One way activities reach records of a target: the activity's ``link`` points at them, or
    at a record of ``through`` whose lookup ``lookup`` points at them."""

    link: str
    reference: bool                 # the link is a reference (``entity:id``), not a lookup
    through: str | None = None
    lookup: str | None = None


@dataclass(frozen=True)
class FollowUp:
    name: str
    entity: str                     # the activity entity
    links: tuple[str, ...]
    touched_by: str
    happened: Any                   # CompiledRule: date or datetime
    done: Any                       # CompiledRule: boolean
    planned: Any                    # CompiledRule: boolean
    targets: dict[str, Target]
    sources: dict[str, tuple[Source, ...]]    # target -> the ways activities reach it
    via: dict[str, tuple[tuple[str, str], ...]]   # entity -> (lookup, target) its records count for
    reads: frozenset[str]           # activity fields whose change can change a signal

    def followed(self, entity: str) -> bool:
        """Whether writes of ``entity`` (not the activity) can change signals: a target or a via entity."""
        return entity in self.targets or entity in self.via



def compile_follow_ups(model: AppModel, functions=None) -> tuple[dict[str, FollowUp], list[Problem]]:
    out: dict[str, FollowUp] = {}
    problems: list[Problem] = []
    filled: dict[tuple[str, str], str] = {}     # (entity, field) -> the declaration filling it
    for i, doc in enumerate(model.documents.get("follow_up", ())):
        c = _Compiler(model, functions, i, problems)
        spec = c.follow_up(doc)
        if spec is None:
            continue
        if spec.name in out:
            c.problem(("follow_up",), f"follow_up {spec.name!r} is declared twice")
            continue
        for target in spec.targets.values():
            for signal, name in target.fields.items():
                other = filled.setdefault((target.entity, name), spec.name)
                if other != spec.name:
                    c.problem(("targets", target.entity, signal),
                              f"{target.entity}.{name} is already filled by follow_up {other}")
                elif list(target.fields.values()).count(name) > 1:
                    c.problem(("targets", target.entity, signal), f"{target.entity}.{name} is filled by two signals")
        out[spec.name] = spec
    return out, problems


class _Compiler:
    def __init__(self, model: AppModel, functions, doc: int, problems: list[Problem]):
        self.model, self.functions, self.doc, self.problems = model, functions, doc, problems
        self.failed = False

    def problem(self, path: tuple, message: str) -> None:
        self.failed = True
        self.problems.append(Problem(self.doc, path, message))

    def follow_up(self, doc: dict) -> FollowUp | None:
        activity = self.model.entities.get(doc["of"])
        if activity is None:
            self.problem(("of",), f"there is no entity {doc['of']!r}")
            return None
        targets = {name: self.target(name, props) for name, props in doc["targets"].items()}
        targets = {k: v for k, v in targets.items() if v is not None}
        via = self.via(doc.get("via") or {}, set(doc["targets"]))
        followed = set(doc["targets"]) | set(doc.get("via") or {})
        links = {name: self.link(activity, name, i, followed) for i, name in enumerate(doc["links"])}
        sources = self.sources(links, targets, via)
        touched_by = self.touched_by(activity, doc.get("touched_by", "owner_id"))
        happened = self.formula(activity, doc["happened_at"], ("happened_at",), DATE_TYPES)
        done = self.formula(activity, doc["done_when"], ("done_when",), ("boolean",))
        planned = self.formula(activity, doc["planned_when"], ("planned_when",), ("boolean",))
        if self.failed:
            return None
        if happened.type == "date":   # compared and stored as a moment: midnight UTC of the day
            happened = self.formula(activity, f"DATETIMEVALUE({doc['happened_at']})", ("happened_at",), DATE_TYPES)
        reads = {*links, touched_by, *happened.fields, *done.fields, *planned.fields}
        return FollowUp(doc["follow_up"], activity.name, tuple(links), touched_by, happened, done, planned, targets,
                        sources, via, frozenset(reads))

    def target(self, name: str, props: dict) -> Target | None:
        ent = self.model.entities.get(name)
        if ent is None:
            self.problem(("targets", name), f"there is no entity {name!r}")
            return None
        ok = True
        for signal, fname in props.items():
            field = ent.fields.get(fname)
            if field is None:
                self.problem(("targets", name, signal), f"{name} has no field {fname!r}")
                ok = False
            elif not field.stored or field.type_name not in DATE_TYPES:
                self.problem(("targets", name, signal),
                             f"{name}.{fname} must be a stored datetime (or date) field, not {field.type_name}")
                ok = False
        if "owner_touched" in props and "owner_since" not in props:
            self.problem(("targets", name, "owner_touched"),
                         "owner_touched needs owner_since: a datetime field where the engine keeps when the "
                         "current owner got the record")
            ok = False
        return Target(name, **props) if ok else None

    def via(self, via: dict, targets: set[str]) -> dict[str, tuple[tuple[str, str], ...]]:
        out = {}
        for name, lookups in via.items():
            ent = self.model.entities.get(name)
            if ent is None:
                self.problem(("via", name), f"there is no entity {name!r}")
                continue
            found = []
            for lookup in [lookups] if isinstance(lookups, str) else lookups:
                field = ent.fields.get(lookup)
                if field is None or field.type_name != "lookup":
                    self.problem(("via", name), f"{name}.{lookup} must be a lookup to a followed entity "
                                                f"({', '.join(sorted(targets))})")
                elif field.target not in targets:
                    self.problem(("via", name), f"{name}.{lookup} points at {field.target}, which is not followed "
                                                f"(not in targets)")
                else:
                    found.append((lookup, field.target))
            out[name] = tuple(found)
        return out

    def link(self, activity: Entity, name: str, i: int, reached: set[str]) -> tuple[bool, tuple[str, ...]]:
        """(is a reference, the followed entities it can point at)."""
        field = activity.fields.get(name)
        if field is None:
            self.problem(("links", i), f"{activity.name} has no field {name!r}")
            return False, ()
        if field.type_name == "lookup":
            points = (field.target,)
        elif field.type_name == "reference":
            points = tuple(field.prop("to") or self.model.entities)
        else:
            self.problem(("links", i), f"{activity.name}.{name} must be a lookup or a reference, not {field.type_name}")
            return False, ()
        useful = tuple(p for p in points if p in reached)
        if not useful:
            self.problem(("links", i), f"{activity.name}.{name} points at {', '.join(points)}: none is followed "
                                       f"(in targets or via)")
        return field.type_name == "reference", useful

    def sources(self, links: dict, targets: dict[str, Target], via: dict) -> dict[str, tuple[Source, ...]]:
        out: dict[str, list[Source]] = {name: [] for name in targets}
        for link, (reference, points) in links.items():
            for entity in points:
                if entity in targets:
                    out.setdefault(entity, []).append(Source(link, reference))
                for lookup, target in via.get(entity, ()):
                    out.setdefault(target, []).append(Source(link, reference, entity, lookup))
        for name, found in out.items():
            if not found and not self.failed:
                self.problem(("targets", name), f"no link of the activity reaches {name} (directly or via)")
        return {k: tuple(v) for k, v in out.items()}

    def touched_by(self, activity: Entity, name: str) -> str:
        field = activity.fields.get(name)
        if name != "owner_id" and (field is None or field.type_name != "user"):
            self.problem(("touched_by",), f"touched_by must be a user field of {activity.name} (or owner_id); "
                                          f"{name!r} is not one")
        return name

    def formula(self, activity: Entity, text: str, path: tuple, expect: tuple[str, ...]):
        from engine import rules

        try:
            compiled = rules.compile(text, activity.name, self.model, registry=self.functions)
        except rules.RuleError as exc:
            where = f" at column {exc.column}" if exc.column else ""
            self.problem(path, f"{exc.kind.replace('_', ' ')} error{where}: {exc.message} (in {text!r})")
            return None
        if compiled.type not in expect:
            self.problem(path, f"must give {' or '.join(expect)}, but gives {compiled.type} (in {text!r})")
        elif not compiled.sql_capable:
            self.problem(path, f"must run in the database: {compiled.sql_problem.message} (in {text!r})")
        elif any("." in p for p in compiled.fields) or compiled.uses:
            self.problem(path, f"may read only the {activity.name}'s own fields (no lookup paths, $user, TODAY() "
                               f"or NOW(): the signals change only when an activity does) (in {text!r})")
        return compiled
