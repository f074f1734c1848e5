"""Where compiled SQL reads from: an entity's table, the joins its lookup paths need, and the
values of ``$user``, ``TODAY()`` and ``NOW()``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import runtime as rt
from .schema import FieldInfo


class Scope:
    """Where compiled SQL reads from: the entity's table (or an alias of it) plus the LEFT OUTER
    joins that lookup paths need, collected while expressions compile, and the values of ``$user``,
    ``TODAY()`` and ``NOW()`` (bound as parameters).

    ``scope.apply(select)`` adds the joins to a select; ``scope.from_clause()`` gives the join.
    """

    def __init__(self, metadata: sa.MetaData, entity: str, model=None, *, dialect: Any = "sqlite",
                 user: dict | None = None, now=None, table: sa.FromClause | None = None):
        self.metadata = metadata
        self.entity = entity
        self.model = model
        self.dialect = _dialect_name(dialect)
        table_name = model.entity(entity).table if model is not None else entity
        self.table = table if table is not None else metadata.tables[table_name]
        self.user = user or {}
        self.now, self.today = rt.clock(now)
        self._aliases: dict[tuple[str, ...], Any] = {}
        self._joins: list[tuple[Any, Any]] = []

    def column(self, info: FieldInfo):
        source = self.table
        for i, (entity, column, target) in enumerate(info.hops):
            key = info.path[:i + 1]
            alias = self._aliases.get(key)
            if alias is None:
                target_table = self.metadata.tables[self.model.entity(target).table if self.model else target]
                alias = target_table.alias(f"{'_'.join(key)}_{len(self._aliases) + 1}"[:60])
                self._aliases[key] = alias
                self._joins.append((alias, alias.c.id == source.c[column]))
            source = alias
        return source.c[info.column]

    @property
    def joins(self) -> list[tuple[tuple[str, ...], Any]]:
        """(lookup path, aliased table) for every join collected so far."""
        return list(self._aliases.items())

    def from_clause(self):
        joined = self.table
        for alias, onclause in self._joins:
            joined = joined.outerjoin(alias, onclause)
        return joined

    def apply(self, select: sa.Select) -> sa.Select:
        return select.select_from(self.from_clause()) if self._joins else select


def _dialect_name(dialect) -> str:
    if isinstance(dialect, str):
        name = dialect
    else:
        name = getattr(dialect, "name", None) or getattr(dialect, "dialect", None)
        if not isinstance(name, str):
            name = getattr(getattr(dialect, "engine", None), "dialect", None)
            name = getattr(name, "name", "sqlite")
    name = name.split("+")[0]
    return "postgresql" if name in ("postgres", "postgresql") else name
