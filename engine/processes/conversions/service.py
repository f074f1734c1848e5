"""Converting a record: the proposal (mapped values and match candidates per target) and the
conversion itself, in one transaction through the record service.

``proposal(runtime, entity, id, access, name=)``        what the convert screen shows
``convert(runtime, entity, id, choices, context, name=)`` do it: per target ``create`` (with edited
                                                        values), ``existing`` (an id) or ``skip``
``convert_many(runtime, entity, ids, context, name=)``  bulk: new targets only; a record with match
                                                        candidates is skipped and reported

``name`` picks one of the entity's conversions (default: the first declared). A created target
with ``lines`` gets a copy of the source's child records (copy-forward of a quote's lines into the
order), created through the record service with the user's context in the same transaction.

Targets are created with the user's own ``Context`` (permissions, validation rules, automations,
field history and audit as for any create), each in a savepoint so that one refused target does not
hide the errors of the others: if any fails, nothing is written and every error comes back, keyed
by target and field. The source is then stamped and its children moved by system writes (read-only
fields; children the user may not own), after checking that the user may update the source. Last,
the ``converted`` automation trigger fires on the source, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import sqlalchemy as sa

from engine.matching import Candidate, Rule, find_candidates
from engine.storage.errors import NotFound, PermissionDenied, RecordError, ValidationFailed
from engine.storage.formulas import result_value
from engine.storage.records import Context

from .spec import Conversion, Lines, Target, Value

NAME = "conversions"
TRIGGER = "converted"
ACTIONS = ("create", "existing", "skip")
#: Records one bulk conversion takes at most.
BULK_LIMIT = 200
MAX_ID = 2**63 - 1


class ConversionError(RecordError):
    """A conversion refused as a whole: ``status`` (403, 404, 409, 422), a sentence, and per-target
    field errors (``{"target", "field", "code", "message"}``)."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict] | None = None):
        self.status, self.title, self.detail, self.errors = status, title, detail, list(errors or ())
        super().__init__(detail)


@dataclass
class TargetProposal:
    target: Target
    values: dict                                   # field -> value, as mapped from the source
    candidates: list[Candidate] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)   # child entity -> lines the new record gets


@dataclass
class Proposal:
    conversion: Conversion
    record: dict
    targets: list[TargetProposal]
    problem: str | None = None                     # why the record cannot be converted now
    missing: list[str] = field(default_factory=list)   # rights the user lacks ("create account")


def conversions_of(runtime) -> dict[str, dict[str, Conversion]]:
    """The compiled conversions by source entity and name (empty before startup or without the plugin)."""
    return runtime.extensions.get(NAME) or {}


def conversion_for(runtime, entity: str, name: str | None = None) -> Conversion:
    """The conversion ``name`` of ``entity`` (default: its first); a 404 naming those it has."""
    found = conversions_of(runtime).get(entity) or {}
    if not found:
        raise ConversionError(404, "Not found", f"{entity} declares no conversion")
    conv = next(iter(found.values())) if name is None else found.get(name)
    if conv is None:
        raise ConversionError(404, "Not found", f"{entity} has no conversion {name!r} "
                                                f"(it has: {', '.join(found)})")
    return conv


# -- the proposal ------------------------------------------------------------------------------------

def proposal(runtime, entity: str, record_id: int, access, *, now: datetime | None = None,
             name: str | None = None) -> Proposal:
    """What converting record ``record_id`` would create, and the existing records each target could
    be attached to instead (those ``access`` may read)."""
    conv = conversion_for(runtime, entity, name)
    svc = runtime.records
    now = now or datetime.now(timezone.utc)
    context = Context(user_id=getattr(access, "user_id", None), access=access)
    with svc.db.read(timeout_ms=10_000) as conn:
        record = svc.get(entity, record_id, conn=conn, context=context)
        source = svc._load(conn, svc.model.entity(entity), record_id)   # every field, for the formulas
        targets = []
        for target in conv.targets:
            values = _mapped(runtime, conn, conv, target.values, source, context.user_id, now)
            candidates = []
            if target.existing and target.match:
                rules = [Rule(m.field, source.get(m.source), m.by) for m in target.match]
                candidates = find_candidates(svc, target.entity, rules, access=access, conn=conn)
            lines = {}
            for spec in target.lines:
                table = svc.table(spec.source)
                lines[spec.entity] = lines.get(spec.entity, 0) + conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c[spec.source_link] == record_id)).scalar()
            targets.append(TargetProposal(target, values, candidates, lines))
        problem = state_problem(runtime, conn, conv, source, context.user_id, now)
    return Proposal(conv, record, targets, problem, missing_rights(conv, access))


def state_problem(runtime, conn, conv: Conversion, source: dict, user_id, now: datetime) -> str | None:
    """Why ``source`` cannot be converted now (already converted, ``when`` false), or None."""
    label = conv.source
    if conv.converted_when is not None and _holds(runtime, conn, conv, conv.converted_when, source, user_id, now):
        return f"this {label} is already converted"
    if conv.when is not None and not _holds(runtime, conn, conv, conv.when, source, user_id, now):
        return f"this {label} may not be converted now (it must satisfy: {conv.when.expression})"
    return None


def missing_rights(conv: Conversion, access, choices: Mapping[str, dict] | None = None) -> list[str]:
    """The rights the user lacks for a conversion with ``choices`` (default: create every target
    that cannot be attached, attach or create the others, skip nothing): ``["create account", ...]``."""
    if access is None or getattr(access, "admin", False):
        return []
    missing = []
    if (conv.stamp or conv.moves or conv.converted_when is not None) and not access.can(conv.source, "update"):
        missing.append(f"update {conv.source}")   # a copy-forward that leaves the source as it is needs none
    for target in conv.targets:
        action = (choices or {}).get(target.name, {}).get("action")
        if action == "skip":
            continue
        if action in (None, "create"):
            missing += [f"create {lines.entity}" for lines in target.lines
                        if not access.can(lines.entity, "create") and f"create {lines.entity}" not in missing]
        if action == "existing" and not access.can(target.entity, "read"):
            missing.append(f"read {target.entity}")
        elif action == "create" and not access.can(target.entity, "create"):
            missing.append(f"create {target.entity}")
        elif action is None and not target.optional and not access.can(target.entity, "create") and not (
                target.existing and access.can(target.entity, "read")):
            missing.append(f"create {target.entity}")
    return missing


# -- the conversion ----------------------------------------------------------------------------------

def convert(runtime, entity: str, record_id: int, choices: Any, context: Context, *,
            now: datetime | None = None, name: str | None = None) -> dict:
    """Convert one record as ``choices`` say; returns ``{"id", "conversion", "targets": {name: {entity,
    id, action, lines}}, "moved": {"entity.field": n}}``. Raises ``ConversionError`` (nothing written)
    or a record error."""
    conv = conversion_for(runtime, entity, name)
    chosen = parse_choices(conv, choices)
    access = None if context.system else context.access
    missing = missing_rights(conv, access, chosen)
    if missing:
        _audit_denied(runtime, context, conv, missing)
        raise ConversionError(403, "Forbidden", f"converting this {entity} needs the rights to "
                                                f"{', '.join(missing)}, which your role does not give")
    svc = runtime.records
    now = now or datetime.now(timezone.utc)
    ent = svc.model.entity(entity)
    with svc.db.write() as conn:
        svc.get(entity, record_id, conn=conn, context=context)        # 404 unless the user sees it
        source = svc._load(conn, ent, record_id, lock=True)           # one conversion at a time
        problem = state_problem(runtime, conn, conv, source, context.user_id, now)
        if problem is not None:
            converted = problem.endswith("already converted")
            raise ConversionError(409 if converted else 422, "Already converted" if converted else "Not convertible",
                                  problem)
        ids, copied = _targets(runtime, conn, conv, source, chosen, context, now)
        moved = _move(runtime, conn, conv, record_id, ids, context)
        stamp = _mapped(runtime, conn, conv, conv.stamp, source, context.user_id, now, ids)
        system = Context(user_id=context.user_id, system=True, depth=context.depth, chain=context.chain)
        stamped = svc.update(entity, record_id, stamp, context=system, conn=conn) if stamp else source
        workflow = runtime.extensions.get("workflow")
        if workflow is not None:
            workflow.fire(conn, entity, TRIGGER, stamped, context=context)
    return {"id": record_id, "conversion": conv.name,
            "targets": {t.name: {"entity": t.entity, "id": ids.get(t.name), "action": chosen[t.name]["done"],
                                 **({"lines": copied.get(t.name, 0)} if t.lines else {})}
                        for t in conv.targets},
            "moved": moved}


def convert_many(runtime, entity: str, ids: Any, context: Context, *, now: datetime | None = None,
                 name: str | None = None) -> list[dict]:
    """Convert each record creating new targets, each in its own transaction; a record with match
    candidates for a target is skipped (``status: "matches"``, with them) for a person to decide."""
    conv = conversion_for(runtime, entity, name)
    if not isinstance(ids, list) or not ids or len(ids) > BULK_LIMIT or not all(_record_id(i) for i in ids):
        raise ConversionError(422, "Validation failed", f"ids must be a list of 1 to {BULK_LIMIT} record ids",
                              [{"target": None, "field": "ids", "code": "type",
                                "message": f"a list of 1 to {BULK_LIMIT} record ids"}])
    access = None if context.system else context.access
    results = []
    for rid in dict.fromkeys(ids):
        try:
            found = proposal(runtime, entity, rid, access, now=now, name=conv.name)
            matched = {tp.target.name: [c.as_json() for c in tp.candidates] for tp in found.targets if tp.candidates}
            if found.problem:
                results.append({"id": rid, "status": "error", "detail": found.problem, "errors": []})
            elif matched:
                results.append({"id": rid, "status": "matches", "candidates": matched,
                                "detail": "existing records look like the same " +
                                          " and ".join(sorted(matched)) + ": convert this one on its own"})
            else:
                out = convert(runtime, entity, rid, {t.name: {"action": "create"} for t in conv.targets},
                              context, now=now, name=conv.name)
                results.append({"id": rid, "status": "converted", "targets": out["targets"]})
        except ConversionError as exc:
            results.append({"id": rid, "status": "error", "detail": exc.detail, "errors": exc.errors})
        except (RecordError, PermissionDenied) as exc:
            results.append({"id": rid, "status": "error", "detail": str(exc), "errors": []})
    return results


def parse_choices(conv: Conversion, choices: Any) -> dict[str, dict]:
    """The choices per target, checked (a 422 listing every bad one); a target left out is created."""
    errors = []
    if not isinstance(choices, Mapping):
        raise ConversionError(422, "Validation failed", "the choices must be an object: {target: {action: ...}}")
    for name in choices:
        if conv.target(name) is None:
            errors.append(_error(name, None, "unknown", f"there is no target {name!r} "
                                                        f"(targets: {', '.join(t.name for t in conv.targets)})"))
    out = {}
    for target in conv.targets:
        choice = choices.get(target.name, {"action": "create"})
        if not isinstance(choice, Mapping):
            errors.append(_error(target.name, None, "type", "must be an object with an action"))
            continue
        action = choice.get("action", "create")
        if action not in ACTIONS:
            errors.append(_error(target.name, "action", "choice", f"must be one of {', '.join(ACTIONS)}"))
            continue
        if action == "skip" and not target.optional:
            errors.append(_error(target.name, "action", "required", f"{target.name} cannot be skipped"))
            continue
        rid = choice.get("id")
        if (action == "existing" or "id" in choice) and not _record_id(rid):
            errors.append(_error(target.name, "id", "required", "the id of the existing record to attach "
                                                                "(a whole number from 1 to 2^63-1)"))
            continue
        if action == "existing" and not target.existing:
            errors.append(_error(target.name, "action", "choice", f"{target.name} is always created new"))
            continue
        values = choice.get("values", {})
        if not isinstance(values, Mapping):
            errors.append(_error(target.name, "values", "type", "must be an object of field values"))
            continue
        out[target.name] = {"action": action, "id": choice.get("id"), "values": dict(values),
                            "done": {"create": "created", "existing": "attached", "skip": "skipped"}[action]}
    if errors:
        raise ConversionError(422, "Validation failed", "; ".join(_sentence(e) for e in errors), errors)
    return out


def _targets(runtime, conn, conv: Conversion, source: dict, chosen: dict, context: Context,
             now) -> tuple[dict, dict]:
    """Create or attach each target (and copy its lines); every refused one is reported before
    anything is kept. Returns the ids by target and the number of lines copied by target."""
    svc = runtime.records
    ids: dict[str, int | None] = {}
    copied: dict[str, int] = {}
    failed: set[str] = set()
    errors: list[dict] = []
    for target in conv.targets:
        choice = chosen[target.name]
        if choice["action"] == "skip":
            ids[target.name] = None
        elif choice["action"] == "existing":
            try:
                svc.get(target.entity, choice["id"], conn=conn, context=context)
                ids[target.name] = choice["id"]
            except NotFound:
                errors.append(_error(target.name, "id", "not_found", f"there is no {target.entity} {choice['id']} "
                                                                      "you may see"))
                failed.add(target.name)
        else:
            mapped = _mapped(runtime, conn, conv, [v for v in target.values if not v.ref], source,
                             context.user_id, now)
            if context.access is not None and not context.system:   # what the role may not write stays unset
                refused = {e.field for e in context.access.write_errors(target.entity, mapped)}
                mapped = {k: v for k, v in mapped.items() if k not in refused}
            values = {**{k: v for k, v in mapped.items() if v is not None}, **choice["values"]}
            blocked = set()
            for v in target.values:
                if v.ref:
                    values[v.field] = ids.get(v.ref)
                    if v.ref in failed:
                        blocked.add(v.field)   # the cause is reported on that target
            try:
                with svc.db.savepoint(conn):
                    ids[target.name] = svc.create(target.entity, values, context=context, conn=conn)["id"]
            except ValidationFailed as exc:
                failed.add(target.name)
                errors += [_error(target.name, e.field, e.code, e.message) for e in exc.errors if e.field not in blocked]
                continue
            for lines in target.lines:
                done, wrong = _copy_lines(runtime, conn, conv, lines, source["id"], ids[target.name], context, now)
                copied[target.name] = copied.get(target.name, 0) + done
                errors += [_error(target.name, f, code, message) for f, code, message in wrong]
    if errors:
        raise ConversionError(422, "Validation failed", "; ".join(_sentence(e) for e in errors), errors)
    return ids, copied


def _copy_lines(runtime, conn, conv: Conversion, lines: Lines, source_id: int, target_id: int, context: Context,
                now) -> tuple[int, list[tuple[str, str, str]]]:
    """Create a child of the target's record per child of the source (in ``order_by`` order, then
    by id), each through the record service as the user. The errors name the line:
    ``lines.<entity>.<n>.<field>`` (n counted from 1)."""
    svc = runtime.records
    table = svc.table(lines.source)
    order = [table.c[n.lstrip("-")].desc() if n.startswith("-") else table.c[n] for n in lines.order_by]
    child_ids = conn.execute(sa.select(table.c.id).where(table.c[lines.source_link] == source_id)
                             .order_by(*order, table.c.id)).scalars().all()
    ent = svc.model.entity(lines.source)
    done, errors = 0, []
    for n, child_id in enumerate(child_ids, start=1):
        child = svc._load(conn, ent, child_id)
        values = {k: v for k, v in _mapped(runtime, conn, conv, lines.values, child, context.user_id, now,
                                           entity=lines.source).items() if v is not None}
        if context.access is not None and not context.system:   # as for targets: what the role may not write
            refused = {e.field for e in context.access.write_errors(lines.entity, values)}
            values = {k: v for k, v in values.items() if k not in refused}
        values[lines.link] = target_id
        try:
            with svc.db.savepoint(conn):
                svc.create(lines.entity, values, context=context, conn=conn)
            done += 1
        except ValidationFailed as exc:
            errors += [(f"lines.{lines.entity}.{n}" + (f".{e.field}" if e.field else ""), e.code, e.message)
                       for e in exc.errors]
    return done, errors


def _move(runtime, conn, conv: Conversion, record_id: int, ids: dict, context: Context) -> dict[str, int]:
    """Re-point the source's children at the targets' records (system writes: history kept)."""
    svc = runtime.records
    system = Context(user_id=context.user_id, system=True, depth=context.depth, chain=context.chain)
    moved: dict[str, int] = {}
    for move in conv.moves:
        target_id = ids.get(move.to)
        if target_id is None:
            continue
        ent = svc.model.entity(move.entity)
        table = svc.table(ent.name)
        link, into = ent.fields[move.from_field], ent.fields[move.field]
        key = link.type.coerce(link, f"{conv.source}:{record_id}") if link.type_name == "reference" else record_id
        value = f"{conv.target(move.to).entity}:{target_id}" if into.type_name == "reference" else target_id
        children = conn.execute(sa.select(table.c.id).where(table.c[move.from_field] == key)).scalars().all()
        done = 0
        for child in children:
            try:
                with svc.db.savepoint(conn):
                    svc.update(ent.name, child, {move.field: value}, context=system, conn=conn)
                done += 1
            except ValidationFailed:   # e.g. the contact already is a member of that campaign: keep the old link
                continue
        moved[f"{move.entity}.{move.field}"] = done
    return moved


# -- formulas ------------------------------------------------------------------------------------

def _mapped(runtime, conn, conv: Conversion, values, source: dict, user_id, now, ids: dict | None = None, *,
            entity: str | None = None) -> dict:
    """The values of ``values`` on ``source`` (a record of ``entity``, default the conversion's source)."""
    out = {}
    for v in values:
        if v.ref:
            if ids is not None:
                out[v.field] = ids.get(v.ref)
            continue
        out[v.field] = _value(v, _evaluate(runtime, conn, conv, v.rule, source, user_id, now, entity=entity))
    return out


def _value(v: Value, value: Any) -> Any:
    fld = v.target_field
    if value == "":     # a blank text field reads as "" in formulas: keep it blank
        return None
    if fld is None or value is None or fld.target or fld.type_name in ("reference", "user"):
        return value
    return result_value(fld, value)


def _holds(runtime, conn, conv, rule, record, user_id, now) -> bool:
    return _evaluate(runtime, conn, conv, rule, record, user_id, now) is True


def _evaluate(runtime, conn, conv: Conversion, rule, record: dict, user_id, now, *, entity: str | None = None) -> Any:
    from engine import rules

    svc = runtime.records
    paths = frozenset(p for p in rule.fields if "." in p)
    related = (rules.fetch_related(conn, svc.metadata, svc.model, entity or conv.source, record, paths)
               if paths else None)
    user = None
    if "user" in rule.uses and user_id is not None:
        try:
            user = svc._load(conn, svc.model.entity("user"), user_id)
        except NotFound:
            user = None
    return rule.evaluate(record, prior=record, is_new=False, user=user, now=now, related=related)


def _record_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _error(target: str | None, fld: str | None, code: str, message: str) -> dict:
    return {"target": target, "field": fld, "code": code, "message": message}


def _sentence(e: dict) -> str:
    where = ".".join(p for p in (e["target"], e["field"]) if p)
    return f"{where}: {e['message']}" if where else e["message"]


def _audit_denied(runtime, context: Context, conv: Conversion, missing: list[str]) -> None:
    from engine.security.audit import audit

    audit(runtime.records, "permission_denied", user_id=context.user_id, entity=conv.source,
          detail={"operation": "convert", "missing": missing})
