"""The workflow as a default plugin (``"workflow"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup it compiles the model's workflows and automations into a ``WorkflowEngine`` with its job
runner (``runtime.extensions["workflow"]``, read as ``runtime.workflow``) and attaches it to the
record service's writes; at shutdown it closes the runner. On the web it adds the transitions and
the automation run log to the API and its document, the transition buttons of a record page and the
screen that takes a transition.
"""

from __future__ import annotations

from engine.plugins import hookimpl

NAME = "workflow"


@hookimpl
def crm_startup(runtime) -> None:
    from . import WorkflowEngine, actions_from_plugins, compile_specs, make_runner

    specs, _ = compile_specs(runtime.model, runtime.records.functions, actions_from_plugins(runtime.pm))
    engine = WorkflowEngine(runtime.records, specs, runtime.settings)
    engine.runner = make_runner(runtime.settings, engine.execute)
    runtime.extensions[NAME] = engine
    runtime.records.automation = engine   # lifecycle: replaced at merge


@hookimpl
def crm_shutdown(runtime) -> None:
    engine = runtime.extensions.pop(NAME, None)
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
