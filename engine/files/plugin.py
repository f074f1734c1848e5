"""Files as a default plugin (``"files"``): the ``_crm_file`` table, the ``file`` field type and its
widget, the store and ``FileService`` (``runtime.extensions["files"]``), the API routes and their
OpenAPI paths, the Attachments panel on every record page (with its upload and delete screens), the
removal of a deleted record's files (at once for a single delete; the ``files_sweep`` job for what a
bulk delete left), and the ``crm_scan_file`` hook offered every upload. Without it
(``CRM_DISABLED_PLUGINS=files``) none of these exist.
"""

from __future__ import annotations

from pathlib import Path

from engine.plugins import ScheduledJob, hookimpl

NAME = "files"


def files_of(runtime):
    """The runtime's ``FileService`` (None before startup or when the plugin is off)."""
    return runtime.extensions.get(NAME)


@hookimpl
def crm_field_types() -> list:
    from .field import FileType

    return [FileType()]


@hookimpl
def crm_template_dirs() -> list:
    return [Path(__file__).parent / "templates"]


@hookimpl
def crm_tables(metadata) -> None:
    from .service import define_table

    define_table(metadata)


@hookimpl
def crm_startup(runtime) -> None:
    from .service import FileService
    from .storage import make_store

    service = FileService(runtime, make_store(runtime.settings))
    runtime.extensions[NAME] = service
    runtime.pm.register(Writes(service), name=f"{NAME}.writes")


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(f"{NAME}.writes") is not None:
        runtime.pm.unregister(name=f"{NAME}.writes")


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    service = files_of(runtime)
    return openapi_fragment(runtime.model, service.default_limits) if service is not None else {}


@hookimpl
def crm_record_panels(runtime, entity, record, access) -> list:
    from .ui import attachments_panel

    return attachments_panel(files_of(runtime), entity, record, access)


class Writes:
    """The write hooks of one runtime's files (registered at startup, as ``files.writes``)."""

    def __init__(self, service):
        self.service = service

    @hookimpl
    def crm_watches_writes(self, entity) -> bool:
        """Bulk writes keep their fast path (what a bulk delete leaves, ``files_sweep`` removes)."""
        return False

    @hookimpl
    def crm_before_write(self, event, entity, record, old, context, conn, errors, state) -> None:
        from .field import check_file_values

        check_file_values(event, entity, record, old, context, conn, errors, state)

    @hookimpl
    def crm_after_write(self, event, entity, record, old, context, conn, state) -> None:
        from .field import claim_files

        claim_files(event, entity, record, conn, state)

    @hookimpl
    def crm_after_commit(self, event, entity, record, old, context) -> None:
        from .field import replaced_files

        if event == "delete":
            self.service.forget_record(entity.name, record["id"])
        elif event == "update":
            for file_id in replaced_files(entity, record, old):
                self.service.remove_ids([file_id])


@hookimpl
def crm_scheduled_jobs(runtime) -> list:
    def sweep(rt, now):
        service = files_of(rt)
        if service is not None:
            service.sweep()

    return [ScheduledJob(name="files_sweep", run=sweep, every=3600.0)]
