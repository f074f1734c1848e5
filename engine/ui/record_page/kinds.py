"""The ``quick_action`` document kind (a default plugin, ``"record_page.kinds"``): what each tab of a
record page's composer creates. The engine names no entity: the base CRM declares its tabs (log a
call, new task, new meeting, note, send e-mail) in ``configs/industries/base/quick_actions.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from engine.metadata.declared import compile_documents, report_documents
from engine.metadata.loader import SCHEMA_DIR
from engine.metadata.model import Label
from engine.plugins import DocumentKind, hookimpl


@dataclass(frozen=True)
class QuickAction:
    key: str
    label: Label
    icon: str
    entity: str
    link: str
    fields: tuple[str, ...]
    values: Mapping[str, Any]
    body: str | None = None                      # sends an e-mail whose message is this field
    while_sending: Mapping[str, Any] = field(default_factory=dict)


def _compile(doc: dict, problem, model) -> QuickAction | None:
    ent = model.entities.get(doc["creates"])
    if ent is None:
        problem(("creates",), f"there is no entity {doc['creates']!r}")
        return None
    link = doc.get("link", "related_to")
    if link not in ent.fields or ent.fields[link].type_name not in ("reference", "lookup"):
        problem(("link",), f"{ent.name} has no reference field {link!r} to relate the record to the page's")
    for i, name in enumerate(doc["fields"]):
        if name not in ent.fields:
            problem(("fields", i), f"{ent.name} has no field {name!r}")
    send = doc.get("send") or {}
    for where, values in (("values", doc.get("values") or {}), ("while_sending", send.get("while_sending") or {})):
        for name in values:
            if name not in ent.fields:
                problem((where, name) if where == "values" else ("send", where, name), f"{ent.name} has no field {name!r}")
    if send and send["body"] not in doc["fields"]:
        problem(("send", "body"), f"the message field {send['body']!r} must be one of the tab's fields")
    return QuickAction(doc["quick_action"], Label.of(doc.get("label"), doc["quick_action"]), doc.get("icon", ""),
                       ent.name, link, tuple(doc["fields"]), MappingProxyType(dict(doc.get("values") or {})),
                       send.get("body"), MappingProxyType(dict(send.get("while_sending") or {})))


def compile_quick_actions(model) -> tuple[dict[str, QuickAction], list]:
    return compile_documents("quick_action", model, lambda doc, problem: _compile(doc, problem, model))


def check_quick_actions(*, model, documents: list, problems, functions=None, plugins=None) -> None:
    found, found_problems = compile_quick_actions(model)
    report_documents("quick_action", documents, problems, found_problems)


def check_entities_quick_actions(*, model, declared, problems) -> None:
    """Each name in an entity's ``quick_actions`` is a declared quick action whose link accepts the
    entity (at the file:line of the name)."""
    actions, _ = compile_quick_actions(model)
    for name, entity in model.entities.items():
        for i, key in enumerate(entity.props.get("quick_actions") or ()):
            action = actions.get(key)
            link = model.entities[action.entity].fields.get(action.link) if action else None
            if action is None:
                problems.add(declared[name].loc("quick_actions", i), f"there is no quick_action {key!r}")
            elif link is None or not (link.target == name or (
                    link.type_name == "reference" and name in (link.prop("to") or model.entities))):
                problems.add(declared[name].loc("quick_actions", i),
                             f"quick action {key!r} creates {action.entity}, whose {action.link} cannot point to {name}")


@hookimpl
def crm_model_checks():
    return [check_entities_quick_actions]


@hookimpl
def crm_document_kinds():
    return [DocumentKind("quick_action", SCHEMA_DIR / "quick_action.schema.json", check_quick_actions)]


__all__ = ["QuickAction", "compile_quick_actions"]
