"""Deterministic demo data from the model: no entity is known here, only field types and hints.

A field's ``demo`` hint is a Faker provider name, ``{choices: [...]}``, ``{min:, max:}`` (for dates:
day offsets from today), ``{tree: N}`` (a lookup to its own entity: the records form a tree, each with
at most N children, e.g. the users' manager chain), or ``skip``. An entity's ``demo: {ratio: R}`` asks for R records per unit
of ``--records``, and ``unowned: S`` leaves that share of them without an owner (for the
pools). Entities are seeded in lookup order (targets first) through the record service's
bulk path, so every rule that holds for users holds for demo data: a field that ``required_when``
makes required gets a value even when its hint is ``skip``, and a row that a validation rule
(reading only the row itself) would refuse is drawn again.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from faker import Faker

from engine.metadata.model import AppModel, Entity, Field
from engine.storage.records import Context, RecordService

DEFAULT_SEED = 42


def seed_order(model: AppModel) -> list[Entity]:
    """Entities with demo data, each after the entities its lookups point to (cycles broken)."""
    ordered: list[Entity] = []
    state: dict[str, str] = {}

    def visit(name: str) -> None:
        if state.get(name) in ("done", "active"):
            return
        state[name] = "active"
        for field in model.entities[name].fields.values():
            targets = [field.target] if field.target else (
                field.prop("to") or () if field.type_name == "reference" else ())
            for target in targets:
                if target in model.entities and target != name:
                    visit(target)
        state[name] = "done"
        ordered.append(model.entities[name])

    for name in model.entities:
        visit(name)
    return [e for e in ordered if "ratio" in e.demo]


def seed(records: RecordService, unit: int = 50, *, seed_value: int = DEFAULT_SEED,
         today: date | None = None) -> dict[str, int]:
    """Create ``ratio x unit`` records for every entity with a ``demo`` section; return counts."""
    rng = random.Random(seed_value)
    spare = random.Random(seed_value + 1)   # draws that must not move the others (the owners left out)
    fake = Faker(["en_US"])
    fake.seed_instance(seed_value)
    today = today or date.today()
    ids: dict[str, list[int]] = {}
    counts: dict[str, int] = {}
    for entity in seed_order(records.model):
        count = max(1, round(float(entity.demo["ratio"]) * unit))
        unowned = float(entity.demo.get("unowned") or 0)   # a share left to the pools
        users = ids.get("user") or []
        rows = []
        taken: dict[tuple[str, ...], set] = {key: set() for key in entity.unique_keys}
        conditional, checks = _conditions(records, entity)
        for n in range(count):
            for _attempt in range(20):  # a unique combination of random picks may need a few tries
                row = {f.name: v for f in entity.fields.values()
                       if (v := _value(f, entity, n, rng, fake, ids, today)) is not None}
                for field in entity.fields.values():  # a picklist option's sets give those fields their values
                    for option in field.options if row.get(field.name) is not None else ():
                        if option.value == row[field.name] and option.sets:
                            for name in option.sets:
                                row.pop(name, None)
                for field, condition in conditional:  # required by a condition: a value even if hinted skip
                    if row.get(field.name) is None and _holds(condition, row, today):
                        row[field.name] = _value(field, entity, n, rng, fake, ids, today, forced=True)
                if any(_holds(check, row, today) for check in checks):
                    continue  # a validation rule would refuse this row: draw again
                values = {key: tuple(str(row[k]) for k in key) for key in taken if all(row.get(k) is not None for k in key)}
                if all(v not in taken[key] for key, v in values.items()):
                    break
            else:
                continue
            for key, value in values.items():
                taken[key].add(value)
            if users and entity.name != "user":
                owner = rng.choice(users)
                if not (unowned and spare.random() < unowned):
                    row["owner_id"] = owner
            rows.append(row)
        result = records.bulk(entity.name, rows, mode="create", atomic=True, context=Context(system=True, automations=False))
        if not result.ok:
            bad = next(i for i in result.items if i["status"] == "error")
            raise RuntimeError(f"demo data for {entity.name} was refused: {bad}")
        ids[entity.name] = [i["id"] for i in result.items]
        counts[entity.name] = len(rows)
        _grow_trees(records, entity, ids[entity.name])
    return counts


def _grow_trees(records: RecordService, entity: Entity, made: list[int]) -> None:
    """A lookup to its own entity hinted ``demo: {tree: N}`` (a user's manager) makes the records a
    tree: each but the first points to an earlier one, which has at most N such children; so a
    manager chain is some levels deep and never a cycle."""
    for field in entity.fields.values():
        hint = field.prop("demo")
        if field.target != entity.name or not isinstance(hint, dict) or not hint.get("tree"):
            continue
        width = max(1, int(hint["tree"]))
        rows = [{"id": rid, field.name: made[(k - 1) // width]} for k, rid in enumerate(made) if k]
        if rows:
            result = records.bulk(entity.name, rows, mode="update", atomic=True,
                                  context=Context(system=True, automations=False))
            if not result.ok:
                raise RuntimeError(f"demo data for {entity.name}.{field.name} was refused: {result.items[:1]}")


def _conditions(records: RecordService, entity: Entity) -> tuple[list, list]:
    """(field, required_when) pairs and validation rules that a generated row can be checked
    against on its own (no lookup paths, no $user), compiled once per entity."""
    from engine import rules

    def usable(compiled) -> bool:
        return not any("." in p for p in compiled.fields) and "user" not in compiled.uses

    def compile_(text: str):
        return rules.compile(text, entity.name, records.model, registry=records.functions)

    conditional = [(f, c) for f in entity.fields.values()
                   if isinstance(f.prop("required_when"), str) and usable(c := compile_(f.prop("required_when")))]
    checks = [c for v in entity.validations if usable(c := compile_(v["error_when"]))]
    return conditional, checks


def _holds(compiled, row: dict, today: date) -> bool:
    from engine import rules

    try:
        now = datetime.combine(today, time(12), tzinfo=timezone.utc)
        return compiled.evaluate(row, is_new=True, now=now) is True
    except rules.RuleError:
        return False


def _value(field: Field, entity: Entity, n: int, rng: random.Random, fake: Faker,
           ids: dict[str, list[int]], today: date, forced: bool = False) -> Any:
    hint = field.prop("demo")
    kind = field.type_name
    if forced and hint == "skip":
        hint = None
    elif hint == "skip" or field.type.computed or (field.readonly and hint is None):
        return None
    if isinstance(hint, dict) and "choices" in hint:
        return rng.choice(hint["choices"])
    if field.target or kind == "reference":
        return _pointer(field, rng, ids)
    if isinstance(hint, str):
        provider = getattr(fake, hint, None)
        if not callable(provider):
            raise ValueError(f"{entity.name}.{field.name}: demo hint {hint!r} is not a Faker provider "
                             f"(declared at {field.origin.file}:{field.origin.line})")
        return _fit(field, provider(), n)
    low, high = (hint or {}).get("min"), (hint or {}).get("max")
    if kind in ("integer",):
        return rng.randint(int(low if low is not None else 1), int(high if high is not None else 100))
    if kind in ("number", "currency", "percent"):
        lo, hi = float(low if low is not None else 0), float(high if high is not None else (100 if kind == "percent" else 100000))
        return Decimal(str(round(rng.uniform(lo, hi), 2)))
    if kind == "date":
        return today + timedelta(days=rng.randint(int(low if low is not None else -365), int(high if high is not None else 180)))
    if kind == "datetime":
        day = today + timedelta(days=rng.randint(int(low if low is not None else -90), int(high if high is not None else 90)))
        return datetime.combine(day, time(rng.randint(8, 18), rng.choice((0, 15, 30, 45))), tzinfo=timezone.utc)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "picklist":
        return rng.choice(field.options).value
    if kind == "multipicklist":
        return rng.sample([o.value for o in field.options], k=rng.randint(1, min(2, len(field.options))))
    if kind == "email":
        return _fit(field, fake.email(), n)
    if kind == "phone":
        return _phone(field, rng)
    if kind == "url":
        return f"https://{fake.domain_name()}"
    if kind in ("text", "textarea"):
        if field.unique:
            return _fit(field, f"{field.name.upper()}-{n + 1:05d}", n)
        return _fit(field, fake.sentence(nb_words=4).rstrip(".") if kind == "text" else fake.paragraph(), n)
    if kind == "json":
        return {}
    return None


def _phone(field: Field, rng: random.Random) -> str:
    """A number the field takes: for one that normalises to E.164, its region's example mobile number
    (phonenumbers) with the last four digits drawn, which stays a valid number."""
    if field.prop("normalise") != "e164":
        return f"+1 {rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    import phonenumbers

    example = phonenumbers.example_number_for_type(field.prop("region") or "US", phonenumbers.PhoneNumberType.MOBILE)
    return f"+{example.country_code}{str(example.national_number)[:-4]}{rng.randint(0, 9999):04d}"


def _pointer(field: Field, rng: random.Random, ids: dict[str, list[int]]) -> Any:
    if field.type_name == "reference":
        targets = [t for t in (field.prop("to") or ids) if ids.get(t)]
        if not targets:
            return None
        target = rng.choice(targets)
        return {"entity": target, "id": rng.choice(ids[target])}
    pool = ids.get(field.target)
    if not pool or (not field.required and rng.random() < 0.1):
        return None
    return rng.choice(pool)


def _fit(field: Field, value: Any, n: int) -> Any:
    if not isinstance(value, str):
        return value
    if field.unique and field.type_name in ("text", "email"):
        value = value.replace("@", f"+{n}@", 1) if field.type_name == "email" else f"{value} {n}"
    limit = int(field.prop("max_length") or 255)
    return value[:limit]
