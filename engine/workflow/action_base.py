"""What every automation action type is built on: ``ActionType`` (a JSON Schema for its properties,
``prepare`` when the metadata loads, ``run`` for one record), ``ActionRun`` (one action running for
one record: the record, its entity, the writer's context, the connection) and ``ActionError``.
The built-in types are in ``actions.py`` (records) and ``outbound.py`` (messages to people and systems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from engine.metadata.model import Entity


class ActionError(RuntimeError):
    """An action could not do its work; the run fails (and is retried) with this message."""


@dataclass
class ActionRun:
    """One action about to run for one record."""

    engine: Any                     # the WorkflowEngine
    automation: Any                 # spec.Automation
    step: Any                       # spec.Step
    ent: Entity
    record: dict
    old: dict | None
    writer: Any                     # the Context its writes use
    conn: Any = None                # the transaction (None for external actions)
    run_id: int | None = None
    key: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    attempt: int = 1
    deleted: bool = False           # the record was deleted: ``record`` is what it held then

    @property
    def svc(self):
        return self.engine.svc

    def value(self, compiled) -> Any:
        return self.engine.evaluate(self.conn, self.ent, compiled, self.record, self.old, self.writer, self.now)

    def values(self, compiled: Mapping[str, tuple]) -> dict:
        from engine.storage.formulas import result_value

        out = {}
        for name, (fld, rule) in compiled.items():
            value = self.value(rule)
            out[name] = result_value(fld, value) if fld is not None and fld.type_name not in ("lookup", "user", "reference") \
                else _id_or_text(value)
        return out

    def record_json(self) -> dict:
        return record_json(self.ent, self.record)


def _id_or_text(value: Any) -> Any:
    if value is None or isinstance(value, (int, str)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def record_json(ent: Entity, record: Mapping) -> dict:
    """A record as JSON values (what the API returns), for templates and webhook payloads."""
    out = {}
    for key, value in record.items():
        fld = ent.fields.get(key)
        if value is None:
            out[key] = None
        elif fld is not None:
            out[key] = fld.type.to_json(fld, value)
        elif isinstance(value, datetime):
            out[key] = value.isoformat()
        else:
            out[key] = value
    return out


class ActionType:
    name: str = ""
    before_save = False
    external = False
    schema: dict = {}

    def prepare(self, props: dict, ent: Entity, c, where: tuple) -> dict:
        """Compile what ``props`` holds for records of ``ent``; report problems with ``c.problem``."""
        return {}

    def changes(self, act: ActionRun) -> dict:
        """For ``before_save`` types: the field changes to make to the record."""
        raise NotImplementedError

    def run(self, act: ActionRun) -> Any:
        """Do it; the result (JSON) is kept with the run's done marker. ``before_save`` types update
        the record with their changes when they run outside a write (schedules)."""
        changes = self.changes(act)
        if changes:
            act.svc.update(act.ent.name, act.record["id"], changes, context=act.writer, conn=act.conn)
        return {"changed": sorted(changes)}


def _values_schema(description: str) -> dict:
    return {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"},
            "description": description}

def _json_value(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
