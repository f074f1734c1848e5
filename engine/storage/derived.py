"""Values a write takes from other records: line numbers within a parent, and defaults looked up in
another entity. Both are field properties, applied in the write's transaction before the formulas
(so a line total sees its looked-up price):

``sequence: {within: <lookup>}`` (integer fields)
    on create, when the value is not given: one more than the largest among the records with the
    same parent (1 for the first), and than the numbers this transaction already gave (a bulk
    write numbers its rows before inserting them). The parent's row is locked first (FOR UPDATE on PostgreSQL; a
    SQLite write transaction holds the database), so two concurrent inserts get 1 and 2, never 1
    and 1. The number is kept afterwards: reordering lines never renumbers them.

``default: {lookup: {entity: E, where: {field_of_E: formula, ...}, value: field_of_E}}``
    the value of ``value`` in the record of ``E`` whose fields equal the ``where`` formulas (evaluated
    on the record being written; they may follow lookups: ``quote.price_book``). Applied on create
    when the field is blank, and on update when a field the formulas read changed while the write
    left this field as it was; a write that gives the value keeps it. No match: the field stays as
    it is (and ``required`` reports it when blank).

``DerivedValues`` is registered by the core plugin at startup as a write hook for the entities that
declare either property (``crm_watches_writes``), so bulk writes of other entities keep their fast
path. ``check_derived`` is the load-time check (file:line), registered through ``crm_model_checks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import sqlalchemy as sa

from engine.plugins import hookimpl

from .errors import FieldError


@dataclass(frozen=True)
class Sequence:
    field: str
    within: str          # the lookup to the parent
    parent: str          # the parent entity


@dataclass(frozen=True)
class LookupDefault:
    field: str
    entity: str
    value: str
    where: tuple[tuple[str, Any], ...]   # (field of ``entity``, compiled formula on the written record)
    reads: frozenset[str]                # fields of the written record the formulas read (first segment)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(p for _, rule in self.where for p in rule.fields if "." in p)


@dataclass(frozen=True)
class Derived:
    sequences: tuple[Sequence, ...]
    lookups: tuple[LookupDefault, ...]


def derived_of(model, ent, functions=None) -> Derived | None:
    """The sequences and lookup defaults ``ent`` declares (None when it declares neither)."""
    from engine import rules

    sequences, lookups = [], []
    for f in ent.fields.values():
        seq = f.prop("sequence")
        if isinstance(seq, Mapping) and ent.fields.get(seq.get("within")) is not None:
            sequences.append(Sequence(f.name, seq["within"], ent.fields[seq["within"]].target))
        spec = f.default_lookup
        if spec is not None:
            where = tuple((k, rules.compile(str(v), ent.name, model, registry=functions))
                          for k, v in (spec.get("where") or {}).items())
            reads = frozenset(p.split(".")[0] for _, r in where for p in r.fields)
            lookups.append(LookupDefault(f.name, spec["entity"], spec["value"], where, reads))
    if not sequences and not lookups:
        return None
    return Derived(tuple(sequences), tuple(lookups))


class DerivedValues:
    """The write hook that fills sequences and lookup defaults (one per runtime)."""

    def __init__(self, svc):
        self.svc = svc
        self.by_entity = {name: d for name, ent in svc.model.entities.items()
                          if (d := derived_of(svc.model, ent, svc.functions)) is not None}

    @hookimpl
    def crm_watches_writes(self, entity) -> bool:
        return entity.name in self.by_entity

    @hookimpl
    def crm_before_write(self, event, entity, record, old, context, conn, errors, state) -> None:
        derived = self.by_entity.get(entity.name)
        if derived is None or event == "delete":
            return
        for lookup in derived.lookups:
            if self._wanted(lookup, record, old):
                self._look_up(conn, entity, lookup, record, old)
        if old is None:
            for seq in derived.sequences:
                if record.get(seq.field) is None:
                    record[seq.field] = self._next(conn, entity, seq, record, errors)

    @staticmethod
    def _wanted(lookup: LookupDefault, record: dict, old: dict | None) -> bool:
        if old is None:
            return record.get(lookup.field) is None
        if record.get(lookup.field) != old.get(lookup.field):
            return False          # the write gives the value
        return any(record.get(n) != old.get(n) for n in lookup.reads) or record.get(lookup.field) is None

    def _look_up(self, conn, entity, lookup: LookupDefault, record: dict, old: dict | None) -> None:
        from engine import rules

        svc = self.svc
        paths = lookup.paths
        related = rules.fetch_related(conn, svc.metadata, svc.model, entity.name, record, paths) if paths else None
        conditions = []
        table = svc.table(lookup.entity)
        for name, rule in lookup.where:
            try:
                value = rule.evaluate(record, prior=old, is_new=old is None, related=related)
            except rules.RuleError:
                return
            if value is None or value == "":
                return            # nothing to match on (no price book yet): leave the field alone
            conditions.append(table.c[name] == value)
        found = conn.execute(sa.select(table.c[lookup.value]).where(*conditions).limit(1)).first()
        if found is not None and found[0] is not None:
            record[lookup.field] = found[0]

    def _next(self, conn, entity, seq: Sequence, record: dict, errors: list[FieldError]) -> int | None:
        parent_id = record.get(seq.within)
        if parent_id is None:
            return None           # ``required`` on the lookup reports it
        svc = self.svc
        parent = svc.table(seq.parent)
        stmt = sa.select(parent.c.id).where(parent.c.id == parent_id)
        if not svc.db.is_sqlite:   # one numbering at a time per parent; SQLite's writer holds the database
            stmt = stmt.with_for_update()
        if conn.execute(stmt).first() is None:
            return None           # the lookup check reports the missing parent
        table = svc.table(entity.name)
        last = conn.execute(sa.select(sa.func.max(table.c[seq.field])).where(table.c[seq.within] == parent_id)).scalar()
        # a bulk write numbers all its rows before it inserts any: count on from what it already took
        taken = svc.db.txn_cache(conn).setdefault(("sequence", entity.name, seq.field), {})
        number = max(int(last or 0), taken.get(parent_id, 0)) + 1
        taken[parent_id] = number
        return number


def check_derived(*, model, declared: dict, problems, functions=None) -> None:
    """``sequence`` names a lookup of the entity; a lookup default names an entity, its fields and
    formulas that compile on the record being written."""
    from engine import rules

    for name, ent in model.entities.items():
        for f in ent.fields.values():
            fdecl = declared[name].fields[f.name]

            def report(message: str, *path, fdecl=fdecl, where=f"{name}.{f.name}") -> None:
                problems.add(fdecl.loc(*path), f"{where}: {message}")

            seq = f.prop("sequence")
            if isinstance(seq, Mapping):
                within = ent.fields.get(seq.get("within"))
                if within is None or not within.target:
                    report(f"sequence.within must name a lookup of {name} (got {seq.get('within')!r})", "sequence")
            spec = f.default_lookup
            if spec is None:
                continue
            other = model.entities.get(spec.get("entity"))
            if other is None:
                report(f"default.lookup.entity: there is no entity {spec.get('entity')!r}", "default")
                continue
            if spec.get("value") not in other.fields or not other.fields[spec["value"]].stored:
                report(f"default.lookup.value: {other.name} has no stored field {spec.get('value')!r}", "default")
            where = spec.get("where")
            if not isinstance(where, Mapping) or not where:
                report("default.lookup.where must map fields of the entity to formulas", "default")
                continue
            for key, text in where.items():
                if key not in other.fields or not other.fields[key].stored:
                    report(f"default.lookup.where: {other.name} has no stored field {key!r}", "default")
                    continue
                try:
                    rules.compile(str(text), name, model, registry=functions)
                except rules.RuleError as exc:
                    report(f"default.lookup.where.{key}: {exc.message} (in {text!r})", "default")
