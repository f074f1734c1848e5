"""``pools`` as a default plugin (``"pools"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's pools are compiled into a ``PoolService`` (``runtime.extensions["pools"]``);
the plugin declares the automation triggers ``claimed``, ``assigned``, ``returned`` and ``recycled``,
contributes the recycling job to the platform scheduler, and on the web adds the pools' API routes
and their document, a screen and a navigation entry per pool the user may see, and the Return button
on the page of a record its owner holds from a pool. Without it (``CRM_DISABLED_PLUGINS=pools``) none
of these exist; the ``pool`` documents still load (``pools.kinds``).
"""

from __future__ import annotations

from engine.plugins import ScheduledJob, hookimpl

from .commands import crm_cli_commands  # noqa: F401 - ``crm pools``, part of this plugin

NAME = "pools"
#: The scheduler ticks every 30 s by default; recycling is planned to the minute, not the second.
EVERY = 60.0


def pools_of(runtime):
    """The runtime's ``PoolService`` (None before startup or when the plugin is off)."""
    return runtime.extensions.get(NAME)


@hookimpl
def crm_startup(runtime) -> None:
    from .service import PoolService
    from .spec import compile_pools

    pools, _ = compile_pools(runtime.model, runtime.records.functions)
    runtime.extensions[NAME] = PoolService(runtime, pools)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)


@hookimpl
def crm_automation_triggers() -> list:
    from .service import TRIGGERS

    return list(TRIGGERS.values())


@hookimpl
def crm_scheduled_jobs(runtime) -> list:
    if pools_of(runtime) is None or not pools_of(runtime).pools:
        return []
    return [ScheduledJob("pools.recycle", _recycle, every=EVERY)]


def _recycle(runtime, now) -> dict:
    from .recycle import recycle

    return recycle(pools_of(runtime), now)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    service = pools_of(runtime)
    return openapi_fragment(runtime.model, service.pools if service is not None else {})


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from .ui import nav_entries

    return nav_entries(pools_of(runtime), access)


@hookimpl
def crm_record_actions(runtime, entity, record, access) -> list:
    from .ui import return_action

    return return_action(pools_of(runtime), entity, record, access)



@hookimpl
def crm_home_panels(runtime, access) -> list:
    from .ui import home_panel

    return home_panel(pools_of(runtime), access)
