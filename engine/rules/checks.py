"""Checking every expression of a model when the metadata loads.

``check_entity_rules(model)`` compiles each expression found in the entities (formula fields,
``required_when``/``visible_when``/``readonly_when``, validation rules; workflow guards and
automations are checked by ``engine.workflow.spec``) and returns one ``RuleProblem`` per error, with the path inside the entity document and the
position inside the expression, so the loader can report ``file:line`` (the line of the property
plus ``position.line - 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from .compiler import compile
from .errors import Position, RuleError
from .functions import FunctionRegistry
from .schema import NUMERIC, TEXTUAL, FIELD_TYPE_ALIASES

#: Field properties holding a condition (TRUE/FALSE).
CONDITION_PROPS = ("required_when", "visible_when", "readonly_when")
#: Field properties holding a formula whose type must match the field's ``returns`` (or its type).
FORMULA_PROPS = ("expr", "formula")
#: Keys of a validation rule holding its condition.
VALIDATION_KEYS = ("error_when", "condition")


@dataclass(frozen=True)
class RuleProblem:
    entity: str
    path: tuple[Any, ...]   # e.g. ("fields", "lost_reason", "required_when") or ("validations", 0, "error_when")
    message: str
    position: Position | None
    kind: str
    expression: str

    def __str__(self) -> str:
        where = f" ({self.position})" if self.position else ""
        return f"{self.entity}.{'.'.join(map(str, self.path))}{where}: {self.message}"


def expressions_of(entity) -> Iterator[tuple[tuple, str, str | None]]:
    """(path, expression, expected type or None) for every expression declared on ``entity``."""
    for name, field in entity.fields.items():
        for prop in CONDITION_PROPS:
            value = field.prop(prop)
            if isinstance(value, str):
                yield ("fields", name, prop), value, "boolean"
        for prop in FORMULA_PROPS:
            value = field.prop(prop)
            if isinstance(value, str):
                returns = field.prop("returns") or field.type_name
                yield ("fields", name, prop), value, FIELD_TYPE_ALIASES.get(str(returns), None)
        default = field.prop("default")
        if isinstance(default, dict) and isinstance(default.get("formula"), str):
            yield ("fields", name, "default", "formula"), default["formula"], \
                FIELD_TYPE_ALIASES.get(field.type_name, None)
    for i, rule in enumerate(entity.validations or ()):
        for key in VALIDATION_KEYS:
            value = rule.get(key) if hasattr(rule, "get") else None
            if isinstance(value, str):
                yield ("validations", i, key), value, "boolean"


def _fits(actual: str, expected: str) -> bool:
    if actual == "null" or actual == expected:
        return True
    if actual in NUMERIC and expected in NUMERIC:
        return True
    return actual in TEXTUAL and expected in TEXTUAL


def check_entity_rules(model, registry: FunctionRegistry | None = None) -> list[RuleProblem]:
    """Compile every expression of every entity; return the problems (empty when all are valid)."""
    problems: list[RuleProblem] = []
    for entity in model.entities.values():
        for path, text, expected in expressions_of(entity):
            try:
                compiled = compile(text, entity.name, model, registry=registry)
            except RuleError as exc:
                problems.append(RuleProblem(entity.name, path, exc.message, exc.position, exc.kind, text))
                continue
            if expected is not None and not _fits(compiled.type, expected):
                problems.append(RuleProblem(entity.name, path, f"must give {expected}, but gives {compiled.type}",
                                            compiled.tree.pos, "type", text))
    return problems
