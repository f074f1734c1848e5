"""The engine's own contributions, registered through the same hooks as any plugin: the field
types, the formula language's functions, the formula field type, and the formula language's
checks of a loaded model (expressions of entities, rollups, sharing rules of roles); the
write hook of sequences and lookup defaults (``engine.storage.derived``)."""

from __future__ import annotations

from engine.fields import builtin_types
from engine.plugins import hookimpl

DERIVED = "core.derived"


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
    from engine.storage.derived import check_derived

    return [check_entity_formulas, check_rollups, check_sharing_rules, check_computed_cycles, check_follows,
            check_derived]


@hookimpl
def crm_startup(runtime) -> None:
    """Sequences and lookup defaults (``engine.storage.derived``) as a write hook of this runtime."""
    from engine.storage.derived import DerivedValues

    derived = DerivedValues(runtime.records)
    if derived.by_entity:
        runtime.pm.register(derived, name=DERIVED)


@hookimpl
def crm_shutdown(runtime) -> None:
    if runtime.pm.get_plugin(DERIVED) is not None:
        runtime.pm.unregister(name=DERIVED)
