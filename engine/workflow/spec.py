"""Workflow and automation metadata, checked and compiled once per model.

Two kinds of declarations:

* ``workflow:`` inside an entity document: a state machine on a picklist field, with named
  transitions (``from``, ``to``, ``roles``, a ``when`` guard, fields it ``requires``, actions).
* ``automation:`` documents: a trigger (``on``), a condition (``when``) and ordered ``actions``.

``compile_specs(model, functions, actions)`` turns them into frozen objects and returns every
problem with the path inside its document, so the loader reports each at its file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import time, timedelta
from functools import cached_property
from typing import Any, Mapping

from engine.metadata.model import SYSTEM_COLUMNS, AppModel, Entity, Label

#: Write events an automation can follow (the names used in metadata).
EVENTS = {"created": "create", "updated": "update", "deleted": "delete"}
DATE_TYPES = ("date", "datetime")


@dataclass(frozen=True)
class Step:
    """One declared action: ``do`` names its type in the action registry."""

    kind: str
    index: int
    props: Mapping[str, Any]
    impl: Any                      # the ActionType
    compiled: Mapping[str, Any]    # what the type prepared (compiled formulas, templates, ...)

    @property
    def before_save(self) -> bool:
        return self.impl.before_save


@dataclass(frozen=True)
class Schedule:
    """A time trigger: a cron expression, or an offset from a date field of the record."""

    cron: str | None = None
    field: str | None = None
    offset: timedelta = timedelta(0)    # signed: negative means before the date
    at: time = time(0, 0)

    def fire_at(self, value):
        """When a record whose date field holds ``value`` is due (UTC), or None when blank."""
        from datetime import date, datetime, timezone

        if value is None:
            return None
        if isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        elif isinstance(value, date):
            moment = datetime.combine(value, self.at, tzinfo=timezone.utc)
        else:
            return None
        try:
            return moment + self.offset
        except OverflowError:   # past year 1 or 9999: the earliest (due at once, like any past date) or latest time
            edge = datetime.min if self.offset < timedelta(0) else datetime.max
            return edge.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Automation:
    """A compiled automation (or the actions of a workflow transition, named ``entity.transition``)."""

    name: str
    entity: str
    label: Label
    events: frozenset[str] = frozenset()        # create / update / delete
    changed: tuple[str, ...] = ()
    transition: str | None = None
    schedule: Schedule | None = None
    condition: Any = None                       # CompiledRule or None
    steps: tuple[Step, ...] = ()
    retries: int = 5
    active: bool = True
    run_as: str = "user"                         # "user": the triggering user's rights; "system": the engine's
    paths: frozenset[str] = frozenset()         # lookup paths the condition and formulas read
    needs_user: bool = False

    @cached_property
    def before_steps(self) -> tuple[Step, ...]:
        """Steps that run in the write's own transaction (only for write events and transitions);
        computed once (the automation is frozen; a bulk import asks for every record)."""
        if self.schedule is not None or not self.events <= {"create", "update", "delete"} or self.events == {"delete"}:
            return ()
        return tuple(s for s in self.steps if s.before_save)

    @cached_property
    def job_steps(self) -> tuple[Step, ...]:
        before = set(id(s) for s in self.before_steps)
        return tuple(s for s in self.steps if id(s) not in before)


@dataclass(frozen=True)
class Transition:
    name: str
    label: Label
    sources: frozenset[str] | None       # None: from any state
    target: str
    roles: frozenset[str] | None
    guard: Any                           # CompiledRule or None
    requires: tuple[str, ...]
    actions: Automation | None           # the transition's own actions, run like an automation's

    def leaves(self, state: Any) -> bool:
        return (self.sources is None or state in self.sources) and state != self.target


@dataclass(frozen=True)
class Workflow:
    entity: str
    field: str
    transitions: tuple[Transition, ...]
    initial: frozenset[str] | None = None

    def named(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)


@dataclass
class Specs:
    """Everything compiled: workflows per entity, automations per entity."""

    workflows: dict[str, Workflow] = field(default_factory=dict)
    automations: dict[str, Automation] = field(default_factory=dict)

    def of_entity(self, entity: str) -> list[Automation]:
        return [a for a in self.automations.values() if a.entity == entity and a.active]


@dataclass(frozen=True)
class SpecProblem:
    """A problem at ``path`` inside an automation document (``doc`` its index) or an entity's workflow."""

    kind: str          # "automation" or "entity"
    doc: Any           # document index (automation) or entity name
    path: tuple
    message: str


class Compiler:
    """Compiles formulas for one entity and collects problems at their paths."""

    def __init__(self, model: AppModel, functions, problems: list, kind: str, doc: Any, base: tuple):
        self.model, self.functions, self.problems = model, functions, problems
        self.kind, self.doc, self.base = kind, doc, base
        self.paths: set[str] = set()
        self.needs_user = False

    def problem(self, path: tuple, message: str) -> None:
        self.problems.append(SpecProblem(self.kind, self.doc, (*self.base, *path), message))

    def formula(self, text: Any, entity: str, path: tuple, *, expect: str | None = None, sql: bool = False):
        """``text`` compiled for ``entity`` (None after reporting a problem)."""
        from engine import rules
        from engine.rules.checks import _fits

        if not isinstance(text, str):
            self.problem(path, "must be a formula (text)")
            return None
        try:
            compiled = rules.compile(text, entity, self.model, registry=self.functions)
        except rules.RuleError as exc:
            where = f" at column {exc.column}" if exc.column else ""
            self.problem(path, f"{exc.kind.replace('_', ' ')} error{where}: {exc.message} (in {text!r})")
            return None
        if expect is not None and not _fits(compiled.type, expect):
            self.problem(path, f"must give {expect}, but gives {compiled.type} (in {text!r})")
            return None
        if sql and not compiled.sql_capable:
            self.problem(path, f"must run in the database: {compiled.sql_problem} (in {text!r})")
            return None
        self.paths.update(p for p in compiled.fields if "." in p)
        self.needs_user = self.needs_user or "user" in compiled.uses
        return compiled

    def values(self, values: Any, source: str, target: Entity, path: tuple) -> dict:
        """``{field: formula}`` for fields of ``target``, compiled on ``source`` records."""
        from engine.rules.schema import FIELD_TYPE_ALIASES

        out = {}
        if not isinstance(values, Mapping):
            self.problem(path, "must map field names to formulas")
            return out
        for name, text in values.items():
            fld = target.fields.get(name)
            if fld is None and name != "owner_id":
                self.problem((*path, name), f"{target.name} has no field {name!r}")
                continue
            if fld is not None and (fld.type.computed or not fld.stored):
                self.problem((*path, name), f"{target.name}.{name} is computed and cannot be set")
                continue
            expect = FIELD_TYPE_ALIASES.get(fld.type_name) if fld is not None else None
            if fld is not None and (fld.target or fld.type_name in ("reference", "user")):
                expect = None   # an id or a reference text: checked when the record is written
            compiled = self.formula(text, source, (*path, name), expect=expect)
            if compiled is not None:
                out[name] = (fld, compiled)
        return out


def triggers_from_plugins(pm) -> frozenset[str]:
    """The events plugins fire (``crm_automation_triggers``), which automations may follow."""
    if pm is None:
        return frozenset()
    return frozenset(name for found in pm.hook.crm_automation_triggers() for name in found or ())


def compile_specs(model: AppModel, functions=None, actions=None, *, workflows: bool = True,
                  automations: bool = True, triggers: frozenset[str] = frozenset()) -> tuple[Specs, list[SpecProblem]]:
    """The entities' workflows and the automation documents, compiled (either may be left out);
    ``triggers`` are the events plugins fire (``crm_automation_triggers``) beyond the write events."""
    from .actions import default_actions

    actions = actions if actions is not None else default_actions()
    problems: list[SpecProblem] = []
    specs = Specs()
    for ent in model.entities.values() if workflows else ():
        if ent.workflow:
            wf = _workflow(model, ent, functions, actions, problems)
            if wf is not None:
                specs.workflows[ent.name] = wf
    for i, doc in enumerate(model.documents.get("automation", ()) if automations else ()):
        name = doc["automation"]
        if name in specs.automations:
            problems.append(SpecProblem("automation", i, ("automation",),
                                        f"automation {name!r} is declared twice; names are unique"))
            continue
        auto = _automation(model, doc, i, functions, actions, problems, specs, triggers)
        if auto is not None:
            specs.automations[name] = auto
    return specs, problems


def _workflow(model, ent: Entity, functions, actions, problems) -> Workflow | None:
    decl = ent.workflow
    c = Compiler(model, functions, problems, "entity", ent.name, ("workflow",))
    fname = decl.get("field")
    fld = ent.fields.get(fname)
    if fld is None or fld.type_name != "picklist":
        c.problem(("field",), f"a workflow needs a picklist field of {ent.name}; {fname!r} is not one")
        return None
    states = fld.option_values

    def state(value, path) -> bool:
        if value not in states:
            c.problem(path, f"{value!r} is not a value of {ent.name}.{fname} ({', '.join(sorted(states))})")
            return False
        return True

    initial = None
    if decl.get("initial"):
        initial = frozenset(decl["initial"])
        for j, value in enumerate(decl["initial"]):
            state(value, ("initial", j))
    transitions, seen = [], set()
    for i, t in enumerate(decl.get("transitions") or ()):
        path = ("transitions", i)
        if t["name"] in seen:
            c.problem((*path, "name"), f"transition {t['name']!r} is declared twice")
            continue
        seen.add(t["name"])
        sources = None if t["from"] == "*" else frozenset([t["from"]] if isinstance(t["from"], str) else t["from"])
        for j, value in enumerate(sorted(sources or ())):
            state(value, (*path, "from") if isinstance(t["from"], str) else (*path, "from", j))
        state(t["to"], (*path, "to"))
        for j, req in enumerate(t.get("requires") or ()):
            if req not in ent.fields:
                c.problem((*path, "requires", j), f"{ent.name} has no field {req!r}")
        guard = c.formula(t["when"], ent.name, (*path, "when"), expect="boolean") if "when" in t else None
        steps_auto = None
        if t.get("actions"):
            steps = _steps(model, c, ent, t["actions"], (*path, "actions"), actions, transition=True)
            steps_auto = Automation(name=f"{ent.name}.{t['name']}", entity=ent.name,
                                    label=Label.of(t.get("label"), t["name"]), transition=t["name"],
                                    steps=steps, paths=frozenset(c.paths), needs_user=c.needs_user)
        transitions.append(Transition(
            name=t["name"], label=Label.of(t.get("label"), t["name"]), sources=sources, target=t["to"],
            roles=frozenset(t["roles"]) if t.get("roles") else None, guard=guard,
            requires=tuple(t.get("requires") or ()), actions=steps_auto))
    return Workflow(ent.name, fname, tuple(transitions), initial)


def _automation(model, doc: Mapping, i: int, functions, actions, problems, specs: Specs,
                fired: frozenset[str] = frozenset()) -> Automation | None:
    c = Compiler(model, functions, problems, "automation", i, ())
    on = doc["on"]
    ent = model.entities.get(on["entity"])
    if ent is None:
        c.problem(("on", "entity"), f"there is no entity {on['entity']!r}")
        return None
    triggers = [k for k in ("events", "transition", "schedule") if k in on]
    if len(triggers) != 1:
        c.problem(("on",), "name exactly one trigger: events (with optional changed), transition or schedule")
        return None
    for j, name in enumerate(on.get("events") or ()):
        if name not in EVENTS and name not in fired:
            known = ", ".join([*EVENTS, *sorted(fired)])
            c.problem(("on", "events", j), f"{name!r} is no event; an automation follows one of: {known}")
    events = frozenset(EVENTS.get(e, e) for e in on.get("events", ()))
    for j, name in enumerate(on.get("changed") or ()):
        if name not in ent.fields and name not in SYSTEM_COLUMNS:
            c.problem(("on", "changed", j), f"{ent.name} has no field {name!r}")
    if on.get("changed") and "update" not in events:
        c.problem(("on", "changed"), "changed applies to updated records: add 'updated' to events")
    transition = on.get("transition")
    if transition is not None:
        wf = ent.workflow or {}
        if transition not in {t.get("name") for t in wf.get("transitions") or ()}:
            c.problem(("on", "transition"), f"{ent.name} has no workflow transition {transition!r}")
    schedule = _schedule(c, ent, on["schedule"]) if "schedule" in on else None
    condition = None
    if "when" in doc:
        condition = c.formula(doc["when"], ent.name, ("when",), expect="boolean",
                              sql=schedule is not None and schedule.cron is not None)
    steps = _steps(model, c, ent, doc["actions"], ("actions",), actions, transition=False,
                   deleted=events == {"delete"})
    return Automation(
        name=doc["automation"], entity=ent.name, label=Label.of(doc.get("label"), doc["automation"]),
        events=events, changed=tuple(on.get("changed") or ()), transition=transition, schedule=schedule,
        condition=condition, steps=steps, retries=int(doc.get("retries", 5)), active=doc.get("active", True),
        run_as=doc.get("run_as", "user"),
        paths=frozenset(c.paths), needs_user=c.needs_user)


def _schedule(c: Compiler, ent: Entity, decl: Mapping) -> Schedule | None:
    if "cron" in decl:
        from cronsim import CronSim, CronSimError

        if set(decl) - {"cron"}:
            c.problem(("on", "schedule"), "a cron schedule takes only 'cron'")
            return None
        try:
            from datetime import datetime, timezone

            CronSim(decl["cron"], datetime.now(timezone.utc))
        except CronSimError as exc:
            c.problem(("on", "schedule", "cron"), f"not a valid cron expression: {exc}")
            return None
        return Schedule(cron=decl["cron"])
    sides = [k for k in ("before", "after") if k in decl]
    if len(sides) != 1:
        c.problem(("on", "schedule"), "a schedule needs 'cron', or 'before' or 'after' naming a date field")
        return None
    fname = decl[sides[0]]
    fld = ent.fields.get(fname)
    if fname not in ("created_at", "updated_at") and (fld is None or fld.type_name not in DATE_TYPES
                                                        or not fld.stored):
        c.problem(("on", "schedule", sides[0]), f"{fname!r} is not a stored date or datetime field of {ent.name}")
        return None
    offset = timedelta(days=decl.get("days", 0), hours=decl.get("hours", 0), minutes=decl.get("minutes", 0))
    hour, minute = (int(x) for x in decl.get("at", "00:00").split(":"))
    if hour > 23:
        c.problem(("on", "schedule", "at"), "at must be a time of day HH:MM")
        return None
    return Schedule(field=fname, offset=-offset if sides[0] == "before" else offset, at=time(hour, minute))


def _steps(model, c: Compiler, ent: Entity, declared, path: tuple, actions, *, transition: bool,
           deleted: bool = False) -> tuple[Step, ...]:
    import jsonschema

    steps = []
    for i, decl in enumerate(declared):
        where = (*path, i)
        impl = actions.get(decl.get("do"))
        if impl is None:
            c.problem((*where, "do"), f"unknown action {decl.get('do')!r}; known actions: {', '.join(sorted(actions))}")
            continue
        props = {k: v for k, v in decl.items() if k != "do"}
        schema = {"type": "object", "additionalProperties": False, **impl.schema}
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(props), key=lambda e: list(e.path))
        for error in errors:
            message = error.message
            if error.validator == "additionalProperties":
                message = f"unknown property of {impl.name}: {message.split('(')[-1].rstrip(')')}"
            c.problem((*where, *error.absolute_path), message)
        if errors:
            continue
        if deleted and impl.before_save:
            c.problem((*where, "do"), f"{impl.name} changes the record, which a deleted trigger no longer has")
            continue
        before = len(c.problems)
        compiled = impl.prepare(props, ent, c, where)
        if len(c.problems) == before:
            steps.append(Step(impl.name, i, props, impl, compiled or {}))
    return tuple(steps)
