"""The formula language inside the record service: defaults written as formulas, formula fields,
``required_when`` / ``readonly_when`` conditions and validation rules.

Everything an entity declares is compiled once per entity (``EntityRules.of``); an entity that
declares nothing gets ``None`` and its writes do no rule work at all (the bulk path's hot loop).
On a write, in the write's transaction: defaults -> ``crm_before_write`` hooks -> formula fields ->
``required_when`` -> ``readonly_when`` -> validation rules; every failure is a ``FieldError`` and
they are reported together with the required and lookup checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from engine.fields import FieldValueError

from .errors import FieldError

if TYPE_CHECKING:
    from engine.metadata.model import Entity, Field

    from .records import Context, RecordService


@dataclass(frozen=True)
class Rule:
    name: str
    compiled: Any
    field: "Field | None" = None
    message: str = ""
    when: Any = None                  # ``follows``: the condition under which the field takes the value


@dataclass(frozen=True)
class EntityRules:
    """The compiled expressions of one entity."""

    defaults: tuple[Rule, ...]        # default: {formula: ...}, evaluated on create for fields not given
    stored: tuple[Rule, ...]          # formula fields with a column and ``follows`` fields, in dependency order
    on_read: tuple[Rule, ...]         # formula fields computed when records are read
    required_when: tuple[Rule, ...]
    readonly_when: tuple[Rule, ...]
    validations: tuple[Rule, ...]
    paths: frozenset[str]             # lookup paths the write-time rules read (fetch_related)
    needs_user: bool                  # a write-time rule reads $user

    @property
    def on_write(self) -> bool:
        return bool(self.defaults or self.stored or self.required_when or self.readonly_when or self.validations)

    @classmethod
    def of(cls, svc: "RecordService", ent: "Entity") -> "EntityRules | None":
        from engine import rules

        def compile_(text: str, blank_as_zero: bool = False):
            return rules.compile(text, ent.name, svc.model, registry=svc.functions, blank_as_zero=blank_as_zero)

        from engine.rules.dependencies import follows_of

        defaults, stored, on_read, required_when, readonly_when, validations = [], [], [], [], [], []
        for field in ent.fields.values():
            follows = follows_of(field)
            if follows is not None:
                stored.append(Rule(field.name, compile_(follows[0]), field, when=compile_(follows[1])))
            if field.default_formula is not None:
                defaults.append(Rule(field.name, compile_(field.default_formula), field))
            if field.type_name == "formula":
                rule = Rule(field.name, compile_(field.prop("expr"), bool(field.prop("blank_as_zero"))), field)
                (stored if field.stored else on_read).append(rule)
            for prop, bucket in (("required_when", required_when), ("readonly_when", readonly_when)):
                if isinstance(field.prop(prop), str):
                    bucket.append(Rule(field.name, compile_(field.prop(prop)), field))
        for item in ent.validations:
            target = ent.fields.get(item.get("field")) if item.get("field") else None
            message = item.get("message") or item["name"]
            if isinstance(message, dict):
                message = message.get("en") or next(iter(message.values()), item["name"])
            validations.append(Rule(item["name"], compile_(item["error_when"]), target, str(message)))
        if not (defaults or stored or on_read or required_when or readonly_when or validations):
            return None
        written = [*defaults, *stored, *required_when, *readonly_when, *validations]
        compiled = [r.compiled for r in written] + [r.when for r in stored if r.when is not None]
        by_name = {r.name: r for r in stored}   # in the order of the model's one dependency graph
        ordered = tuple(by_name[f] for _, f in svc.computed_graph.order((ent.name, r.name) for r in stored))
        return cls(tuple(defaults), ordered, tuple(on_read), tuple(required_when),
                   tuple(readonly_when), tuple(validations),
                   frozenset(p for c in compiled for p in c.fields if "." in p),
                   any("user" in c.uses for c in compiled))


def result_value(field: "Field", value: Any) -> Any:
    """A formula's result as the field stores it (rounded to its scale, whole for integer)."""
    if value is None:
        return None
    returns = field.prop("returns")
    if returns == "integer":
        value = int(Decimal(value).to_integral_value(ROUND_HALF_UP)) if not isinstance(value, bool) else int(value)
    elif returns == "text" and not isinstance(value, str):
        value = str(value)
    elif returns == "date" and isinstance(value, datetime):
        value = value.date()
    try:
        return field.coerce(value)
    except FieldValueError:
        return None


def blank(value: Any) -> bool:
    return value is None or value == "" or value == []


class RuleRunner:
    """Runs one entity's rules on records being written, in the write's transaction."""

    def __init__(self, svc: "RecordService", conn, ent: "Entity", rules: EntityRules, context: "Context"):
        self.svc, self.conn, self.ent, self.rules, self.context = svc, conn, ent, rules, context
        self.now = datetime.now(timezone.utc)
        self._user: Any = ...

    @property
    def user(self) -> dict | None:
        if self._user is ...:
            self._user = None
            if self.rules.needs_user and self.context.user_id is not None:
                from .tables import USER_ENTITY

                try:
                    self._user = self.svc._load(self.conn, self.svc.model.entity(USER_ENTITY), self.context.user_id)
                except Exception:  # noqa: BLE001 - a writer without a user record reads $user as blank
                    self._user = None
        return self._user

    def run(self, record: dict, old: dict | None, given: dict, errors: list[FieldError]) -> None:
        """Defaults, formula fields, conditions and validation rules for one record."""
        from engine import rules as lang

        r = self.rules
        related = None
        if r.paths:
            related = lang.fetch_related(self.conn, self.svc.metadata, self.svc.model, self.ent.name, record, r.paths)
        kwargs = {"prior": old, "is_new": old is None, "user": self.user, "now": self.now, "related": related}

        def value(rule: Rule, code: str) -> Any:
            try:
                return rule.compiled.evaluate(record, **kwargs)
            except lang.RuleError as exc:
                errors.append(FieldError(rule.field.name if rule.field is not None else None, code,
                                         f"{rule.name}: {exc.message}"))
                return None

        if old is None:
            for rule in r.defaults:
                if rule.name not in record:
                    record[rule.name] = result_value(rule.field, value(rule, "default"))
        for rule in r.stored:
            if rule.when is None:
                record[rule.name] = result_value(rule.field, value(rule, "formula"))
            elif self._holds(rule.when, record, kwargs, errors, rule):
                self._follow(rule, record, old, given, result_value(rule.field, value(rule, "follows")), errors)
        for rule in r.required_when:
            if blank(record.get(rule.name)) and value(rule, "required") is True:
                errors.append(FieldError(rule.name, "required", f"is required when {rule.compiled.expression}"))
        if not self.context.system:
            for rule in r.readonly_when:
                name = rule.name
                if name not in given:
                    continue
                before = old.get(name) if old is not None else None
                if record.get(name) != before and value(rule, "readonly") is True:
                    errors.append(FieldError(name, "readonly", f"cannot be changed when {rule.compiled.expression}"))
        for rule in r.validations:
            if value(rule, f"rule:{rule.name}") is True:
                errors.append(FieldError(rule.field.name if rule.field is not None else None, f"rule:{rule.name}",
                                         rule.message))


    def _holds(self, when, record: dict, kwargs: dict, errors: list[FieldError], rule: Rule) -> bool:
        from engine import rules as lang

        try:
            return when.evaluate(record, **kwargs) is True
        except lang.RuleError as exc:
            errors.append(FieldError(rule.name, "follows", f"{rule.name}: {exc.message}"))
            return False

    def _follow(self, rule: Rule, record: dict, old: dict | None, given: dict, value: Any,
                errors: list[FieldError]) -> None:
        """``follows`` while its condition holds: the field takes the value; a user's different
        value for it is refused (read-only while it follows)."""
        name = rule.name
        if name in given and not self.context.system:
            before = old.get(name) if old is not None else value
            if record.get(name) != before:
                errors.append(FieldError(name, "readonly", f"follows {rule.compiled.expression} while "
                                                           f"{rule.when.expression}: it cannot be changed"))
                return
        record[name] = value


def fill_on_read(svc: "RecordService", conn, ent: "Entity", rules: EntityRules, rows: list[dict]) -> None:
    """Compute the formula fields without a column for ``rows`` (records as read): one SELECT for
    those the database can compute, the others in Python with their related records."""
    if not rows or not rules.on_read:
        return
    from engine import rules as lang

    now = datetime.now(timezone.utc)
    in_sql = [r for r in rules.on_read if r.compiled.sql_capable]
    in_python = [r for r in rules.on_read if not r.compiled.sql_capable]
    ids = [row["id"] for row in rows if row.get("id") is not None]
    if in_sql and ids:
        table = svc.table(ent.name)
        scope = lang.Scope(svc.metadata, ent.name, svc.model, dialect=svc.db.dialect, now=now)
        columns = [r.compiled.to_sql(scope).label(f"f_{i}") for i, r in enumerate(in_sql)]
        found: dict[int, tuple] = {}
        for start in range(0, len(ids), 1000):
            stmt = scope.apply(sa.select(table.c.id, *columns).where(table.c.id.in_(ids[start:start + 1000])))
            found.update({row[0]: tuple(row[1:]) for row in conn.execute(stmt)})
        for row in rows:
            values = found.get(row.get("id"), (None,) * len(in_sql))
            for rule, result in zip(in_sql, values):
                row[rule.name] = result_value(rule.field, result)
    if in_python:
        paths = frozenset(p for r in in_python for p in r.compiled.fields if "." in p)
        for row in rows:
            related = lang.fetch_related(conn, svc.metadata, svc.model, ent.name, row, paths) if paths else None
            for rule in in_python:
                try:
                    result = rule.compiled.evaluate(row, now=now, related=related)
                except lang.RuleError:
                    result = None
                row[rule.name] = result_value(rule.field, result)

