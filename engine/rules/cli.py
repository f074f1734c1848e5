"""The body of ``crm eval`` (kept here so engine/cli.py only wires the command)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .compiler import compile, evaluate, normalise_record
from .errors import RuleError
from .runtime import clock, datetimevalue
from .schema import ModelSchema


def format_value(value: Any) -> str:
    if value is None:
        return "(blank)"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return ";".join(map(str, value))
    return str(value)


def format_error(exc: RuleError) -> str:
    text = str(exc)
    pointer = exc.pointer()
    return f"{text}\n{pointer}" if pointer else text


def _now(text: str | None):
    if not text:
        return None
    return clock(datetimevalue(text))[0]


def run_eval(expression: str, record: Any, fields: Any = None, user: Any = None, prior: Any = None, *,
             entity: str | None = None, model=None, is_new: bool = False, now: str | None = None,
             blank_as_zero: bool = False) -> tuple[bool, str]:
    """(ok, text to print) for ``crm eval``."""
    for name, value in (("--record", record), ("--fields", fields), ("--user", user), ("--prior", prior)):
        if value is not None and not isinstance(value, dict):
            return False, f"{name} must be a JSON object"
    try:
        when = _now(now)
        if model is not None and entity:
            if entity not in model.entities:
                return False, f"unknown entity {entity!r}"
            compiled = compile(expression, entity, model, blank_as_zero=blank_as_zero)
            types = _entity_types(model, entity)
            record = normalise_record(dict(record or {}), types)
            prior = normalise_record(dict(prior), types) if prior else None
            user = normalise_record(dict(user), _entity_types(model, "user")) if user else None
            value = compiled.evaluate(record, prior=prior, is_new=is_new, user=user, now=when)
        else:
            value = evaluate(expression, record or {}, fields=fields, prior=prior, is_new=is_new, user=user,
                             now=when, blank_as_zero=blank_as_zero)
    except RuleError as exc:
        return False, format_error(exc)
    except ValueError as exc:
        return False, str(exc)
    return True, format_value(value)


def _entity_types(model, entity: str) -> dict[str, str]:
    if entity not in model.entities:
        return {}
    schema = ModelSchema(model, entity)
    out = {}
    for name in model.entity(entity).fields:
        info = schema.resolve((name,))
        if info.type not in ("json", "reference"):
            out[name] = "lookup" if info.type == "id" else info.type
    return out
