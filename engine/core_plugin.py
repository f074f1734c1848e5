"""The engine's own contributions, registered through the same hooks as any plugin: the field
types, the formula language's functions, the formula field type, and the formula language's
checks of a loaded model (expressions of entities, rollups, sharing rules of roles)."""

from __future__ import annotations

from engine.fields import builtin_types
from engine.plugins import hookimpl


@hookimpl
def crm_field_types():
    from engine.rules import formula_field

    return [*builtin_types(), *formula_field.TYPES]


@hookimpl
def crm_formula_functions():
    from engine.rules.functions import builtin_functions

    return builtin_functions()


@hookimpl
def crm_model_checks():
    from engine.rules.model_checks import (check_computed_cycles, check_entity_formulas, check_follows, check_rollups,
                                          check_sharing_rules)

    return [check_entity_formulas, check_rollups, check_sharing_rules, check_computed_cycles, check_follows]
