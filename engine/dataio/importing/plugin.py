"""``imports`` as a default plugin (``"imports"`` in ``engine.plugins.DEFAULT_PLUGINS``).

Declares the import tables (tables.py), starts the ``ImportService`` and its background worker
(``runtime.extensions["imports"]``), contributes the scheduler pass that resumes imports whose
process died, the ``crm import`` commands, the API routes and their OpenAPI document.
"""

from __future__ import annotations

from datetime import datetime

from engine.plugins import ScheduledJob, hookimpl

from .commands import crm_cli_commands  # noqa: F401 - ``crm import``, part of this plugin

NAME = "imports"


def imports_of(runtime):
    """The runtime's ``ImportService`` (None before startup or when the plugin is off)."""
    return runtime.extensions.get(NAME)


@hookimpl
def crm_tables(metadata) -> None:
    from .tables import declare

    declare(metadata)


@hookimpl
def crm_startup(runtime) -> None:
    from .jobs import ImportWorker
    from .service import ImportService

    service = ImportService(runtime)
    service.worker = ImportWorker(service)
    runtime.extensions[NAME] = service


@hookimpl
def crm_shutdown(runtime) -> None:
    service = runtime.extensions.pop(NAME, None)
    if service is not None and service.worker is not None:
        service.worker.close()


@hookimpl
def crm_scheduled_jobs(runtime) -> list:
    return [ScheduledJob("imports.resume", _resume, every=60.0, finish=_finish)]


def _finish(runtime, timeout: float) -> None:
    service = imports_of(runtime)
    if service is not None and service.worker is not None:
        service.worker.drain(timeout)


def _resume(runtime, now: datetime) -> dict:
    service = imports_of(runtime)
    return {"imports_resumed": service.resume_stale() if service is not None else 0}


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api

    return [api.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment()


@hookimpl
def crm_model_checks() -> list:
    return [check_import_by]


def check_import_by(*, model, declared: dict, problems) -> None:
    """A lookup's ``import_by`` is ``title`` or a unique stored field of its target (at its file:line)."""
    for name, entity in model.entities.items():
        for f in entity.fields.values():
            by = f.prop("import_by") if f.target else None
            if by is None or by == "title":
                continue
            target = model.entities.get(f.target)
            if target is None:
                continue
            found = target.fields.get(by)
            if found is None or not found.unique or not found.stored:
                fdecl = declared[name].fields[f.name]
                problems.add(fdecl.loc("import_by"), f"{name}.{f.name}: import_by {by!r} must be 'title' or a "
                                                     f"unique field of {target.name}")
