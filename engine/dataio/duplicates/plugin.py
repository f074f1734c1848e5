"""``duplicates`` as a default plugin (``"duplicates"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's duplicate rules are compiled into a ``DuplicateService``
(``runtime.extensions["duplicates"]``) and, when there are any, their write hooks
(``DuplicateWrites``, checking creates and updates and keeping the key table) are registered as
``"duplicates.writes"``. The plugin contributes the backfill of keys to the platform scheduler, the
``crm duplicates`` commands, the API (``/api/v1/_duplicates/{entity}``) and the scan page
(``/ui/duplicates/<entity>``). Without it (``CRM_DISABLED_PLUGINS=duplicates``) nothing is checked;
the ``duplicate_rule`` documents and the key table stay (``duplicates.kinds``).
"""

from __future__ import annotations

from engine.plugins import ScheduledJob, hookimpl

from .commands import crm_cli_commands  # noqa: F401 - ``crm duplicates``, part of this plugin
from .kinds import KEYS, STATE

NAME = "duplicates"
WRITES = "duplicates.writes"
#: Seconds between two backfill passes (each indexes only what the key table lacks: cheap when idle).
EVERY = 300.0


class DuplicateService:
    """The compiled rules of a runtime and their tables."""

    def __init__(self, runtime, rules: dict):
        self.runtime = runtime
        self.rules = rules
        self.keys = runtime.records.metadata.tables[KEYS]
        self.state = runtime.records.metadata.tables[STATE]
        self._by_entity: dict[str, list] = {}
        for rule in rules.values():
            self._by_entity.setdefault(rule.entity, []).append(rule)

    def rules_of(self, entity: str) -> list:
        return self._by_entity.get(entity, [])

    @property
    def entities(self) -> list[str]:
        return sorted(self._by_entity)


def service_of(runtime) -> DuplicateService:
    """The runtime's ``DuplicateService`` (one without rules when the plugin is off)."""
    service = runtime.extensions.get(NAME)
    if service is None:
        service = DuplicateService(runtime, {})
    return service


@hookimpl
def crm_startup(runtime) -> None:
    from .spec import compile_rules
    from .writes import DuplicateWrites

    rules, _ = compile_rules(runtime.model)
    service = runtime.extensions[NAME] = DuplicateService(runtime, rules)
    if rules:
        runtime.pm.register(DuplicateWrites(runtime, service), name=WRITES)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(WRITES) is not None:
        runtime.pm.unregister(name=WRITES)


@hookimpl
def crm_scheduled_jobs(runtime) -> list:
    if not service_of(runtime).rules:
        return []
    return [ScheduledJob("duplicates.backfill", _backfill, every=EVERY)]


def _backfill(runtime, now) -> dict:
    from .keys import backfill

    service = service_of(runtime)
    return {"duplicate_keys_indexed": sum(backfill(runtime, service, e) for e in service.entities)}


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment(service_of(runtime))


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from .ui import nav_entries

    return nav_entries(service_of(runtime), access)
