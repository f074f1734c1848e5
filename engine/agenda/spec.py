"""The metadata of the agenda (a user's day): the ``agenda`` document compiled into a frozen ``Agenda``,
each problem at its path in the document.

```yaml
agenda: default
activities: activity            # the entity of tasks, calls, meetings, e-mails
type: type                       # its picklist of the kind of activity
status: status                   # its status picklist; done: the values that close an activity
done: [completed, canceled]
complete: completed              # the value the tick sets
due: due_date                    # a date: when a task is due
start: start_at                  # date-times: when a meeting or call starts and ends
end: end_at
reminders:
  task: {before: 1d, of: due_date, at: "09:00"}
  meeting: {before: 15m, of: start_at}
deals: {entity: opportunity, stage: stage, amount: amount, close: close_date, closed: [won, lost]}
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time, timedelta

from engine.metadata.declared import compile_documents

_SPAN = re.compile(r"^(\d{1,4})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Reminder:
    """A reminder of one type of activity: ``before`` the value of ``of`` (a date at ``at`` o'clock in
    the user's zone, or a date-time)."""

    type: str
    of: str
    before: timedelta
    at: time | None = None


@dataclass(frozen=True)
class Deals:
    entity: str
    stage: str
    amount: str | None
    close: str | None
    closed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Agenda:
    activities: str
    type: str = "type"
    status: str = "status"
    done: frozenset[str] = frozenset()
    complete: str = "completed"
    due: str = "due_date"
    start: str = "start_at"
    end: str | None = "end_at"
    reminders: tuple[Reminder, ...] = ()
    deals: Deals | None = None
    meeting_types: frozenset[str] = field(default_factory=lambda: frozenset({"meeting", "call"}))


def span(text: str) -> timedelta | None:
    m = _SPAN.match(str(text).strip())
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))}) if m else None


def _compile(doc: dict, problem, model) -> Agenda | None:
    ent_name = doc["activities"]   # required by the schema: the engine names no entity
    ent = model.entities.get(ent_name)
    if ent is None:
        problem(("activities",), f"there is no entity {ent_name!r}")
        return None

    def fld(key: str, default: str | None, types: tuple[str, ...]) -> str | None:
        name = doc.get(key, default)
        if name is None:
            return None
        f = ent.fields.get(name)
        if f is None:
            problem((key,), f"{ent_name} has no field {name!r}")
        elif f.type_name not in types:
            problem((key,), f"{ent_name}.{name} is a {f.type_name}, not one of {', '.join(types)}")
        return name

    type_ = fld("type", "type", ("picklist",))
    status = fld("status", "status", ("picklist",))
    due = fld("due", "due_date", ("date", "datetime"))
    start = fld("start", "start_at", ("datetime",))
    end = fld("end", "end_at", ("datetime",))
    statuses = {o.value for o in ent.fields[status].options} if status in ent.fields else set()
    types = {o.value for o in ent.fields[type_].options} if type_ in ent.fields else set()
    done = frozenset(doc.get("done", ["completed", "canceled"]))
    for i, value in enumerate(sorted(done)):
        if statuses and value not in statuses:
            problem(("done", i), f"{ent_name}.{status} has no option {value!r}")
    complete = doc.get("complete", "completed")
    if statuses and complete not in statuses:
        problem(("complete",), f"{ent_name}.{status} has no option {complete!r}")
    meeting_types = frozenset(doc.get("meetings", ["meeting", "call"]))
    reminders = []
    for kind, spec in (doc.get("reminders") or {}).items():
        if types and kind not in types:
            problem(("reminders", kind), f"{ent_name}.{type_} has no option {kind!r}")
            continue
        of = spec.get("of")
        f = ent.fields.get(of)
        if f is None or f.type_name not in ("date", "datetime"):
            problem(("reminders", kind, "of"), f"{ent_name} has no date or date-time field {of!r}")
            continue
        before = span(spec.get("before", "0m"))
        if before is None:
            problem(("reminders", kind, "before"), f"before {spec.get('before')!r} is not like 15m, 2h or 1d")
            continue
        at = None
        if spec.get("at") is not None:
            try:
                hh, mm = str(spec["at"]).split(":")
                at = time(int(hh), int(mm))
            except ValueError:
                problem(("reminders", kind, "at"), f"at {spec['at']!r} is no time of day (HH:MM)")
                continue
        elif f.type_name == "date":
            at = time(9, 0)
        reminders.append(Reminder(kind, of, before, at))
    deals = None
    if doc.get("deals"):
        d = doc["deals"]
        dent = model.entities.get(d.get("entity", ""))
        if dent is None:
            problem(("deals", "entity"), f"there is no entity {d.get('entity')!r}")
        else:
            names = {"stage": d.get("stage", "stage"), "amount": d.get("amount"), "close": d.get("close")}
            for key, name in names.items():
                if name is not None and name not in dent.fields:
                    problem(("deals", key), f"{dent.name} has no field {name!r}")
            deals = Deals(dent.name, names["stage"], names["amount"], names["close"], frozenset(d.get("closed") or ()))
    return Agenda(ent_name, type_, status, done, complete, due, start, end, tuple(reminders), deals, meeting_types)


def compile_agenda(model) -> tuple[Agenda | None, list]:
    """The model's agenda (the last ``agenda`` document; None when there is none) and the problems."""
    found, problems = compile_documents("agenda", model, lambda doc, problem: _compile(doc, problem, model))
    return (list(found.values())[-1] if found else None), problems
