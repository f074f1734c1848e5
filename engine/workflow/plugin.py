"""The workflow as a default plugin (``"workflow"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup it compiles the model's workflows and automations into a ``WorkflowEngine`` with its job
runner (``runtime.extensions["workflow"]``, read as ``runtime.workflow``) and attaches it to the
record service's writes; at shutdown it closes the runner. On the web it adds the transitions and
the automation run log to the API and its document, the transition buttons of a record page and the
screen that takes a transition.
"""

from __future__ import annotations

from engine.plugins import hookimpl

# Its commands and scheduled job are part of this plugin (CRM_DISABLED_PLUGINS=workflow takes them
# away with the engine); its document kind and checks are the plugin "workflow.kinds", which stays,
# so that the metadata of a site that turns the workflow off still loads unchanged.
from .commands import crm_cli_commands, crm_scheduled_jobs  # noqa: F401

NAME = "workflow"
WRITES = "workflow.writes"


@hookimpl
def crm_startup(runtime) -> None:
    from . import WorkflowEngine, actions_from_plugins, compile_specs, make_runner

    from .spec import triggers_from_plugins

    specs, _ = compile_specs(runtime.model, runtime.records.functions, actions_from_plugins(runtime.pm),
                             triggers=triggers_from_plugins(runtime.pm))
    engine = WorkflowEngine(runtime.records, specs, runtime.settings)
    engine.runner = make_runner(runtime.settings, engine.execute)
    runtime.extensions[NAME] = engine
    from .lifecycle import WorkflowWrites

    runtime.pm.register(WorkflowWrites(engine), name=WRITES)   # the engine's part of every write


@hookimpl
def crm_shutdown(runtime) -> None:
    engine = runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(WRITES) is not None:
        runtime.pm.unregister(name=WRITES)
    if engine is not None:
        engine.close()


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import api, ui

    return [api.blueprint(), ui.blueprint()]


@hookimpl
def crm_openapi(runtime) -> dict:
    from .api import openapi_fragment

    return openapi_fragment(runtime.model)


@hookimpl
def crm_record_actions(runtime, entity, record, access) -> list:
    from .ui import transition_actions

    return transition_actions(runtime, entity, record, access)


@hookimpl
def crm_send_mail(runtime, to, subject, body, key) -> bool:
    """The record page's e-mail composer sends through the same mail settings as ``send_email``."""
    from .mail import message_id, send_mail

    send_mail(runtime.settings, to=list(to), subject=subject, body=body, message_id=message_id(key, 0))
    return True
