"""Conversions as a default plugin (``"conversions"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's conversions are compiled into ``runtime.extensions["conversions"]`` (``{source
entity: Conversion}``) and a write hook is registered (``lock.py``) that lets only the conversion
mark a record converted and, where it says ``lock: true``, keeps a converted record read-only for
users. On the web they add the convert routes to the API
and its document, the Convert button of a record page, Convert selected on the list and the convert screens.
"""

from __future__ import annotations

from engine.plugins import hookimpl

NAME = "conversions"
GUARD = "conversions.guard"


@hookimpl
def crm_startup(runtime) -> None:
    from .lock import ConversionGuard
    from .spec import compile_conversions

    conversions, _ = compile_conversions(runtime.model, runtime.records.functions)
    runtime.extensions[NAME] = conversions
    if conversions:
        runtime.pm.register(ConversionGuard(conversions), name=GUARD)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(GUARD) is not None:
        runtime.pm.unregister(name=GUARD)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment
    from .service import conversions_of

    return openapi_fragment(runtime.model, conversions_of(runtime))


@hookimpl
def crm_record_actions(runtime, entity, record, access) -> list:
    from .ui import convert_actions

    return convert_actions(runtime, entity, record, access)


@hookimpl
def crm_list_actions(runtime, entity, access) -> list:
    from .ui import list_actions

    return list_actions(runtime, entity, access)


@hookimpl
def crm_record_lock(runtime, entity, record, access):
    from .ui import lock_reason

    return lock_reason(runtime, entity, record)
