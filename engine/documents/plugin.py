"""The documents capability as a default plugin (``"documents"``).

At startup the model's ``document`` declarations are compiled into a ``DocumentService``
(``runtime.extensions["documents"]``). On the web it adds ``GET /api/v1/{entity}/{id}/_documents/{name}``
per declared document (a PDF) and its OpenAPI paths, and a download button per document on the record page; for the
automation ``send_email`` action it answers ``crm_attachments`` (``attach: [quote_pdf]``). Without it
(``CRM_DISABLED_PLUGINS=documents``) none of these exist; the documents still load (``documents.kinds``).
"""

from __future__ import annotations

from engine.plugins import hookimpl

NAME = "documents"


def documents_of(runtime):
    """The runtime's ``DocumentService`` (None before startup or when the plugin is off)."""
    return runtime.extensions.get(NAME)


@hookimpl
def crm_startup(runtime) -> None:
    from .service import DocumentService
    from .spec import compile_documents

    specs = compile_documents(runtime.model)[0]
    service = DocumentService(runtime, specs)
    runtime.extensions[NAME] = service
    runtime.pm.register(Attachments(service), name=f"{NAME}.attachments")


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(f"{NAME}.attachments") is not None:
        runtime.pm.unregister(name=f"{NAME}.attachments")


class Attachments:
    """The documents of this runtime as e-mail attachments (the ``crm_attachments`` hook)."""

    def __init__(self, service):
        self.service = service

    @hookimpl
    def crm_attachments(self, entity, record, name, lang):
        from .service import render_attachment

        return render_attachment(self.service, entity, record, name, lang)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api

    service = documents_of(runtime)
    return [api.blueprint(service.specs if service is not None else {})]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    service = documents_of(runtime)
    return openapi_fragment(runtime.model, service.specs if service is not None else {})


@hookimpl
def crm_record_actions(runtime, entity, record, access) -> list:
    from .api import download_actions

    return download_actions(documents_of(runtime), entity, record, access)
