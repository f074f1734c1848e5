"""Dashboards as a default plugin (``"dashboards"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's dashboards are compiled into ``runtime.extensions["dashboards"]`` (``{name:
Dashboard}``); on the web they add their API routes and its document, their screen, their entries
in the navigation and a panel on the home page. Without this plugin (``CRM_DISABLED_PLUGINS=
dashboards``) none of these exist and the rest of the engine serves as before.
"""

from __future__ import annotations

from engine.plugins import hookimpl


NAME = "dashboards"


def dashboards_of(runtime) -> dict:
    """The compiled dashboards by name (empty before startup)."""
    return runtime.extensions.get(NAME) or {}


@hookimpl
def crm_startup(runtime) -> None:
    from . import compile_dashboards

    runtime.extensions[NAME], _ = compile_dashboards(runtime.model, runtime.records.functions)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment(dashboards_of(runtime))


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from .ui import nav_entries

    return nav_entries(dashboards_of(runtime), access)


@hookimpl
def crm_home_panels(runtime, access) -> list:
    from .ui import home_panels

    return home_panels(dashboards_of(runtime), access)
