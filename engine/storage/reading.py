"""Reading records: one by id, a few by field values, a page of a list (filters, a formula
condition, sort, keyset cursor, a capped count), many by id, a record's field history; and the
formula fields computed on read, with the compiled rules and rollups of each entity they need.

Every read takes the caller's ``Context``: with an ``access`` it sees only the records and fields its
role may read. ``Reads`` is a part of ``RecordService``; it uses the service's ``Rows``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.fields import FieldValueError
from engine.metadata.model import Entity

from .context import Context, access_for
from .errors import FieldError, ValidationFailed
from .formulas import EntityRules, RuleRunner, fill_on_read
from . import query as queries
from .query import (
    ListQuery,
    Page,
    QueryError,
    after_cursor,
    build_select,
    decode_cursor,
    encode_cursor,
)
from .rollups import rollups_of
from .tables import USER_ENTITY


class Reads:
    """Queries and computed-on-read formulas (a part of ``RecordService``)."""

    _functions: Any
    _rules: dict[str, Any]
    _rollups: dict[str, tuple]
    _graph: Any

    def get(self, entity: str, record_id: int, *, conn: Connection | None = None, context: Context = Context()) -> dict:
        ent = self._entity(entity)
        if conn is None:
            with self.db.read() as conn:
                return self.get(entity, record_id, conn=conn, context=context)
        access = access_for(context, ent, "read")
        record = self.computed(conn, ent, [self._load(conn, ent, record_id)])[0]
        if access is not None:
            access.ensure_visible(self, conn, ent.name, record_id)
            access.mask(ent.name, [record])
        return record

    def query(self, entity: str, *, where: dict[str, Any] | None = None, order_by: Iterable[str] = ("id",),
              limit: int = 100, offset: int = 0) -> list[dict]:
        """Records whose fields equal ``where``'s values, sorted by ``order_by`` (``-field`` descending).

        Values are coerced by their field types first, as a write would store them.
        """
        ent = self._entity(entity)
        table = self.table(entity)
        stmt = sa.select(table)
        writable = self.plan(ent).writable
        for name, value in (where or {}).items():
            if value is not None and name in writable:
                field = writable[name][0]
                try:
                    value = field.type.coerce(field, value)
                except FieldValueError as exc:
                    raise ValidationFailed([FieldError(name, exc.code, exc.message)], ent.name) from None
            stmt = stmt.where(table.c[name].is_(None) if value is None else table.c[name] == value)
        for key in order_by:
            col = table.c[key.lstrip("-")]
            stmt = stmt.order_by(col.desc() if key.startswith("-") else col.asc())
        with self.db.read() as conn:
            return self.computed(conn, ent, [dict(row._mapping) for row in conn.execute(stmt.limit(limit).offset(offset))])

    def list(self, q: ListQuery, *, timeout_ms: int | None = None, context: Context = Context()) -> Page:
        """One page of records: filters, a formula condition, sort, keyset cursor (or offset), and a
        capped count."""
        ent = self._entity(q.entity)
        table = self.table(ent.name)
        compiled = self._condition(ent, q.formula) if q.formula else None
        access = access_for(context, ent, "read")
        if access is not None:   # filters, sorts, fields and where= may name only readable fields
            access.check_names(ent.name, [*(f.field for f in q.filters), *(k.field for k in q.sort), *(q.columns or ()), *q.sums,
                                          *(compiled.fields if compiled is not None else ())])
            visible = access.visibility(self, ent.name, table)
            if visible is not None:
                q = replace(q, where=visible if q.where is None else sa.and_(q.where, visible))
        with self.db.read(timeout_ms=timeout_ms) as conn:
            scope = None
            if compiled is not None:
                scope = self._scope(conn, ent, compiled, context)
                condition = self._where(ent, compiled, scope)
                q = replace(q, where=condition if q.where is None else sa.and_(q.where, condition))
            stmt, keys = build_select(table, q, self._list_columns(ent, table, q))
            if q.cursor:
                stmt = stmt.where(after_cursor(table, keys, decode_cursor(ent, keys, q.cursor)))
            elif q.offset:
                stmt = stmt.offset(q.offset)
            if scope is not None:
                stmt = scope.apply(stmt)
            result = conn.execute(stmt.limit(q.limit + 1))
            names = list(result.keys())
            rows = [dict(zip(names, row)) for row in result]
            more = len(rows) > q.limit
            rows = self.computed(conn, ent, rows[:q.limit])
            if access is not None:
                access.mask(ent.name, rows)
            page = Page(rows, encode_cursor(keys, rows[-1]) if more and rows else None)
            if q.count:
                counted, _ = build_select(table, ListQuery(q.entity, q.filters, where=q.where), [table.c.id])
                counted = (scope.apply(counted) if scope is not None else counted).order_by(None)
                cap = queries.COUNT_CAP   # read at call time: one setting of the query layer
                capped = sa.select(sa.func.count()).select_from(counted.limit(cap + 1).subquery())
                page.total = conn.execute(capped).scalar()
                if page.total > cap:  # never count millions exactly on a page request
                    page.total, page.total_is_estimate = self.db.estimate_rows(conn, counted, cap + 1), True
            if q.sums:   # over every matching record the caller may read, not only this page
                summed, _ = build_select(table, ListQuery(q.entity, q.filters, where=q.where), [table.c[n] for n in q.sums])
                summed = (scope.apply(summed) if scope is not None else summed).order_by(None).subquery()
                row = conn.execute(sa.select(*(sa.type_coerce(sa.func.sum(summed.c[n]), table.c[n].type)
                                               for n in q.sums))).one()
                page.sums = dict(zip(q.sums, row))
        return page

    def _condition(self, ent: Entity, text: str):
        """A formula condition compiled once for SQL; any problem is a 400-class QueryError."""
        from engine import rules

        try:
            compiled = rules.compile(text, ent.name, self.model, registry=self.functions)
            if compiled.type not in ("boolean", "null"):
                raise rules.RuleTypeError(f"where needs a condition (TRUE or FALSE), not a {compiled.type}")
            if not compiled.sql_capable:
                raise rules.NotInSQLError(compiled.sql_problem or "this condition cannot run in the database")
        except rules.RuleError as exc:
            raise _where_error(ent, exc) from None
        return compiled

    @staticmethod
    def _where(ent: Entity, compiled, scope):
        """The condition in SQL; what only the SQL back end finds (a number the database cannot
        hold) is a QueryError too."""
        from engine import rules

        try:
            return compiled.where(scope)
        except rules.RuleError as exc:
            raise _where_error(ent, exc) from None

    def _scope(self, conn: Connection, ent: Entity, compiled, context: Context):
        from engine import rules

        user = None
        if "user" in compiled.uses and context.user_id is not None:
            user = self._load(conn, self.model.entity(USER_ENTITY), context.user_id)
        return rules.Scope(self.metadata, ent.name, self.model, dialect=self.db.dialect, user=user,
                           now=datetime.now(timezone.utc))

    @property
    def functions(self):
        """The formula functions: built-ins and every plugin's (``crm_formula_functions``)."""
        if self._functions is None:
            from engine import rules

            self._functions = rules.registry_from_plugins(self.hooks.pm) if self.hooks.pm else rules.default_registry()
        return self._functions

    def fetch_many(self, entity: str, ids: Iterable[int], *, context: Context = Context()) -> dict[int, dict]:
        """Records by id (for expanding lookups), one query per 1000 ids; only those the caller may see."""
        table = self.table(entity)
        wanted = sorted({i for i in ids if i is not None})
        found: dict[int, dict] = {}
        access = access_for(context, self._entity(entity), "read")
        visible = access.visibility(self, entity, table) if access is not None else None
        with self.db.read() as conn:
            for start in range(0, len(wanted), 1000):
                stmt = sa.select(table).where(table.c.id.in_(wanted[start:start + 1000]))
                if visible is not None:
                    stmt = stmt.where(visible)
                found.update({row.id: dict(row._mapping) for row in conn.execute(stmt)})
            self.computed(conn, self._entity(entity), list(found.values()))
        if access is not None:
            access.mask(entity, list(found.values()))
        return found

    # -- the formula language ------------------------------------------------------------------
    def rules_of(self, ent: Entity):
        """The compiled rules of ``ent`` (``EntityRules``), or None when it declares none."""
        try:
            return self._rules[ent.name]
        except KeyError:
            found = self._rules[ent.name] = EntityRules.of(self, ent)
            return found

    @property
    def computed_graph(self):
        """The model's one dependency graph of computed values (``engine.rules.dependencies``)."""
        if self._graph is None:
            from engine.rules.dependencies import ComputedGraph

            self._graph = ComputedGraph.of(self.model)
        return self._graph

    def rollups_of(self, ent: Entity) -> tuple:
        """The rollups aggregating records of ``ent`` (``rollups.Rollup``); empty for most entities."""
        try:
            return self._rollups[ent.name]
        except KeyError:
            found = self._rollups[ent.name] = rollups_of(self, ent)
            return found

    def rule_runner(self, conn: Connection, ent: Entity, context: Context):
        """A runner of ``ent``'s write-time rules for one transaction, or None when it has none."""
        rules = self.rules_of(ent)
        if rules is None or not rules.on_write:
            return None
        return RuleRunner(self, conn, ent, rules, context)

    def _list_columns(self, ent: Entity, table: sa.Table, q: ListQuery) -> list | None:
        """The columns a page needs: all of them, or with sparse fields only those asked for, the id
        and the sort keys (computed-on-read formulas may read anything, so they get every column)."""
        rules = self.rules_of(ent)
        if not q.columns or (rules is not None and rules.on_read):
            return None
        wanted = {"id", *q.columns, *(k.field for k in q.sort)}
        return [c for c in table.c if c.name in wanted]

    def computed(self, conn: Connection, ent: Entity, rows: list[dict]) -> list[dict]:
        """Fill in the formula fields computed on read (those reading other records); returns ``rows``."""
        rules = self.rules_of(ent)
        if rules is not None and rules.on_read:
            fill_on_read(self, conn, ent, rules, rows)
        return rows

    def history_of(self, entity: str, record_id: int, *, context: Context = Context()) -> list[dict]:
        """The field history of a record, oldest first (none of the fields the caller may not read)."""
        h = self.history
        stmt = sa.select(h).where(h.c.entity == entity, h.c.record_id == record_id).order_by(h.c.id)
        access = access_for(context, self._entity(entity), "read")
        with self.db.read() as conn:
            if access is not None:
                access.ensure_visible(self, conn, entity, record_id)
                hidden = access.hidden(entity)
                stmt = stmt.where(h.c.field.not_in(sorted(hidden))) if hidden else stmt
            return [dict(row._mapping) for row in conn.execute(stmt)]


def _where_error(ent: Entity, exc) -> QueryError:
    where = f" at column {exc.column}" if exc.column else ""
    return QueryError([FieldError("where", exc.kind, f"{exc.message}{where}")], ent.name)
