"""The approvals capability as a default plugin (``"approvals"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's approval processes are compiled into an ``ApprovalService``
(``runtime.extensions["approvals"]``) and the lock of pending records is attached to the record
service's writes (``lock.py``); the plugin declares the automation triggers ``submitted``,
``approved``, ``rejected`` and ``recalled``. On the web it adds the approval routes to the API and its
document, the Approvals inbox (a navigation entry), the approval panel of a record page with its
buttons, Submit for approval on the list of the ticked records, and the read-only notice of a pending record. Without it (``CRM_DISABLED_PLUGINS=approvals``)
none of these exist; the ``approval`` documents still load and the tables stay (``approvals.kinds``).
"""

from __future__ import annotations

from engine.plugins import hookimpl

NAME = "approvals"
LOCK = "approvals.lock"


def approvals_of(runtime):
    """The runtime's ``ApprovalService`` (None before startup or when the plugin is off)."""
    return runtime.extensions.get(NAME)


@hookimpl
def crm_startup(runtime) -> None:
    from .lock import ApprovalLock
    from .service import ApprovalService
    from .spec import compile_approvals

    approvals, _ = compile_approvals(runtime.model, runtime.records.functions)
    service = ApprovalService(runtime, approvals)
    runtime.extensions[NAME] = service
    if approvals:
        runtime.pm.register(ApprovalLock(service), name=LOCK)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(LOCK) is not None:
        runtime.pm.unregister(name=LOCK)


@hookimpl
def crm_automation_triggers() -> list:
    from .service import TRIGGERS

    return list(TRIGGERS.values())


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(approvals_of(runtime)), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    service = approvals_of(runtime)
    return openapi_fragment(runtime.model, service.approvals if service is not None else {})


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from .ui import nav_entries

    return nav_entries(approvals_of(runtime), access)


@hookimpl
def crm_record_panels(runtime, entity, record, access) -> list:
    from .ui import record_panel

    return record_panel(approvals_of(runtime), entity, record, access)


@hookimpl
def crm_record_timeline(runtime, entity, record, access) -> list:
    from .ui import timeline_entries

    return timeline_entries(approvals_of(runtime), entity, record, access)


@hookimpl
def crm_list_actions(runtime, entity, access) -> list:
    from .ui import list_actions

    return list_actions(approvals_of(runtime), entity, access)


@hookimpl
def crm_record_lock(runtime, entity, record, access):
    from .ui import lock_reason

    return lock_reason(approvals_of(runtime), entity, record, access)


@hookimpl
def crm_home_panels(runtime, access) -> list:
    from .ui import home_panel

    return home_panel(approvals_of(runtime), access)
