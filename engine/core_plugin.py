"""The engine's own contributions, registered through the same hooks as any plugin."""

from __future__ import annotations

from engine.fields import builtin_types
from engine.plugins import hookimpl


@hookimpl
def crm_field_types():
    return builtin_types()


@hookimpl
def crm_formula_functions():
    from engine.rules.functions import builtin_functions

    return builtin_functions()
