"""The workflow's metadata, as a default plugin gives it to the loader: the ``automation`` document
kind (its JSON Schema and its check) and the check of the state machines declared on entities.

Both compile the specs (``engine.workflow.spec.compile_specs``) and report each problem at the
file:line of what it names, as the loader reports its own.
"""

from __future__ import annotations

from engine.metadata.declared import doc_location
from engine.metadata.loader import SCHEMA_DIR
from engine.plugins import DocumentKind, hookimpl

from .actions import actions_from_plugins, default_actions
from .spec import compile_specs, triggers_from_plugins


def _actions(plugins):
    """The action types automations may use: the built-in ones and the plugins' (``crm_actions``)."""
    return actions_from_plugins(plugins) if plugins is not None else default_actions()


def check_automations(*, model, documents: list, problems, functions=None, plugins=None) -> None:
    """Every automation document compiles: its trigger, condition and actions."""
    for p in compile_specs(model, functions, _actions(plugins), workflows=False,
                           triggers=triggers_from_plugins(plugins))[1]:
        doc = documents[p.doc]
        name = f"automation {doc.data['automation']}" + (f" {'/'.join(map(str, p.path))}" if p.path else "")
        problems.add(doc_location(doc, p.path), f"{name}: {p.message}")


def check_workflows(*, model, declared: dict, problems, functions=None, plugins=None) -> None:
    """Every entity's ``workflow`` compiles: its field, states, transitions, guards and actions."""
    for p in compile_specs(model, functions, _actions(plugins), automations=False)[1]:
        problems.add(declared[p.doc].text_loc(*p.path), f"{p.doc}.{'.'.join(map(str, p.path))}: {p.message}")


@hookimpl
def crm_document_kinds():
    return [DocumentKind("automation", SCHEMA_DIR / "automation.schema.json", check_automations)]


@hookimpl
def crm_model_checks():
    return [check_workflows]
