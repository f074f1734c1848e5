"""``quality`` as a default plugin (``"quality"`` in ``engine.plugins.DEFAULT_PLUGINS``): the data-quality
page of each entity (``/ui/quality/<entity>``, under the "Data" menu) and its JSON twin
(``GET /api/v1/_quality/{entity}``); the report itself is ``service.quality_report``."""

from __future__ import annotations

from engine.plugins import hookimpl


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from .ui import nav_entries

    return nav_entries(runtime, access)


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment()
