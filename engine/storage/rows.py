"""The rows of the entity tables: one read by id (locked for a write), which ids exist, and the
low-level writes every path ends in: ``write_rows`` (one statement), ``execute_many`` (one statement,
many parameter sets: the bulk path's hot loop) and ``insert_many`` (many new rows and their ids).

A unique-index violation at any of them becomes a field error (``unique_violation``), never a 500.
``Rows`` is a part of ``RecordService``; it uses the service's ``model``, ``db`` and ``metadata``.
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.fields import INT64_MAX
from engine.metadata.model import Entity

from .errors import FieldError, NotFound, ValidationFailed
from .tables import index_name
from .values import Written


class Rows:
    """Tables and rows of the model's entities (a part of ``RecordService``)."""

    _compiled: dict[tuple, tuple]   # execute_many's compiled statements, by key
    _statements: dict[tuple, Any]   # statements of the hot paths, built once

    def table(self, entity: str) -> sa.Table:
        return self.metadata.tables[self._entity(entity).table]

    def _entity(self, name: str) -> Entity:
        try:
            return self.model.entities[name]
        except KeyError:
            raise NotFound("entity", name) from None

    def _load(self, conn: Connection, ent: Entity, record_id: Any, *, lock: bool = False) -> dict:
        """The stored row; with ``lock`` locked until the write transaction ends (FOR NO KEY UPDATE
        on PostgreSQL, which concurrent inserts of children pointing at the row through a foreign
        key do not conflict with; SQLite's write transaction already holds the whole database), so
        the version read is still the stored one when the UPDATE runs."""
        if isinstance(record_id, bool) or not isinstance(record_id, int) or not 0 < record_id <= INT64_MAX:
            raise NotFound(ent.name, record_id)
        table = self.table(ent.name)
        stmt = sa.select(table).where(table.c.id == record_id)
        result = conn.execute(stmt.with_for_update(key_share=True) if lock and not self.db.is_sqlite else stmt)
        row = result.first()
        if row is None:
            raise NotFound(ent.name, record_id)
        return dict(zip(result.keys(), row))

    def lock_rows(self, conn: Connection, ent: Entity, ids: list) -> dict[Any, dict]:
        """The stored rows of ``ids`` (those that exist), locked for this transaction in id order, as
        ``_load`` locks one (FOR NO KEY UPDATE, which a concurrent insert of a child holding a
        key-share lock on its parent through the foreign key does not block)."""
        key = ("lock", ent.name)
        stmt = self._statements.get(key)
        if stmt is None:
            table = self.table(ent.name)
            stmt = sa.select(table).where(table.c.id.in_(sa.bindparam("ids", expanding=True))).order_by(table.c.id)
            stmt = self._statements[key] = stmt if self.db.is_sqlite else stmt.with_for_update(key_share=True)
        out: dict[Any, dict] = {}
        for start in range(0, len(ids), 1000):
            result = conn.execute(stmt, {"ids": ids[start:start + 1000]})
            names = list(result.keys())
            out.update({row[0]: dict(zip(names, row)) for row in result})
        return out

    def _existing_ids(self, conn: Connection, entity: str, ids: list[int], access: Any = None) -> set[int]:
        """Which of ``ids`` exist (and, with ``access``, are records the caller may read)."""
        if access is not None and not access.can(entity, "read"):
            return set()
        table = self.table(entity)
        visible = access.visibility(self, entity, table) if access is not None else None
        found: set[int] = set()
        unique = sorted(set(ids))
        for start in range(0, len(unique), 5000):
            stmt = sa.select(table.c.id).where(table.c.id.in_(unique[start:start + 5000]))
            found.update(conn.execute(stmt if visible is None else stmt.where(visible)).scalars())
        return found

    def insert_many(self, conn: Connection, ent: Entity, records: list[dict],
                    constants: dict | None = None) -> list[int]:
        """Insert records (all with the same keys) in one executemany; return their ids in order.

        On SQLite the ids are the consecutive ids AUTOINCREMENT gives a table's new rows after the
        last one it gave, while this transaction holds the write lock, checked by counting them;
        elsewhere SQLAlchemy's batched INSERT .. RETURNING gives them.
        """
        table = self.table(ent.name)
        keys = tuple(k for k in records[0] if k in table.c)
        if not self.db.is_sqlite:
            stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
            rows = self.write_rows(conn, ent, stmt, [{k: r.get(k) for k in keys} for r in records]).rows
            return [row[0] for row in rows]
        before = self._last_id(conn, table)
        self.execute_many(conn, ent, ("insert", table.name, keys), lambda: sa.insert(table), records, keys,
                          constants=constants)
        ids = list(range(before + 1, before + 1 + len(records)))
        count = conn.execute(sa.select(sa.func.count()).where(table.c.id.between(ids[0], ids[-1]))).scalar()
        if count != len(records):  # pragma: no cover - would mean SQLite changed how it assigns rowids
            raise RuntimeError(f"bulk insert into {ent.name}: could not establish the new ids")
        return ids

    @lru_cache(maxsize=None)  # noqa: B019 - one statement per table for the service's lifetime
    def _insert_returning(self, table: sa.Table):
        return table.insert().returning(table.c.id)

    @staticmethod
    def _last_id(conn: Connection, table: sa.Table) -> int:
        """The id SQLite gave last in this table (AUTOINCREMENT keeps it in sqlite_sequence)."""
        seq = conn.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table.name}).scalar()
        highest = conn.execute(sa.select(sa.func.max(table.c.id))).scalar()
        return max(seq or 0, highest or 0)

    def execute_many(self, conn: Connection, ent: Entity | None, key: tuple, build, rows: list[dict],
                     column_keys: tuple[str, ...] | None = None, constants: dict | None = None) -> int:
        """One statement, many parameter sets: the bulk path's hot loop. Returns the rows affected.

        The statement (made by ``build()`` once per ``key``) is compiled once; on SQLite it goes to
        the driver's executemany with parameters processed by the columns' own bind processors,
        skipping SQLAlchemy's per-row bookkeeping; ``constants`` (the same for every row, such as
        timestamps) are processed once. Elsewhere SQLAlchemy runs it (psycopg pipelines). ``ent``
        None: a table of the engine's own (the run log, the audit), whose integrity errors are no
        field's.
        """
        if not rows:
            return 0
        if not self.db.is_sqlite:
            if constants:
                rows = [{**constants, **row} for row in rows]
            return self.write_rows(conn, ent, build(), rows).rowcount
        cached = self._compiled.get(key)
        if cached is None:
            compiled = build().compile(dialect=conn.dialect, column_keys=list(column_keys) if column_keys else None)
            order = list(compiled.positiontup)
            binds = [(name, compiled.binds[name].type._cached_bind_processor(conn.dialect),
                      None if compiled.binds[name].required else compiled.binds[name].effective_value)
                     for name in order]  # literals in the statement (version + 1) keep their value
            cached = self._compiled[key] = (str(compiled), binds)
        sql, binds = cached
        constants = constants or {}
        template, varying = [], []
        for index, (name, proc, fixed) in enumerate(binds):
            if name in constants or fixed is not None:
                value = constants.get(name, fixed)
                template.append(proc(value) if proc else value)
            else:
                template.append(None)
                varying.append((index, name, proc))
        params = []
        for row in rows:
            values = template.copy()
            for index, name, proc in varying:
                value = row.get(name)
                values[index] = proc(value) if proc and value is not None else value
            params.append(values)
        try:
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                cursor.executemany(sql, params)
                count = cursor.rowcount
            finally:
                cursor.close()
        except sqlite3.IntegrityError as exc:
            if ent is None:   # a table of the engine's own (run log, audit): no field to blame
                raise
            raise ValidationFailed([unique_violation(ent, exc)], ent.name) from None
        return count

    def write_rows(self, conn: Connection, ent: Entity | None, stmt, params: Any = None) -> Written:
        """Run a write; a unique-index violation becomes a field error, never a 500. (No savepoint:
        any error ends the whole write's transaction, which rolls back.)"""
        try:
            result = conn.execute(stmt, params)
            rows = result.all() if result.returns_rows else []
            return Written(rows, result.rowcount)
        except sa.exc.IntegrityError as exc:
            if ent is None:
                raise
            raise ValidationFailed([unique_violation(ent, exc)], ent.name) from None


def unique_violation(ent: Entity, exc: Exception) -> FieldError:
    """The field error of a refused write: the unique key it broke, else the database's own words."""
    text = str(getattr(exc, "orig", exc))
    for key in ent.unique_keys:
        sqlite_words = ", ".join(f"{ent.table}.{name}" for name in key)
        names = {index_name(ent.table, key, True)} | {i.name for i in ent.indexes if i.fields == key and i.name}
        if f"failed: {sqlite_words}" in text or any(f'"{name}"' in text for name in names):
            return FieldError(key[0], "unique", f"another {ent.name} already has this {' and '.join(key)}")
    first = text.splitlines()[0] if text else "constraint violated"
    return FieldError(None, "constraint", f"the database refused the write: {first}")
