"""Cross-reference checks: what a JSON Schema cannot see.

Lookups to missing entities, layouts naming missing fields, reserved names, defaults that a field
cannot take, indexes on unknown fields, renames that collide. Each problem names file:line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import SYSTEM_COLUMNS, AppModel, Entity

if TYPE_CHECKING:
    from .loader import Declared, Problems

#: Names that would collide with the engine's own columns and API words.
RESERVED = frozenset(SYSTEM_COLUMNS) | {"_meta", "_bulk", "history", "transitions"}


def check_model(model: AppModel, declared: dict[str, "Declared"], problems: "Problems") -> None:
    _check_index_names(model, declared, problems)
    for name, entity in model.entities.items():
        decl = declared[name]
        _check_names(entity, decl, problems)
        _check_fields(model, entity, decl, problems)
        _check_title(entity, decl, problems)
        _check_indexes(entity, decl, problems)
        _check_layouts(model, entity, decl, problems)


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
        field.type.check(field, entity, lambda prop, message, f=fdecl, n=field.name:
                         problems.add(f.loc(prop) if prop in f.props else f.loc("type"), f"{entity.name}.{n}: {message}"))
        _check_demo_hint(entity, field, fdecl, problems)
        if field.type_name == "rollup":
            _check_rollup(model, entity, field, fdecl, problems)


def rollup_parts(model: AppModel, entity: Entity, field):
    """(child entity, lookup field, aggregated field or None, problem or None) of a rollup field."""
    from engine.fields.rollup import COMPARABLE, SUMMABLE
    from engine.rules.schema import formula_type_of

    child_name, _, lookup_name = str(field.prop("of") or "").partition(".")
    child = model.entities.get(child_name)
    if child is None:
        return None, None, None, ("of", f"of {field.prop('of')!r}: there is no entity {child_name!r}")
    lookup = child.fields.get(lookup_name)
    if lookup is None or lookup.target != entity.name or lookup.type_name == "reference":
        return child, None, None, ("of", f"of {field.prop('of')!r}: {child_name}.{lookup_name} is not a lookup "
                                         f"pointing to {entity.name}")
    function = field.prop("function")
    if function == "COUNT":
        return child, lookup, None, None
    fname = field.prop("field")
    agg = child.fields.get(fname) if fname else None
    if agg is None:
        return child, lookup, None, ("field" if fname else "function",
                                     f"{function} needs 'field', a field of {child_name}" if not fname
                                     else f"field {fname!r}: {child_name} has no field {fname!r}")
    ftype = formula_type_of(agg) if agg.type_name != "rollup" else "rollup"
    allowed = SUMMABLE if function == "SUM" else COMPARABLE
    if not agg.stored or agg.type_name == "rollup" or ftype not in allowed:
        what = "a number, currency, percent or integer" if function == "SUM" else "a number or a date/datetime"
        why = "is not stored" if not agg.stored else ("is a rollup" if agg.type_name == "rollup" else f"is {ftype}")
        return child, lookup, agg, ("field", f"field {fname!r}: {function} needs a stored field that is {what}; "
                                             f"{child_name}.{fname} {why}")
    return child, lookup, agg, None


def _check_rollup(model: AppModel, entity: Entity, field, fdecl: "Declared", problems: "Problems") -> None:
    *_, problem = rollup_parts(model, entity, field)
    if problem is not None:
        prop, message = problem
        problems.add(fdecl.loc(prop) if prop in fdecl.props else fdecl.loc("type"),
                     f"{entity.name}.{field.name}: {message}")


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


def _check_demo_hint(entity: Entity, field, fdecl: "Declared", problems: "Problems") -> None:
    """Demo hints are metadata too: a choice the field cannot take is an error here, not at seed time."""
    from engine.fields import FieldValueError

    hint = field.prop("demo")
    if hint is None:
        return
    if field.type.computed:
        problems.add(fdecl.loc("demo"), f"{entity.name}.{field.name}: a computed field takes no demo hint")
    elif isinstance(hint, dict):
        unknown = set(hint) - {"choices", "min", "max"}
        if unknown:
            problems.add(fdecl.loc("demo"), f"{entity.name}.{field.name}: unknown demo hint keys {sorted(unknown)}")
        for i, choice in enumerate(hint.get("choices") or ()):
            if choice is None:
                continue
            try:
                field.type.coerce(field, choice)
            except FieldValueError as exc:
                problems.add(fdecl.loc("demo", "choices", i),
                             f"{entity.name}.{field.name}: demo choice {choice!r} is not valid: {exc.message}")
    elif not isinstance(hint, str) or not (hint == "skip" or hint.isidentifier()):
        problems.add(fdecl.loc("demo"), f"{entity.name}.{field.name}: demo hint must be a Faker provider name, "
                                        "skip, {choices: [...]} or {min:, max:}")


def check_rules(model: AppModel, declared: dict[str, "Declared"], problems: "Problems", functions=None) -> None:
    """Every expression of every entity compiles (formula fields, defaults, conditions, validation
    rules, workflow guards); each problem is reported at the file:line of the expression itself."""
    from dataclasses import replace

    from engine import rules

    for problem in rules.check_entity_rules(model, functions):
        decl = declared[problem.entity]
        path = problem.path
        if path[0] == "fields" and path[1] in decl.fields:
            loc = decl.fields[path[1]].text_loc(*path[2:])
        else:
            loc = decl.text_loc(*path)
        where = ""
        if problem.position is not None:
            loc = replace(loc, line=loc.line + problem.position.line - 1)
            where = f" at column {problem.position.column}" + (
                f" of line {problem.position.line} of the expression" if problem.position.line > 1 else "")
        kind = problem.kind.replace("_", " ")
        problems.add(loc, f"{problem.entity}.{'.'.join(map(str, path))}: {kind} error{where}: {problem.message} "
                          f"(in {problem.expression!r})")
    for name, entity in model.entities.items():
        for field in entity.fields.values():
            if field.type_name == "rollup" and isinstance(field.prop("where"), str):
                _check_rollup_where(model, entity, field, declared[name].fields[field.name], problems, functions)
    for name, entity in model.entities.items():
        decl = declared[name]
        for i, rule in enumerate(entity.validations):
            target = rule.get("field")
            if target is not None and target not in entity.fields:
                problems.add(decl.loc("validations", i, "field"),
                             f"validation {rule.get('name')!r} names unknown field {target!r} of {name}")


def _check_rollup_where(model, entity, field, fdecl, problems, functions) -> None:
    """A rollup's ``where`` is a condition on the child's own stored fields that runs in SQL."""
    from dataclasses import replace

    from engine import rules

    child, lookup, _, problem = rollup_parts(model, entity, field)
    if child is None or lookup is None:
        return
    text = field.prop("where")
    loc, where, message = fdecl.text_loc("where"), "", None
    try:
        compiled = rules.compile(text, child.name, model, registry=functions)
        if compiled.type not in ("boolean", "null"):
            message = f"needs a condition (TRUE or FALSE), not a {compiled.type}"
        elif not compiled.sql_capable:
            message = f"must run in the database: {compiled.sql_problem or 'it cannot'}"
        elif any("." in p for p in compiled.fields) or compiled.uses & {"user", "prior", "is_new"}:
            message = f"may read only {child.name}'s own fields"
        elif any(child.fields[p].computed_on_read for p in compiled.fields if p in child.fields):
            message = f"may read only stored fields of {child.name}"
    except rules.RuleError as exc:
        message = f"{exc.kind.replace('_', ' ')} error: {exc.message}"
        if exc.position is not None:
            loc = replace(loc, line=loc.line + exc.position.line - 1)
            where = f" at column {exc.position.column}"
    if message is not None:
        problems.add(loc, f"{entity.name}.{field.name}.where{where}: {message} (in {text!r})")
