"""The backfill of computed values in a migration: a stored formula, a rollup or a ``follows`` field
that is added to a populated table, or whose definition changes, is filled in by the migration
that brings it, so no record shows an empty (or stale) computed value.

The plan (``migrate.backfill_steps``) compares each computed column's definition
(``tables.computed_definition``, kept in the model snapshot) with the one last applied; a new or
changed one gets a ``backfill`` step, and so does every computed value that reads it, across
entities (``engine.rules.dependencies``), in the order of that graph. A column recorded before
definitions were kept counts as changed (filled once). The runtime hands ``backfill`` to
``apply_migration`` with its record service; the steps run in the migration's transaction, in batches of ``BATCH`` records with progress told to
``progress``; the values are written as bookkeeping (``rollups.write_computed``: no version, history
or hooks: a migration is not an edit).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from .migrate import Step
    from .records import RecordService

BATCH = 1000


def backfill(svc: "RecordService", conn: Connection, steps: list["Step"],
             progress: Callable[[str], None] | None = None) -> None:
    """Compute and write the columns of ``steps`` (in their order) for every record; ``svc`` is a
    record service of the new model (only its computations are used: no hooks run)."""
    say = progress or (lambda _message: None)
    for step in steps:
        ent = svc.model.entities[step.table]
        table = svc.table(ent.name)
        ids = list(conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars())
        fill = _filler(svc, conn, ent, ent.fields[step.column])
        for start in range(0, len(ids), BATCH):
            fill(ids[start:start + BATCH])
            say(f"backfill {ent.name}.{step.column}: {min(start + BATCH, len(ids))}/{len(ids)} records")


def _filler(svc, conn: Connection, ent, field) -> Callable[[list], None]:
    """A function writing ``field``'s computed value for a batch of record ids."""
    from engine.rules import RuleError

    from .formulas import result_value
    from .rollups import aggregates, write_computed

    table = svc.table(ent.name)
    if field.type_name == "rollup":
        child = svc.model.entities[field.prop("of").partition(".")[0]]
        rollup = next(r for r in svc.rollups_of(child) if r.field.name == field.name and r.parent.name == ent.name)

        def fill_rollup(ids: list) -> None:
            write_computed(conn, table, (field.name,), [(pid, (v,)) for pid, v in aggregates(svc, conn, child, rollup, ids).items()])
        return fill_rollup

    rule = next(r for r in svc.rules_of(ent).stored if r.name == field.name)

    def fill_formula(ids: list) -> None:
        now = datetime.now(timezone.utc)
        result = conn.execute(sa.select(table).where(table.c.id.in_(ids)))
        names = list(result.keys())
        out = []
        for row in result:
            record = dict(zip(names, row))
            try:
                if rule.when is not None and rule.when.evaluate(record, now=now) is not True:
                    continue   # ``follows`` not in force: the value typed in stays
                value = result_value(field, rule.compiled.evaluate(record, now=now))
            except RuleError:   # what a write would store too: blank (a ``follows`` keeps its value)
                if rule.when is not None:
                    continue
                value = None
            out.append((record["id"], (value,)))
        write_computed(conn, table, (field.name,), out)
    return fill_formula
