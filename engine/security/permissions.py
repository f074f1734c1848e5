"""Who may do what: the one place where permissions are decided.

The roles of the model (``AppModel.roles``, from ``role:`` documents) are compiled once per model
into a ``RolePolicy`` per role: per entity the allowed operations, the record scope, the sharing
rule and the fields the role may not read (``hidden``, including computed fields derived from a
hidden field) or not edit. An ``Access`` binds a role to one user for one request; the record
service and the query layer call it (``context.access``) on every read and write:

- ``require(entity, op)``: the operation is allowed, else ``PermissionDenied`` (403, audited);
- ``visibility(svc, entity, table)``: the SQL condition of the records the user may see (scope OR
  sharing rule), or None for all; a record outside it is ``NotFound`` (404, never a 403);
- ``hidden(entity)``: fields absent from every answer, refused in filters, sorts and ``where=``;
- ``write_errors(entity, values)``: a field error for each field the user may not write.

An ``admin`` role bypasses all of it. A context without ``access`` (system writes, the CLI,
internal calls) is not restricted.
"""

from __future__ import annotations

from engine.messages import Msg
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, Iterable

import sqlalchemy as sa

from engine.metadata.model import AppModel, Entity, Grant
from engine.storage.errors import FieldError, PermissionDenied
from engine.storage.query import NOT_PERMITTED


@dataclass(frozen=True)
class EntityPolicy:
    """One role's rights on one entity."""

    allow: frozenset[str]
    scope: str
    share: str | None
    hidden: frozenset[str]      # not readable (and so not writable)
    readonly: frozenset[str]    # readable, not writable


class RolePolicy:
    """One role compiled against one model."""

    def __init__(self, model: AppModel, name: str):
        self.model, self.name = model, name
        role = model.roles.get(name)
        self.admin = bool(role and role.admin)
        grants = {e: (role.grant(e) if role else None) for e in model.entities}
        self.entities: dict[str, EntityPolicy | None] = {}
        hidden = {e: self._declared_hidden(model.entities[e], g) for e, g in grants.items() if g and g.allow}
        _derive_hidden(model, hidden)
        for e, grant in grants.items():
            if not grant or not grant.allow:
                self.entities[e] = None
                continue
            ent = model.entities[e]
            writes = bool(grant.allow & {"create", "update"})
            readonly = frozenset(f for f in ent.fields if f not in hidden[e]
                                 and (not writes or grant.fields.get(f, "edit") == "read"))
            self.entities[e] = EntityPolicy(grant.allow, grant.scope, grant.share, frozenset(hidden[e]), readonly)

    @staticmethod
    def _declared_hidden(ent: Entity, grant: Grant) -> set[str]:
        return {f for f, level in grant.fields.items() if level == "none" and f in ent.fields}


def _derive_hidden(model: AppModel, hidden: dict[str, set[str]]) -> None:
    """Computed fields reading a hidden field (or an entity the role cannot read) are hidden too:
    otherwise ``total = cost * 2`` would tell the cost. Repeated until nothing changes."""
    from engine import rules

    def unreadable(entity: str, path: tuple[str, ...]) -> bool:
        for i, seg in enumerate(path):
            if entity not in hidden or seg in hidden[entity]:
                return True
            field = model.entities[entity].fields.get(seg)
            target = field.target if field is not None else ("user" if seg in ("owner_id", "created_by", "updated_by") else None)
            if i < len(path) - 1:
                if target is None:
                    return False
                entity = target
        return False

    changed = True
    while changed:
        changed = False
        for name, fields in hidden.items():
            for field in model.entities[name].fields.values():
                if field.name in fields or not field.type.computed:
                    continue
                reads: list[tuple[str, tuple[str, ...]]] = []
                if field.prop("expr"):
                    try:
                        compiled = rules.compile(field.prop("expr"), name, model)
                    except rules.RuleError:
                        continue   # reported by the metadata checks
                    reads += [(name, tuple(p.split("."))) for p in compiled.fields]
                if field.type_name == "rollup":
                    child, _, _ = str(field.prop("of") or "").partition(".")
                    if field.prop("field"):
                        reads.append((child, (field.prop("field"),)))
                    if child not in hidden:
                        reads.append((child, ("id",)))
                if any(unreadable(e, p) for e, p in reads):
                    fields.add(field.name)
                    changed = True


class Policies:
    """Every role of one model, compiled on first use."""

    def __init__(self, model: AppModel):
        self.model = model
        self._roles: dict[str, RolePolicy] = {}
        self._lock = threading.Lock()

    def role(self, name: str | None) -> RolePolicy:
        key = name or ""
        found = self._roles.get(key)
        if found is None:
            with self._lock:
                found = self._roles.setdefault(key, RolePolicy(self.model, key))
        return found


_POLICIES: dict[str, Policies] = {}
_POLICIES_LOCK = threading.Lock()


def policies_of(model: AppModel) -> Policies:
    """The compiled roles of ``model`` (cached by the model's digest)."""
    found = _POLICIES.get(model.digest)
    if found is None:
        with _POLICIES_LOCK:
            found = _POLICIES[model.digest] = Policies(model)
    return found


def access_for(records, user_id: int, role: str | None = None) -> "Access":
    """The access of user ``user_id`` (its role read from the database unless given)."""
    if role is None:
        table = records.metadata.tables["user"]
        with records.db.read() as conn:
            role = conn.execute(sa.select(table.c.role).where(table.c.id == user_id)).scalar()
    return Access(records, policies_of(records.model).role(role), user_id)


class Access:
    """One user's rights for one request (or one automation run)."""

    def __init__(self, records, policy: RolePolicy, user_id: int):
        self.records, self.policy, self.user_id = records, policy, user_id
        self.admin = policy.admin

    @property
    def role(self) -> str:
        return self.policy.name

    @cached_property
    def user(self) -> dict:
        """The user's own record (for ``$user`` in sharing rules and for the team scope)."""
        table = self.records.metadata.tables["user"]
        with self.records.db.read() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == self.user_id)).first()
        return dict(row._mapping) if row is not None else {"id": self.user_id}

    # -- operations ---------------------------------------------------------------------------
    def can(self, entity: str, op: str) -> bool:
        if self.admin:
            return True
        grant = self.policy.entities.get(entity)
        return grant is not None and op in grant.allow

    def require(self, entity: str, op: str) -> None:
        if not self.can(entity, op):
            from .audit import audit

            audit(self.records, "permission_denied", user_id=self.user_id, entity=entity,
                  detail={"operation": op, "role": self.role})
            raise PermissionDenied(entity, op)

    # -- fields -------------------------------------------------------------------------------
    def hidden(self, entity: str) -> frozenset[str]:
        if self.admin:
            return frozenset()
        grant = self.policy.entities.get(entity)
        return grant.hidden if grant is not None else frozenset(self.records.model.entities[entity].fields)

    def readable_columns(self, entity: Entity, names: Iterable[str]) -> tuple[str, ...]:
        hidden = self.hidden(entity.name)
        return tuple(n for n in names if n not in hidden)

    def mask(self, entity: str, records: list[dict]) -> list[dict]:
        """Remove the hidden fields from ``records`` (in place); returns them."""
        hidden = self.hidden(entity)
        if hidden:
            for record in records:
                for name in hidden:
                    record.pop(name, None)
        return records

    def write_errors(self, entity: str, values: Any) -> list[FieldError]:
        """A field error per field of ``values`` this user may not write (hidden ones look unknown)."""
        if self.admin or not isinstance(values, dict):
            return []
        grant = self.policy.entities.get(entity)
        if grant is None:
            return []
        errors = []
        for name in values:
            if name in grant.hidden:
                errors.append(FieldError(name, "unknown", f"{entity} has no field {name!r} ({NOT_PERMITTED})"))
            elif name in grant.readonly:
                errors.append(FieldError(name, "forbidden", Msg("your role may read this field but not change it")))
        return errors

    def check_names(self, entity: str, names: Iterable[str]) -> None:
        """Fields named by a filter, sort, sparse fieldset or ``where=`` must be readable; dotted
        paths must go through entities the user reads whole (scope all), else a lookup would
        filter on records the user cannot see."""
        from engine.storage.query import QueryError

        for name in names:
            problem = self._path_problem(entity, tuple(name.split(".")))
            if problem:
                raise QueryError([FieldError(name, "unknown", f"{name!r}: {NOT_PERMITTED}")], entity)

    def _path_problem(self, entity: str, path: tuple[str, ...]) -> bool:
        if self.admin:
            return False
        model = self.records.model
        for i, seg in enumerate(path):
            grant = self.policy.entities.get(entity)
            if grant is None or seg in grant.hidden:
                return True
            if i and (grant.scope != "all"):
                return True
            if i < len(path) - 1:
                field = model.entities[entity].fields.get(seg)
                target = field.target if field is not None else (
                    "user" if seg in ("owner_id", "created_by", "updated_by") else None)
                if target is None:
                    return False
                entity = target
        return False

    # -- records ------------------------------------------------------------------------------
    def visibility(self, records, entity: str, table: sa.FromClause) -> Any:
        """The SQL condition of the records of ``entity`` this user may see; None for all of them."""
        if self.admin:
            return None
        grant = self.policy.entities.get(entity)
        if grant is None:
            return sa.false()
        if grant.scope == "all":
            return None
        owner = table.c.owner_id
        if grant.scope == "own":
            condition = owner == self.user_id
        elif grant.scope == "team":
            team = self.user.get("team")
            users = records.metadata.tables["user"]
            condition = owner == self.user_id if not team else owner.in_(
                sa.select(users.c.id).where(users.c.team == team).scalar_subquery())
        else:
            condition = owner.in_(sorted(self.subordinates | {self.user_id}))
        if grant.share:
            condition = sa.or_(condition, self._share(records, entity, grant.share, table))
        return condition

    def _share(self, records, entity: str, text: str, table) -> Any:
        from engine import rules

        compiled = rules.compile(text, entity, records.model, registry=records.functions)
        scope = rules.Scope(records.metadata, entity, records.model, dialect=records.db.dialect, user=self.user,
                            now=datetime.now(timezone.utc), table=table)
        return compiled.where(scope)

    def ensure_visible(self, records, conn, entity: str, record_id: int) -> None:
        """``NotFound`` (as for a record that does not exist) unless this user may see the record."""
        from engine.storage.errors import NotFound

        table = records.table(entity)
        condition = self.visibility(records, entity, table)
        if condition is not None and conn.execute(
                sa.select(table.c.id).where(table.c.id == record_id, condition)).first() is None:
            raise NotFound(entity, record_id)

    @cached_property
    def subordinates(self) -> set[int]:
        """Everyone below this user in the manager hierarchy (cycles end)."""
        users = self.records.metadata.tables["user"]
        with self.records.db.read() as conn:
            pairs = conn.execute(sa.select(users.c.id, users.c.manager).where(users.c.manager.is_not(None))).all()
        reports: dict[int, list[int]] = {}
        for uid, manager in pairs:
            reports.setdefault(manager, []).append(uid)
        found: set[int] = set()
        todo = [self.user_id]
        while todo:
            for uid in reports.get(todo.pop(), ()):
                if uid not in found and uid != self.user_id:
                    found.add(uid)
                    todo.append(uid)
        return found


__all__ = ["Access", "EntityPolicy", "NOT_PERMITTED", "Policies", "RolePolicy", "access_for", "policies_of"]
