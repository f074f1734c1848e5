"""Declarative changes become migrations: diff the model against what was last applied, plan, apply.

The plan compares the model's tables with the snapshot recorded by the last ``apply`` (in
``_crm_model``), so it knows each column's storage signature and can tell widening from narrowing.
A step that would lose values (dropping a populated column or table, a non-widening type change
on a column holding values) is refused unless ``allow_data_loss``; a unique index over duplicate
values is refused always. Every apply takes a backup first and runs in one transaction, with
alembic operations (batch mode, i.e. copy-and-move, on SQLite).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy.engine import Connection

from engine.fields import FieldValueError
from engine.metadata.model import AppModel

from .backup import backup
from .database import Database
from .tables import build_metadata

MODEL_TABLE = "_crm_model"


@dataclass
class Step:
    op: str
    table: str
    column: str | None = None
    detail: str = ""
    source: str | None = None          # the column's name before a rename in this plan
    old_sig: list | None = None
    new_sig: list | None = None
    index: dict | None = None
    loses_data: bool = False
    blocked: str | None = None

    def __str__(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        flags = " [LOSES DATA]" if self.loses_data else ""
        flags += f" [BLOCKED: {self.blocked}]" if self.blocked else ""
        return f"{self.op:<14} {target}{(' ' + self.detail) if self.detail else ''}{flags}"


@dataclass
class Plan:
    steps: list[Step]
    version: int
    digest: str
    previous_digest: str | None
    snapshot: dict = field(repr=False, default_factory=dict)

    @property
    def data_loss(self) -> list[Step]:
        return [s for s in self.steps if s.loses_data]

    @property
    def blocked(self) -> list[Step]:
        return [s for s in self.steps if s.blocked]

    @property
    def changes_model(self) -> bool:
        return bool(self.steps) or self.digest != self.previous_digest

    def describe(self) -> str:
        if not self.steps:
            return "Nothing to change in the database." + (
                "" if self.digest == self.previous_digest else " (metadata changed; the new model will be recorded)")
        return "\n".join(str(s) for s in self.steps)


class MigrationRefused(RuntimeError):
    """The plan would lose data (without ``allow_data_loss``) or cannot be applied; nothing was changed."""

    def __init__(self, plan: Plan, steps: list[Step], reason: str):
        self.plan, self.steps = plan, steps
        super().__init__(reason + "\n" + "\n".join(f"  {s}" for s in steps))


@dataclass
class Applied:
    version: int
    steps: list[Step]
    backup: Path | None


# -- snapshot -------------------------------------------------------------------------------------

def snapshot_of(md: sa.MetaData) -> dict:
    """What migrations compare: per table, columns (signature, foreign key) and indexes."""
    tables = {}
    for table in md.sorted_tables:
        columns = {}
        for col in table.columns:
            fk = next(iter(col.foreign_keys), None)
            columns[col.name] = {"sig": col.info.get("sig") or [type(col.type).__name__],
                                 "fk": fk.target_fullname if fk else None}
            if col.info.get("computed") is not None:
                columns[col.name]["computed"] = col.info["computed"]
        indexes = {ix.name: {"columns": [c.name for c in ix.columns], "unique": bool(ix.unique)}
                   for ix in table.indexes}
        tables[table.name] = {"columns": columns, "indexes": indexes}
    return {"tables": tables}


def applied_state(conn: Connection) -> tuple[int, str | None, dict]:
    """(version, digest, snapshot) of the last applied model, or (0, None, empty)."""
    if not sa.inspect(conn).has_table(MODEL_TABLE):
        return 0, None, {"tables": {}}
    row = conn.execute(sa.text(f"SELECT version, digest, snapshot FROM {MODEL_TABLE} "
                               "ORDER BY version DESC LIMIT 1")).first()
    if row is None:
        return 0, None, {"tables": {}}
    snap = row.snapshot if isinstance(row.snapshot, dict) else __import__("json").loads(row.snapshot)
    return row.version, row.digest, snap


# -- planning -------------------------------------------------------------------------------------

def plan_migration(db: Database, model: AppModel) -> Plan:
    md = build_metadata(model)
    new = snapshot_of(md)
    with db.read() as conn:
        version, digest, old = applied_state(conn)
        steps = _diff(old["tables"], new["tables"], md)
        for step in steps:
            _assess(conn, step, model)
        steps += backfill_steps(conn, model, old["tables"], new["tables"])
    return Plan(steps, version + 1, model.digest, digest, new)


def _diff(old: dict, new: dict, md: sa.MetaData) -> list[Step]:
    creates, renames, adds, alters, drop_ix, make_ix, drop_cols, drop_tables = ([] for _ in range(8))
    for name, table in new.items():
        if name not in old:
            creates.append(Step("create_table", name, detail=f"({len(table['columns'])} columns)"))
            continue
        before = old[name]
        renamed = {}
        for col, spec in table["columns"].items():
            source = col
            if col not in before["columns"]:
                source = md.tables[name].c[col].info.get("renamed_from")
                if not (source and source in before["columns"] and source not in table["columns"]):
                    adds.append(Step("add_column", name, col, str(spec["sig"]), new_sig=spec["sig"]))
                    continue
                renames.append(Step("rename_column", name, col, f"from {source}", source=source))
                renamed[source] = col
            old_sig = before["columns"][source]["sig"]
            if old_sig[0] == spec["sig"][0] == "ref" and old_sig != spec["sig"]:
                # A lookup to another entity: its old ids mean nothing there. Replace the column.
                alters.append(Step("replace_column", name, col, f"{old_sig} -> {spec['sig']}", source=source,
                                   old_sig=old_sig, new_sig=spec["sig"]))
            elif old_sig != spec["sig"]:
                alters.append(Step("alter_type", name, col, f"{old_sig} -> {spec['sig']}", source=source,
                                   old_sig=old_sig, new_sig=spec["sig"]))
        for col in before["columns"]:
            if col not in table["columns"] and col not in renamed:
                drop_cols.append(Step("drop_column", name, col))
        for ix, spec in table["indexes"].items():
            old_ix = before["indexes"].get(ix)
            same = old_ix is not None and old_ix["unique"] == spec["unique"] and \
                [renamed.get(c, c) for c in old_ix["columns"]] == spec["columns"]
            if not same:
                if old_ix is not None:
                    drop_ix.append(Step("drop_index", name, detail=ix))
                make_ix.append(Step("create_index", name, detail=ix, index=spec))
        for ix in before["indexes"]:
            if ix not in table["indexes"]:
                drop_ix.append(Step("drop_index", name, detail=ix))
    for name in old:
        if name not in new:
            drop_tables.append(Step("drop_table", name))
    return creates + renames + adds + alters + drop_ix + make_ix + drop_cols + drop_tables


def _assess(conn: Connection, step: Step, model: AppModel) -> None:
    """Mark steps that would lose stored values, or that the data makes impossible."""
    if step.op == "drop_table":
        rows = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{step.table}"')).scalar()
        if rows:
            step.loses_data, step.detail = True, f"holds {rows} rows"
    elif step.op == "drop_column":
        values = _non_null(conn, step.table, step.column)
        if values:
            step.loses_data, step.detail = True, f"holds {values} values"
    elif step.op == "replace_column":
        values = _non_null(conn, step.table, step.source or step.column)
        if values:
            step.loses_data = True
            step.detail += f": the lookup points elsewhere now; {values} stored ids would be dropped"
    elif step.op == "alter_type" and not _widening(model, step):
        rows, failures = _converted(conn, step, model, conn.dialect.name == "sqlite")
        if rows:
            step.loses_data = True
            step.detail += f": narrows or changes the type of a column holding {len(rows)} values"
            if failures:
                step.detail += (f"; {len(failures)} cannot be converted and would become empty "
                                f"(e.g. {'; '.join(failures[:3])})")
    elif step.op == "create_index" and step.index["unique"]:
        cols = ", ".join(f'"{c}"' for c in step.index["columns"])
        dupes = conn.execute(sa.text(f'SELECT COUNT(*) FROM (SELECT 1 FROM "{step.table}" '
                                     f"GROUP BY {cols} HAVING COUNT(*) > 1) d")).scalar()
        if dupes:
            step.blocked = f"{dupes} values occur more than once in {step.table}({cols.replace(chr(34), '')})"


def backfill_steps(conn: Connection, model: AppModel, old: dict, new: dict) -> list[Step]:
    """The ``backfill`` steps of a plan: new or changed computed columns of populated tables and
    what reads them, in dependency order."""
    from engine.rules.dependencies import ComputedGraph

    changed = set()
    for name, table in new.items():
        before = old.get(name)
        if before is None or name not in model.entities:   # a new table starts empty
            continue
        for col, spec in table["columns"].items():
            if "computed" in spec and before["columns"].get(col, {}).get("computed") != spec["computed"]:
                changed.add((name, col))
    if not changed:
        return []
    graph = ComputedGraph.of(model)
    steps = []
    for ent, col in graph.order(graph.downstream(changed) & graph.computed):
        if ent not in old:
            continue
        rows = conn.execute(sa.text(f'SELECT COUNT(*) FROM "{model.entities[ent].table}"')).scalar()
        if rows:
            why = "new or changed" if (ent, col) in changed else "reads a backfilled value"
            steps.append(Step("backfill", ent, col, f"({why}; {rows} records)"))
    return steps


def _non_null(conn: Connection, table: str, column: str) -> int:
    return conn.execute(sa.text(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" IS NOT NULL')).scalar()


# -- applying -------------------------------------------------------------------------------------

def apply_migration(db: Database, model: AppModel, *, backup_dir: Path, allow_data_loss: bool = False,
                    plan: Plan | None = None, fill: Callable | None = None,
                    progress: Callable[[str], None] | None = None) -> Applied:
    """Back up, then apply the plan in one transaction and record the model. All or nothing.
    ``fill(conn, steps, progress)`` runs the ``backfill`` steps (``engine.storage.backfill`` bound
    to a record service of ``model``: ``Runtime.migrate`` gives it); ``progress`` is told how they
    advance."""
    plan = plan or plan_migration(db, model)
    if plan.blocked:
        raise MigrationRefused(plan, plan.blocked, "The migration cannot be applied to the data as it is:")
    if plan.data_loss and not allow_data_loss:
        raise MigrationRefused(plan, plan.data_loss,
                               "The migration would lose data; run again with --allow-data-loss to accept:")
    if not plan.changes_model:
        return Applied(plan.version - 1, [], None)
    fills = [s for s in plan.steps if s.op == "backfill"]
    if fills and fill is None:
        raise MigrationRefused(plan, fills, "Computed values must be backfilled, which needs the record service "
                                            "(Runtime.migrate); nothing was changed:")
    saved = backup(db, backup_dir, f"before-v{plan.version}") if plan.steps else None
    md = build_metadata(model)
    with _ddl_transaction(db) as conn:
        version, _, _ = applied_state(conn)
        if version != plan.version - 1:
            raise MigrationRefused(plan, [], f"another migration (v{version}) was applied meanwhile; plan again")
        ops = Operations(MigrationContext.configure(conn))
        for step in plan.steps:
            if step.op != "backfill":
                _apply_step(ops, db, md, model, step)
        if fills:
            fill(conn, fills, progress)
        md.tables[MODEL_TABLE].create(conn, checkfirst=True)
        conn.execute(md.tables[MODEL_TABLE].insert().values(
            version=plan.version, digest=plan.digest, applied_at=datetime.now(timezone.utc),
            snapshot=plan.snapshot, plan=[asdict(s) for s in plan.steps], backup=str(saved) if saved else None))
        conn.execute(md.tables["_crm_audit"].insert().values(   # the audit log's own table exists by now
            at=datetime.now(timezone.utc), kind="migration",
            detail={"version": plan.version, "digest": plan.digest, "steps": [str(s) for s in plan.steps],
                    "backup": str(saved) if saved else None}))
        if db.is_sqlite:
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise MigrationRefused(plan, [], f"the migration would break foreign keys: {broken[:5]}")
    return Applied(plan.version, plan.steps, saved)


def _converted(conn: Connection, step: Step, model: AppModel, sqlite: bool) -> tuple[list[dict], list[str]]:
    """Every stored value of a column whose type changes, converted by the new field type.

    Returns the rows to write (``{"_id": id, "_v": value}``, value None where it cannot be
    converted) and a description of each failure. Conversion is exact: values are read as their
    old type stored them (scaled integers for decimals on SQLite) and given to the new type's
    ``coerce``, as if a user typed them in.
    """
    field = model.entities[step.table].fields[step.column]
    column = step.source or step.column
    stored = conn.execute(sa.text(f'SELECT id, "{column}" FROM "{step.table}" WHERE "{column}" IS NOT NULL'))
    rows, failures = [], []
    for rid, raw in stored:
        value = _decode(step.old_sig, raw) if sqlite else raw
        try:
            new = _coerce(field, value)
        except FieldValueError as exc:
            new = None
            failures.append(f"{step.table} {rid}: {_shown(value)!r} {exc.message}")
        rows.append({"_id": rid, "_v": new})
    return rows, failures


def _coerce(field, value):
    try:
        return field.coerce(value)
    except FieldValueError:
        if isinstance(value, str):
            raise
        return field.coerce(_shown(value))   # e.g. a number becoming text, a date becoming text


def _shown(value) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _decode(sig: list, raw):
    """A value as SQLite stores it -> the Python value of its old type."""
    kind = sig[0]
    if kind == "decimal":
        return Decimal(int(raw)).scaleb(-sig[2])
    if kind == "datetime" and isinstance(raw, str):
        return datetime.fromisoformat(raw).replace(tzinfo=timezone.utc)
    if kind == "date" and isinstance(raw, str):
        return date.fromisoformat(raw[:10])
    if kind == "boolean" and isinstance(raw, int):
        return bool(raw)
    return raw


class _ddl_transaction:
    """A write transaction for DDL; on SQLite foreign keys are off while tables are rebuilt."""

    def __init__(self, db: Database):
        self.db = db

    def __enter__(self) -> Connection:
        self.conn = self.db.engine.connect()
        if self.db.is_sqlite:  # must be set outside a transaction to take effect
            self.conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        self.tx = self.conn.begin()
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.tx.commit()
            else:
                self.tx.rollback()
        finally:
            if self.db.is_sqlite:
                self.conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
            self.conn.close()


def _apply_step(ops: Operations, db: Database, md: sa.MetaData, model: AppModel, step: Step) -> None:
    table = md.tables.get(step.table)
    if step.op == "create_table":
        table.create(ops.get_bind())
    elif step.op == "drop_table":
        ops.drop_table(step.table)
    elif step.op == "create_index":
        ops.create_index(step.detail, step.table, step.index["columns"], unique=step.index["unique"])
    elif step.op == "drop_index":
        ops.drop_index(step.detail, table_name=step.table)
    else:
        # A type change that does not widen rewrites every value, converted in Python by the new
        # field type before the column changes (the column's own cast would garble or round them).
        rewrite = None
        if step.op == "alter_type" and not _widening(model, step):
            rewrite, _ = _converted(ops.get_bind(), step, model, db.is_sqlite)
        with _alter(ops, db, step.table) as alter:
            if step.op == "add_column":
                alter.add_column(table.c[step.column]._copy())
            elif step.op == "rename_column":
                alter.alter_column(step.source, new_column_name=step.column)
            elif step.op == "replace_column":
                alter.drop_column(step.column)
                alter.add_column(table.c[step.column]._copy())
            elif step.op == "alter_type":
                column = table.c[step.column]
                kwargs = {}
                if not db.is_sqlite:
                    compiled = column.type.dialect_impl(ops.get_bind().dialect).compile(ops.get_bind().dialect)
                    source = "NULL" if rewrite is not None else f'"{step.column}"'
                    kwargs["postgresql_using"] = f"{source}::{compiled}"
                alter.alter_column(step.column, type_=column.type, **kwargs)
            elif step.op == "drop_column":
                alter.drop_column(step.column)
            else:  # pragma: no cover - the planner makes no other steps
                raise ValueError(f"unknown migration step {step.op}")
        if rewrite:
            stmt = table.update().where(table.c.id == sa.bindparam("_id")).values(
                {step.column: sa.bindparam("_v", type_=table.c[step.column].type)})
            ops.get_bind().execute(stmt, rewrite)


def _widening(model: AppModel, step: Step) -> bool:
    field = model.entities[step.table].fields.get(step.column) if step.table in model.entities else None
    return field is not None and field.type.widens(step.old_sig, step.new_sig)


class _alter:
    """Column changes: alembic batch mode (copy and move) on SQLite, plain ALTER elsewhere."""

    def __init__(self, ops: Operations, db: Database, table: str):
        self.ops, self.db, self.table = ops, db, table

    def __enter__(self):
        if self.db.is_sqlite:
            self.batch = self.ops.batch_alter_table(self.table)
            return self.batch.__enter__()
        return _Bound(self.ops, self.table)

    def __exit__(self, *exc):
        if self.db.is_sqlite:
            return self.batch.__exit__(*exc)
        return False


class _Bound:
    def __init__(self, ops: Operations, table: str):
        self.ops, self.table = ops, table

    def add_column(self, column):
        self.ops.add_column(self.table, column)

    def alter_column(self, name, **kwargs):
        self.ops.alter_column(self.table, name, **kwargs)

    def drop_column(self, name):
        self.ops.drop_column(self.table, name)
