"""``merge`` as a default plugin (``"merge"`` in ``engine.plugins.DEFAULT_PLUGINS``): its table
(``_crm_merge``, the merges kept for undo), its API routes and their OpenAPI document, the merge page
and the "Merge" action on every list of records that can be merged. Without it
(``CRM_DISABLED_PLUGINS=merge``) none of these exist.
"""

from __future__ import annotations

from engine.plugins import hookimpl

NAME = "merge"


@hookimpl
def crm_tables(metadata) -> None:
    from .store import define_table

    define_table(metadata)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(runtime.model), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment(runtime.model)


@hookimpl
def crm_list_actions(runtime, entity, access) -> list:
    from .ui import list_actions

    return list_actions(entity, access)


@hookimpl
def crm_record_panels(runtime, entity, record, access) -> list:
    from .ui import undo_panel

    return undo_panel(entity, record, access)
