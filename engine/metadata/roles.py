"""Role documents: merged across layers, built into ``Role`` objects, checked against the entities.

A later layer may declare a role again: each entity it names replaces that entity's grant whole,
and its other properties (``label``, ``admin``, ``default``) replace the earlier values. Unknown
entities and fields are errors with file:line; so are sharing rules that do not compile to SQL
(checked by the formula language, which the loader is given: ``engine.rules.model_checks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .declared import Problems
from .errors import Location
from .model import AppModel, Grant, Label, Role
from .source import Document


@dataclass
class DeclaredRole:
    name: str
    origin: Location
    props: dict[str, Any] = field(default_factory=dict)
    where: dict[str, tuple[Document, tuple]] = field(default_factory=dict)   # prop or entities/<e> -> source

    def loc(self, key: str, *path: Any) -> Location:
        doc, base = self.where.get(key, (None, ()))
        if doc is None:
            return self.origin
        full = (*base, *path)
        return Location(doc.layer, doc.file, doc.line(full), "/".join(map(str, full)))


def merge_roles(docs: list[Document], problems: Problems) -> dict[str, DeclaredRole]:
    roles: dict[str, DeclaredRole] = {}
    seen: dict[tuple[str, str], Location] = {}
    for doc in docs:
        name = doc.data["role"]
        here = Location(doc.layer, doc.file, doc.start_line, "")
        first = seen.setdefault((name, doc.layer), here)
        if first is not here:
            problems.add(here, f"role {name!r} is declared twice in layer {doc.layer} "
                               f"(first at {first.file}:{first.line}); a layer declares a role once")
            continue
        decl = roles.setdefault(name, DeclaredRole(name, here))
        for key, value in doc.data.items():
            if key == "entities":
                for entity, grant in (value or {}).items():
                    decl.props.setdefault("entities", {})[entity] = grant or {}
                    decl.where[f"entities/{entity}"] = (doc, ("entities", entity))
            elif key != "role":
                decl.props[key] = value
                decl.where[key] = (doc, (key,))
    return roles


def build_roles(declared: dict[str, DeclaredRole]) -> dict[str, Role]:
    out = {}
    for name, decl in declared.items():
        props = decl.props
        default = props.get("default")
        out[name] = Role(
            name=name, label=Label.of(props.get("label"), name), admin=bool(props.get("admin")),
            entities=MappingProxyType({e: _grant(g, decl.loc(f"entities/{e}")) for e, g in
                                       (props.get("entities") or {}).items()}),
            default=_grant(default, decl.loc("default")) if default is not None else None,
            origin=decl.origin, home=tuple(props["home"]) if props.get("home") is not None else None)
    return out


def _grant(raw: dict, origin: Location) -> Grant:
    allow = frozenset(raw.get("allow") or ())
    if allow:
        allow |= {"read"}   # every operation shows the record it acts on
    return Grant(allow=allow, scope=raw.get("scope", "all"), share=raw.get("share"),
                 fields=MappingProxyType(dict(raw.get("fields") or {})), origin=origin)


def check_roles(model: AppModel, declared: dict[str, DeclaredRole], problems: Problems) -> None:
    """Entities and fields named by grants exist (sharing rules are checked by the formula language:
    ``engine.rules.model_checks.check_sharing_rules``)."""
    for name, role in model.roles.items():
        decl = declared[name]
        for key, entity, grant in role.grants():
            if entity is not None and entity not in model.entities:
                problems.add(decl.loc(key), f"role {name}: there is no entity {entity!r}")
                continue
            targets = [model.entities[entity]] if entity else list(model.entities.values())
            for fname, level in grant.fields.items():
                if entity is not None and fname not in targets[0].fields:
                    problems.add(decl.loc(key, "fields", fname), f"role {name}: {entity} has no field {fname!r}")
                elif entity is None:
                    problems.add(decl.loc(key, "fields", fname),
                                 f"role {name}: field permissions belong to a named entity, not to default")
                elif level == "edit" and targets[0].fields[fname].readonly:
                    problems.add(decl.loc(key, "fields", fname),
                                 f"role {name}: {entity}.{fname} is read-only; it cannot be edit")
