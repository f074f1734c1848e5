"""The checks of the formula language on a built model, given to the metadata loader by the core plugin.

Every expression of every entity compiles (formula fields, defaults, conditions, validation rules,
workflow guards); a rollup names a child lookup and a field it can aggregate, and its ``where``
runs in SQL on the child's own fields; a role's sharing rule is a condition that runs in SQL.
Each problem is reported at the file:line of the expression itself (``declared`` knows where each
property was written). Registered through ``crm_model_checks`` (``engine.core_plugin``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.fields.rollup import COMPARABLE, SUMMABLE

from .checks import check_entity_rules
from .compiler import compile
from .errors import RuleError
from .schema import formula_type_of


def check_entity_formulas(*, model, declared: dict, problems, functions=None) -> None:
    """Every expression of every entity compiles; a rollup's ``where`` is a condition in SQL."""
    for problem in check_entity_rules(model, functions):
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


def check_rollups(*, model, declared: dict, problems) -> None:
    """A rollup's ``of`` is a child's lookup to its entity, its ``field`` one the function can aggregate."""
    for name, entity in model.entities.items():
        for field in entity.fields.values():
            if field.type_name != "rollup":
                continue
            *_, problem = rollup_parts(model, entity, field)
            if problem is not None:
                fdecl = declared[name].fields[field.name]
                prop, message = problem
                problems.add(fdecl.loc(prop) if prop in fdecl.props else fdecl.loc("type"),
                             f"{entity.name}.{field.name}: {message}")


def check_sharing_rules(*, model, roles: dict, problems, functions=None) -> None:
    """A role's ``share`` is a condition that runs in SQL on the record's own fields and ``$user``."""
    for name, role in model.roles.items():
        decl = roles[name]
        for key, entity, grant in role.grants():
            if grant.share is None or (entity is not None and entity not in model.entities):
                continue
            targets = [model.entities[entity]] if entity else list(model.entities.values())
            for ent in targets:
                message = share_problem(model, ent.name, grant.share, functions)
                if message:
                    problems.add(decl.loc(key, "share"), f"role {name}: share on {ent.name}: {message} "
                                                         f"(in {grant.share!r})")
                    break


def share_problem(model, entity: str, text: str, functions=None) -> str | None:
    """Why a sharing rule cannot be used (None if it can): it must be a condition that runs in SQL
    and reads only the record's own stored fields and ``$user``."""
    try:
        compiled = compile(text, entity, model, registry=functions)
    except RuleError as exc:
        where = f" at column {exc.column}" if exc.column else ""
        return f"{exc.kind.replace('_', ' ')} error{where}: {exc.message}"
    if compiled.type not in ("boolean", "null"):
        return f"needs a condition (TRUE or FALSE), not a {compiled.type}"
    if not compiled.sql_capable:
        return f"must run in the database: {compiled.sql_problem}"
    if any("." in p for p in compiled.fields) or compiled.uses & {"prior", "is_new", "related"}:
        return "may read only the record's own fields and $user"
    return None


def rollup_parts(model, entity, field) -> tuple[Any, Any, Any, tuple[str, str] | None]:
    """(child entity, lookup field, aggregated field or None, problem or None) of a rollup field."""
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
    if agg.type_name == "rollup" and field.source is None:   # a loop of rollups: the cycle check says so
        return child, lookup, agg, None
    ftype = formula_type_of(agg)   # a rollup of a rollup aggregates what that one aggregates
    allowed = SUMMABLE if function == "SUM" else COMPARABLE
    if not agg.stored or ftype not in allowed:
        what = "a number, currency, percent or integer" if function == "SUM" else "a number or a date/datetime"
        why = "is not stored" if not agg.stored else f"is {ftype}"
        return child, lookup, agg, ("field", f"field {fname!r}: {function} needs a stored field that is {what}; "
                                             f"{child_name}.{fname} {why}")
    return child, lookup, agg, None


def _check_rollup_where(model, entity, field, fdecl, problems, functions) -> None:
    """A rollup's ``where`` is a condition on the child's own stored fields that runs in SQL."""
    child, lookup, _, problem = rollup_parts(model, entity, field)
    if child is None or lookup is None:
        return
    text = field.prop("where")
    loc, where, message = fdecl.text_loc("where"), "", None
    try:
        compiled = compile(text, child.name, model, registry=functions)
        if compiled.type not in ("boolean", "null"):
            message = f"needs a condition (TRUE or FALSE), not a {compiled.type}"
        elif not compiled.sql_capable:
            message = f"must run in the database: {compiled.sql_problem or 'it cannot'}"
        elif any("." in p for p in compiled.fields) or compiled.uses & {"user", "prior", "is_new"}:
            message = f"may read only {child.name}'s own fields"
        elif any(child.fields[p].computed_on_read for p in compiled.fields if p in child.fields):
            message = f"may read only stored fields of {child.name}"
    except RuleError as exc:
        message = f"{exc.kind.replace('_', ' ')} error: {exc.message}"
        if exc.position is not None:
            loc = replace(loc, line=loc.line + exc.position.line - 1)
            where = f" at column {exc.position.column}"
    if message is not None:
        problems.add(loc, f"{entity.name}.{field.name}.where{where}: {message} (in {text!r})")


def check_computed_cycles(*, model, declared: dict, problems) -> None:
    """No computed value may depend on itself through formulas, rollups and ``follows``
    (``engine.rules.dependencies``): each cycle is one problem naming every field of it with its
    file:line."""
    from .dependencies import ComputedGraph

    def where(node) -> Any:
        ent, name = node
        fdecl = declared[ent].fields[name]
        fld = model.entities[ent].fields[name]
        prop = {"formula": "expr", "rollup": "of"}.get(fld.type_name, "follows")
        return fdecl.loc(prop) if prop in fdecl.props else fdecl.loc("type")

    for cycle in ComputedGraph.of(model).cycles():
        steps = [f"{e}.{f} ({where((e, f)).file}:{where((e, f)).line})" for e, f in cycle]
        problems.add(where(cycle[0]), "computed values form a cycle (each needs the next to be computed first): "
                                      + " -> ".join([*steps, steps[0]]))


def check_follows(*, model, declared: dict, problems, functions=None) -> None:
    """A field's ``follows``: ``value`` an expression of the field's type and ``when`` a condition,
    both reading only the record's own stored fields (so the write that changes them recomputes it)."""
    for name, entity in model.entities.items():
        for field in entity.fields.values():
            spec = field.prop("follows")
            if not isinstance(spec, dict):
                continue
            fdecl = declared[name].fields[field.name]
            for key in ("value", "when"):
                text = spec.get(key)
                if not isinstance(text, str):
                    continue
                message = None
                try:
                    compiled = compile(text, name, model, registry=functions)
                    if key == "when" and compiled.type not in ("boolean", "null"):
                        message = f"needs a condition (TRUE or FALSE), not a {compiled.type}"
                    elif any("." in p for p in compiled.fields) or compiled.uses & {"user", "prior", "is_new"}:
                        message = "may read only the record's own fields"
                    elif any(entity.fields[p].computed_on_read for p in compiled.fields if p in entity.fields):
                        message = "may read only stored fields"
                except RuleError as exc:
                    message = f"{exc.kind.replace('_', ' ')} error: {exc.message}"
                if message is not None:
                    problems.add(fdecl.text_loc("follows", key), f"{name}.{field.name}.follows.{key}: {message} "
                                                                 f"(in {text!r})")
