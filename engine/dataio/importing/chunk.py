"""One chunk of an import: cells converted, lookups resolved, duplicates checked, then one
``records.bulk`` call (two when duplicates update their match).

Duplicates (a create): the chunk's rows are checked against the entity's duplicate rules at once
(``engine.dataio.duplicates.check_many``: a few statements per chunk, rows of the same file
included), and the import's choice ``duplicates`` applies to each row that matches:

* ``error`` (default): the row is rejected, naming the records it looks like (the error file says so);
* ``skip``: the row is left out, counted as unchanged;
* ``create``: created anyway (past ``warn`` rules only; ``block`` rules still refuse), audited once per chunk;
* ``update``: the one record it matches is updated with the row's values (a row matching several,
  or a record the user may not see, is rejected).

The rows are then written with ``Context(duplicates="checked")``, so the write hook does not check
them again one by one.

Runs inside the write transaction the caller gives (``conn``): the job commits a chunk together
with its outcome rows and its checkpoint, or rolls it back (a dry run, a crash). For updates the
previous values of the fields the file sets are read first (one query per chunk), so a revert can
put them back; after the write one query reads the versions the import left (a later change is
seen by its moved version).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.query import system_field
from engine.storage.values import jsonable

from .convert import CellError, Converter
from .lookups import Resolver
from .mapping import Mapping


@dataclass
class Outcome:
    """What became of one data row."""

    row: int
    status: str                       # created | updated | unchanged | error
    cells: list[Any]
    record_id: int | None = None
    version: int | None = None
    previous: dict | None = None
    errors: list[dict] = field(default_factory=list)


def cell_json(value: Any) -> Any:
    """A cell as JSON (the error file writes it back as text)."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


class ChunkWriter:
    """Converts and writes chunks of one import (holds what lasts across chunks: the converter)."""

    def __init__(self, records, entity: str, headers: list[str], mapping: Mapping, *, mode: str, key: str | None,
                 unresolved: str, locale: str | None, context: Context, runtime=None, duplicates: str = "error"):
        self.records, self.entity, self.mode, self.key, self.context = records, entity, mode, key, context
        self.ent = records.model.entities[entity]
        self.fields = {**self.ent.fields, "owner_id": system_field("owner_id")}   # owners by name, like lookups
        self.columns = [(headers.index(col), col, name) for col, name in mapping.columns.items() if name]
        self.constants = dict(mapping.constants)
        self.converter = Converter(self.fields, locale)
        self.resolver = Resolver(records, self.fields, unresolved, context)
        self.lookups = {n for _, _, n in self.columns if n in self.fields and self.fields[n].target}
        # constants of lookups (and the owner) name their record as a cell would: resolved the same way
        self.lookups |= {n for n, v in self.constants.items()
                         if n in self.fields and self.fields[n].target and v not in (None, "")}
        self.runtime, self.duplicates = runtime, duplicates
        #: A dry run's unique values written by earlier chunks ({(key, value): who}); None: a real import.
        #: Each chunk of a dry run is rolled back, so the next one would not see them in the table.
        self.dry_uniques: dict | None = None

    def write(self, conn, rows: list[tuple[int, list[Any]]]) -> list[Outcome]:
        outcomes = [Outcome(number, "error", cells) for number, cells in rows]
        values: list[dict] = []
        pending: dict[str, set[str]] = {name: set() for name in self.lookups}
        for outcome, (number, cells) in zip(outcomes, rows):
            record: dict[str, Any] = {}
            for index, column, name in self.columns:
                cell = cells[index]
                if name in self.lookups and cell not in (None, ""):
                    record[name] = text = Converter.text(cell)
                    pending[name].add(text)
                    continue
                try:
                    value = self._id(cell) if name == "id" else self.converter.value(column, name, cell, number)
                except CellError as exc:
                    outcome.errors.append({"column": column, "field": name, "message": str(exc)})
                    continue
                if value is not None:
                    record[name] = value
            for name, value in self.constants.items():
                if name in self.lookups and name not in record and value not in (None, ""):
                    record[name] = text = f"#{value}" if isinstance(value, int) else Converter.text(value)
                    pending[name].add(text)
                    continue
                record.setdefault(name, value)
            values.append(record)
        self._resolve(conn, pending, values, outcomes)
        live = [i for i, o in enumerate(outcomes) if not o.errors]
        matched: list[int] = []
        if live and self.mode == "create" and self.runtime is not None:
            live, matched = self._duplicates(conn, live, values, outcomes)
        checked = self.mode == "create" and self.runtime is not None   # else the write hook checks each row
        context = replace(self.context, duplicates="checked") if checked else self.context
        if live:
            self._write(conn, live, values, outcomes, self.mode, context)
        if matched:
            self._write(conn, matched, values, outcomes, "update", context)
        if self.dry_uniques is not None:
            self._unique_across_chunks(conn, outcomes)
        for o in outcomes:   # only a rejected row keeps its cells (for the error file)
            o.cells = [cell_json(c) for c in o.cells] if o.status == "error" else []
        return outcomes

    def _duplicates(self, conn, live: list[int], values: list[dict], outcomes: list[Outcome]
                     ) -> tuple[list[int], list[int]]:
        """Apply the import's ``duplicates`` choice to the rows to create (see the module's docstring):
        the rows to create, and the rows that update the record they match (their ``id`` set)."""
        from engine.dataio.duplicates.check import check_many

        found = check_many(self.runtime, self.entity, [values[i] for i in live], self.context.access, conn=conn,
                           ids=[None] * len(live), within=True)
        create, update, overridden = [], [], 0
        for i, matches in zip(live, found):
            if not matches.found:
                create.append(i)
                continue
            named = [c for c in matches.candidates if c.id is not None]
            if self.duplicates == "skip":
                outcomes[i].status = "unchanged"
            elif self.duplicates == "create" and matches.action != "block":
                create.append(i)
                overridden += 1
            elif self.duplicates == "update" and len(named) == 1 and len(matches.candidates) == 1 \
                    and not matches.hidden:
                values[i]["id"] = named[0].id
                update.append(i)
            else:
                message = _duplicate_message(matches, self.duplicates, lambda at: outcomes[live[at]].row)
                field = next(iter(self._rule_fields(matches)), None)
                outcomes[i].errors.append({"column": self._column(field), "field": field, "message": message})
        if overridden and self.context.user_id is not None:
            from engine.security.audit import audit

            audit(self.records, "duplicate_override", user_id=self.context.user_id, entity=self.entity,
                  detail={"import": True, "rows": overridden}, conn=conn)
        return create, update

    def _rule_fields(self, matches) -> list[str]:
        from engine.dataio.duplicates.plugin import service_of

        rules = {r.name: r for r in service_of(self.runtime).rules_of(self.entity)}
        return [c.field for cand in matches.candidates if cand.rule in rules for c in rules[cand.rule].conditions]

    def _write(self, conn, live: list[int], values: list[dict], outcomes: list[Outcome], mode: str,
               context: Context) -> None:
        previous = self._previous(conn, [values[i] for i in live], mode)
        result = self.records.bulk(self.entity, [values[i] for i in live], mode=mode,
                                   key=self.key if mode == self.mode else None,
                                   atomic=False, context=context, conn=conn)
        for i, item in zip(live, result.items):
            outcome = outcomes[i]
            if item["status"] == "error":
                outcome.errors = [{"column": self._column(e["field"]), "field": e["field"], "message": e["message"]}
                                  for e in item.get("errors", [])]
                continue
            outcome.status, outcome.record_id = item["status"], item.get("id")
            if outcome.status == "updated":
                old = previous.get(outcome.record_id, {})
                outcome.previous = {k: old[k] for k in values[i] if k in old and k not in ("id", self.key)} \
                    | {"_version": old.get("version")}
        self._versions(conn, [o for o in outcomes if o.status in ("created", "updated")])

    def _unique_across_chunks(self, conn, outcomes: list[Outcome]) -> None:
        """A dry run: a row whose unique value an earlier chunk's row wrote fails, as the real import
        (which committed that chunk) would refuse it. Compared as stored (read back before the roll
        back), so values normalised on write compare as the table does; the upsert key is left out
        (a second row with that key updates the first one's record)."""
        keys = [k for k in self.ent.unique_keys if k != (self.key,)]
        written = [o for o in outcomes if o.status in ("created", "updated") and o.record_id is not None]
        if not keys or not written:
            return
        table = self.records.table(self.entity)
        names = sorted({n for key in keys for n in key})
        stored: dict[int, dict] = {}
        ids = [o.record_id for o in written]
        for start in range(0, len(ids), 5000):
            stmt = sa.select(table.c.id, *[table.c[n] for n in names]).where(table.c.id.in_(ids[start:start + 5000]))
            for row in conn.execute(stmt):
                stored[row[0]] = dict(zip(names, row[1:]))
        for o in written:
            who = ("id", o.record_id) if o.status == "updated" else ("row", o.row)   # created ids are rolled back
            for key in keys:
                value = tuple(stored.get(o.record_id, {}).get(n) for n in key)
                if None in value:
                    continue
                first = self.dry_uniques.setdefault((key, value), (who, o.row))
                if first[0] != who:
                    shown = " and ".join(f"{k} {v!r}" for k, v in zip(key, value))
                    o.status, o.record_id, o.version, o.previous = "error", None, None, None
                    o.errors.append({"column": self._column(key[0]), "field": key[0],
                                     "message": f"another {self.entity} already has {shown} (row {first[1]} "
                                                f"of this file)"})
                    break

    # -- steps ------------------------------------------------------------------------------------
    @staticmethod
    def _id(cell: Any) -> int:
        text = Converter.text(cell)
        if not text.isdigit():
            raise CellError(f"{cell!r} is not a record id")
        return int(text)

    def _column(self, name: str | None) -> str | None:
        return next((col for _, col, n in self.columns if n == name), None)

    def _resolve(self, conn, pending: dict[str, set[str]], values: list[dict], outcomes: list[Outcome]) -> None:
        for name, cells in pending.items():
            if not cells:
                continue
            found = self.resolver.resolve(conn, name, cells)
            for record, outcome in zip(values, outcomes):
                if name not in record:
                    continue
                ref = found.get(record[name])
                if isinstance(ref, CellError):
                    outcome.errors.append({"column": self._column(name), "field": name, "message": str(ref)})
                    del record[name]
                elif ref is None:
                    del record[name]
                else:
                    record[name] = ref

    def _previous(self, conn, values: list[dict], mode: str) -> dict[int, dict]:
        """The stored values (as JSON) of the records this chunk may update, by id."""
        if mode == "create":
            return {}
        column = (self.key if mode == self.mode else None) or "id"
        keys = [v[column] for v in values if v.get(column) is not None]
        if not keys:
            return {}
        table = self.records.table(self.entity)
        names = {n for v in values for n in v if n in table.c} | {"id", "version", column}
        out = {}
        for start in range(0, len(keys), 5000):
            stmt = sa.select(*(table.c[n] for n in names)).where(table.c[column].in_(keys[start:start + 5000]))
            for row in conn.execute(stmt):
                record = dict(row._mapping)
                out[record["id"]] = {n: (jsonable(self.fields[n], v) if n in self.fields else v)
                                     for n, v in record.items()}
        return out

    def _versions(self, conn, written: list[Outcome]) -> None:
        if not written:
            return
        table = self.records.table(self.entity)
        ids = [o.record_id for o in written]
        versions = dict(conn.execute(sa.select(table.c.id, table.c.version).where(table.c.id.in_(ids))).all())
        for o in written:
            o.version = versions.get(o.record_id)


def _duplicate_message(matches, choice: str, file_row) -> str:
    """Why a row that matches a duplicate rule was not written (``file_row``: a batch index -> the
    row number in the file, for a match with an earlier row of the same file)."""
    names = [f"{c.title} (#{c.id})" if c.id is not None else f"row {file_row(c.row)} of the file"
             for c in matches.candidates[:3]]
    if matches.hidden:
        names.append(f"{matches.hidden} record{'s' if matches.hidden != 1 else ''} you may not see")
    why = f"looks like a duplicate of {', '.join(names)} ({', '.join(sorted({c.rule for c in matches.candidates}))})"
    if matches.action == "block":
        return why + ": the rule blocks it"
    if choice == "update":
        return why + ": update needs exactly one matching record you may see"
    return why + "; import again choosing to skip, create or update duplicates"
