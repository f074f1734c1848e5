"""Cross-reference checks: what a JSON Schema cannot see.

Lookups to missing entities, layouts naming missing fields, reserved names, defaults and demo hints
that a field cannot take, indexes on unknown fields, renames that collide. Each problem names
file:line. The checks of expressions are the formula language's (``engine.rules.model_checks``),
given to the loader by the core plugin like any plugin's model checks.
"""

from __future__ import annotations

from .declared import Declared, Problems
from .model import SYSTEM_COLUMNS, AppModel, Entity

#: Names that would collide with the engine's own columns and API words.
RESERVED = frozenset(SYSTEM_COLUMNS) | {"_meta", "_bulk", "history", "transitions"}


def check_model(model: AppModel, declared: dict[str, "Declared"], problems: "Problems") -> None:
    _check_index_names(model, declared, problems)
    for name, entity in model.entities.items():
        decl = declared[name]
        _check_names(entity, decl, problems)
        _check_fields(model, entity, decl, problems)
        _check_title(entity, decl, problems)
        _check_currency(model, entity, decl, problems)
        _check_indexes(entity, decl, problems)
        _check_layouts(model, entity, decl, problems)
        _check_record_page(model, entity, decl, problems)
        _check_validations(entity, decl, problems)


def _check_names(entity: Entity, decl: "Declared", problems: "Problems") -> None:
    if entity.name in RESERVED:
        problems.add(decl.origin, f"entity name {entity.name!r} is reserved")
    for fname, fdecl in decl.fields.items():
        if fname in RESERVED:
            problems.add(fdecl.origin, f"field name {fname!r} is reserved (system columns: {', '.join(SYSTEM_COLUMNS)})")
        old = fdecl.props.get("renamed_from")
        if old and old in decl.fields:
            problems.add(fdecl.loc("renamed_from"),
                         f"renamed_from {old!r}: {entity.name} still declares a field {old!r}")


def _check_fields(model: AppModel, entity: Entity, decl: "Declared", problems: "Problems") -> None:
    for field in entity.fields.values():
        fdecl = decl.fields[field.name]
        target = field.target
        if target and target not in model.entities:
            problems.add(fdecl.loc("to") if "to" in fdecl.props else fdecl.loc("type"),
                         f"{entity.name}.{field.name} points to entity {target!r}, which is not declared")
        for to in (field.prop("to") if field.type_name == "reference" else None) or ():
            if to not in model.entities:
                problems.add(fdecl.loc("to"), f"{entity.name}.{field.name} may point to {to!r}, which is not declared")
        def report(prop, message, *path, f=fdecl, n=field.name):
            problems.add(f.loc(prop, *path) if prop in f.props else f.loc("type"), f"{entity.name}.{n}: {message}")

        field.type.check(field, entity, report)
        field.type.check_demo_hint(field, report)


def _check_index_names(model: AppModel, declared: dict[str, "Declared"], problems: "Problems") -> None:
    """A database has one namespace for index names: a declared name may be used once."""
    seen: dict[str, str] = {}
    for entity in model.entities.values():
        for i, index in enumerate(entity.indexes):
            if not index.name:
                continue
            if index.name in seen:
                problems.add(declared[entity.name].loc("indexes", i, "name"),
                             f"index name {index.name!r} is already used by an index of {seen[index.name]}")
            seen.setdefault(index.name, entity.name)


def _check_title(entity: Entity, decl: "Declared", problems: "Problems") -> None:
    if entity.title != "id" and entity.title not in entity.fields:
        problems.add(decl.loc("title") if "title" in decl.props else decl.origin,
                     f"title {entity.title!r} is not a field of {entity.name}")


def _check_currency(model: AppModel, entity: Entity, decl: "Declared", problems: "Problems") -> None:
    """``currency:`` names the field holding the ISO code of the record's amounts: a picklist or text
    field of the entity, or ``lookup.field`` of the record it looks up (a line's ``quote.currency_code``)."""
    source = entity.props.get("currency")
    if source is None:
        return
    head, _dot, tail = str(source).partition(".")
    ent, name = entity, head
    if tail:
        link = entity.fields.get(head)
        if link is None or link.type_name != "lookup" or link.target not in model.entities:
            problems.add(decl.loc("currency"), f"currency {source!r}: {head!r} is no lookup field of {entity.name}")
            return
        ent, name = model.entities[link.target], tail
    field = ent.fields.get(name)
    if field is None or field.type_name not in ("picklist", "text") or "." in tail:
        problems.add(decl.loc("currency"), f"currency {source!r} must name a picklist or text field holding an "
                                           f"ISO currency code (USD, CNY...), of {entity.name} or of a record it looks up")


def _check_indexes(entity: Entity, decl: "Declared", problems: "Problems") -> None:
    for i, index in enumerate(entity.indexes):
        for j, fname in enumerate(index.fields):
            if fname not in entity.fields and fname not in SYSTEM_COLUMNS:
                problems.add(decl.loc("indexes", i, "fields", j), f"index names unknown field {fname!r} of {entity.name}")
            elif fname in entity.fields and not entity.fields[fname].stored:
                problems.add(decl.loc("indexes", i, "fields", j), f"index names {fname!r}, which is not stored")
            elif fname in entity.fields and entity.fields[fname].prop("encrypted"):
                problems.add(decl.loc("indexes", i, "fields", j), f"index names {fname!r}, which is encrypted")


def _check_layouts(model: AppModel, entity: Entity, decl: "Declared", problems: "Problems") -> None:
    layouts = entity.layouts

    def known(fname: str, *path) -> None:
        if fname not in entity.fields and fname not in SYSTEM_COLUMNS:
            problems.add(decl.loc("layouts", *path), f"layout names unknown field {fname!r} of {entity.name}")

    def plain(fname: str, *path) -> None:
        if fname in entity.fields and entity.fields[fname].prop("encrypted"):
            problems.add(decl.loc("layouts", *path), f"{entity.name}.{fname} is encrypted: it cannot be sorted or filtered")

    for s, section in enumerate(layouts.get("form") or ()):
        for i, fname in enumerate(section.get("fields", ())):
            known(fname, "form", s, "fields", i)
    lst = layouts.get("list")
    if lst:
        for i, fname in enumerate(lst.get("columns", ())):
            known(fname, "list", "columns", i)
        for i, fname in enumerate(lst.get("filters", ())):
            known(fname, "list", "filters", i)
            plain(fname, "list", "filters", i)
        for key in (lst.get("sort") or "").split(","):
            if key:
                known(key.lstrip("-"), "list", "sort")
                plain(key.lstrip("-"), "list", "sort")
    kanban = layouts.get("kanban")
    if kanban:
        group = kanban["group_by"]
        known(group, "kanban", "group_by")
        if group in entity.fields and entity.fields[group].type_name != "picklist":
            problems.add(decl.loc("layouts", "kanban", "group_by"), f"kanban group_by {group!r} must be a picklist field")
        for i, fname in enumerate(kanban.get("card", ())):
            known(fname, "kanban", "card", i)
    for i, ref in enumerate(layouts.get("related") or ()):
        other, _, fname = ref.partition(".")
        field = model.entities[other].fields.get(fname) if other in model.entities else None
        points_here = field is not None and (field.target == entity.name or (
            field.type_name == "reference" and entity.name in (field.prop("to") or model.entities)))
        if not points_here:
            problems.add(decl.loc("layouts", "related", i),
                         f"related list {ref!r} must name entity.field of a lookup pointing to {entity.name}")


def _check_record_page(model: AppModel, entity: Entity, decl: "Declared", problems: "Problems") -> None:
    """``highlights`` name fields of the entity (its ``quick_actions`` are checked by the
    ``quick_action`` document kind, engine/ui/record_page/kinds.py)."""
    for i, fname in enumerate(entity.props.get("highlights") or ()):
        if fname not in entity.fields and fname not in SYSTEM_COLUMNS:
            problems.add(decl.loc("highlights", i), f"highlights names unknown field {fname!r} of {entity.name}")


def _check_validations(entity: Entity, decl: "Declared", problems: "Problems") -> None:
    for i, rule in enumerate(entity.validations):
        target = rule.get("field")
        if target is not None and target not in entity.fields:
            problems.add(decl.loc("validations", i, "field"),
                         f"validation {rule.get('name')!r} names unknown field {target!r} of {entity.name}")
