"""The ``conversion`` document kind compiled: what a record of the source entity turns into.

``compile_conversions(model, functions)`` -> ``({source entity: {name: Conversion}}, [Problem])``:
an entity may have several named conversions (a quote into an order, an order into a contract); the
first declared is its default (the unnamed API path). Every formula (``when``, ``converted_when``,
the values of ``map`` and ``stamp``) is compiled on the source entity with the type of the field it
fills; ``"@target"`` names the record chosen for another target (declared before it) and must fill a
lookup to that target's entity. A target's ``lines`` copy the source's child records into children
of the target (``from: child.lookup_to_source``, ``to: child.lookup_to_target``, ``map`` compiled on
the ``from`` child). Each problem carries the path inside its document, which the kind's check turns
into file:line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from engine.matching import NORMALISERS
from engine.metadata.declared import DocProblem as Problem
from engine.metadata.model import AppModel, Entity, Field, Label

#: Field types a match may compare (their values are text).
MATCHABLE = ("text", "email", "phone", "url", "textarea")


@dataclass(frozen=True)
class Value:
    """One field a conversion fills: from a formula over the source, or the record of a target."""

    field: str
    target_field: Field | None
    rule: Any = None          # CompiledRule, or None for a reference
    ref: str | None = None    # "@account" -> "account"


@dataclass(frozen=True)
class Match:
    field: str                # of the target entity
    source: str               # of the source entity
    by: str                   # a normaliser of engine.matching


@dataclass(frozen=True)
class Lines:
    """Child records of the source copied as children of a target's record."""

    source: str               # the child entity of the source ("quote_line")
    source_link: str          # its lookup to the source ("quote")
    entity: str               # the child entity created ("order_line")
    link: str                 # its lookup to the target ("order")
    values: tuple[Value, ...]
    order_by: tuple[str, ...]  # fields of the source child, "-" for descending


@dataclass(frozen=True)
class Target:
    name: str
    label: Label
    entity: str
    optional: bool
    existing: bool
    match: tuple[Match, ...]
    values: tuple[Value, ...]
    lines: tuple[Lines, ...] = ()

    @property
    def refs(self) -> set[str]:
        return {v.ref for v in self.values if v.ref}


@dataclass(frozen=True)
class Move:
    """Children of the source re-pointed: records of ``entity`` whose ``from_field`` names the source
    get ``field`` set to the record of target ``to``."""

    entity: str
    field: str
    from_field: str
    to: str


@dataclass(frozen=True)
class Conversion:
    name: str
    label: Label
    source: str
    when: Any                 # CompiledRule or None (always convertible)
    converted_when: Any       # CompiledRule, or None: converted as often as wanted (copy-forward)
    targets: tuple[Target, ...]
    stamp: tuple[Value, ...]
    lock: bool
    moves: tuple[Move, ...]

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)



def compile_conversions(model: AppModel, functions=None) -> tuple[dict[str, dict[str, Conversion]], list[Problem]]:
    """The model's conversion documents by source entity and name, and the problems found in them."""
    out: dict[str, dict[str, Conversion]] = {}
    names: set[str] = set()
    problems: list[Problem] = []
    for i, doc in enumerate(model.documents.get("conversion", ())):
        c = _Compiler(model, functions, problems, i)
        if doc["conversion"] in names:
            c.problem(("conversion",), f"conversion {doc['conversion']!r} is declared twice")
            continue
        names.add(doc["conversion"])
        conv = c.conversion(doc)
        if conv is None:
            continue
        out.setdefault(conv.source, {})[conv.name] = conv
    return out, problems


class _Compiler:
    def __init__(self, model: AppModel, functions, problems: list, doc: int):
        self.model, self.functions, self.problems, self.doc = model, functions, problems, doc
        self.failed = False

    def problem(self, path: tuple, message: str) -> None:
        self.failed = True
        self.problems.append(Problem(self.doc, path, message))

    def conversion(self, doc: Mapping) -> Conversion | None:
        source = self.model.entities.get(doc["source"])
        if source is None:
            self.problem(("source",), f"there is no entity {doc['source']!r}")
            return None
        when = self.formula(doc.get("when"), source, ("when",), "boolean") if doc.get("when") else None
        converted = (self.formula(doc["converted_when"], source, ("converted_when",), "boolean")
                     if doc.get("converted_when") else None)
        if converted is not None and (any("." in f for f in converted.fields) or "user" in converted.uses):
            self.problem(("converted_when",), "must read only the record's own fields (it is checked on every update)")
        if doc.get("lock") and converted is None:
            self.problem(("lock",), "lock needs converted_when (what says the record has been converted)")
        targets: list[Target] = []
        for name, t in doc["targets"].items():
            target = self.target(name, t, source, targets)
            if target is not None:
                targets.append(target)
        known = {t.name: t for t in targets}
        stamp = self.values(doc.get("stamp") or {}, source, source, ("stamp",), known, stamp=True)
        moves = [m for j, m in enumerate(doc.get("move") or ()) if self.move(m, source, known, ("move", j))]
        if self.failed:
            return None
        return Conversion(doc["conversion"], Label.of(doc.get("label"), doc["conversion"]), source.name, when,
                          converted, tuple(targets), tuple(stamp), bool(doc.get("lock")),
                          tuple(Move(m["entity"], m["field"], m.get("from_field") or m["field"], m["to"]) for m in moves))

    def target(self, name: str, t: Mapping, source: Entity, before: list[Target]) -> Target | None:
        at = ("targets", name)
        ent = self.model.entities.get(t["entity"])
        if ent is None:
            self.problem((*at, "entity"), f"there is no entity {t['entity']!r}")
            return None
        matches = []
        for j, m in enumerate(t.get("match") or ()):
            where = (*at, "match", j)
            if not t.get("existing"):
                self.problem(where, "match finds existing records: set existing: true to offer them")
            for key, entity in (("field", ent), ("from", source)):
                fld = entity.fields.get(m[key])
                if fld is None or fld.type_name not in MATCHABLE or not fld.stored:
                    self.problem((*where, key), f"{entity.name} has no text field {m[key]!r} to match on")
            if m["by"] not in NORMALISERS:
                self.problem((*where, "by"), f"no normaliser {m['by']!r} (known: {', '.join(NORMALISERS)})")
            matches.append(Match(m["field"], m["from"], m["by"]))
        known = {b.name: b for b in before}
        values = self.values(t.get("map") or {}, source, ent, (*at, "map"), known)
        lines = [x for j, spec in enumerate(t.get("lines") or ())
                 if (x := self.lines(spec, source, ent, (*at, "lines", j))) is not None]
        return Target(name, Label.of(t["label"], name) if t.get("label") else ent.label,
                      ent.name, bool(t.get("optional")), bool(t.get("existing")), tuple(matches), tuple(values),
                      tuple(lines))

    def lines(self, spec: Mapping, source: Entity, target: Entity, at: tuple) -> Lines | None:
        """``from: child.lookup`` (children of the source) -> ``to: child.lookup`` (of the target)."""
        ends = []
        for key, parent in (("from", source), ("to", target)):
            child_name, _, link = str(spec.get(key, "")).partition(".")
            child = self.model.entities.get(child_name)
            fld = child.fields.get(link) if child is not None else None
            if fld is None or fld.target != parent.name:
                self.problem((*at, key), f"{spec.get(key)!r} must be child_entity.lookup with the lookup "
                                         f"pointing to {parent.name}")
                return None
            ends.append((child, link))
        (src, src_link), (dst, dst_link) = ends
        values = self.values(spec.get("map") or {}, src, dst, (*at, "map"), {})
        if any(v.field == dst_link for v in values):
            self.problem((*at, "map", dst_link), f"{dst.name}.{dst_link} is set to the new {target.name}")
        order_by = tuple(spec.get("order_by") or ())
        for j, name in enumerate(order_by):
            if name.lstrip("-") not in src.fields or not src.fields[name.lstrip("-")].stored:
                self.problem((*at, "order_by", j), f"{src.name} has no stored field {name.lstrip('-')!r}")
        return Lines(src.name, src_link, dst.name, dst_link, tuple(values), order_by)

    def values(self, values: Mapping, source: Entity, into: Entity, at: tuple, known: dict[str, Target], *,
               stamp: bool = False) -> list[Value]:
        from engine.rules.schema import FIELD_TYPE_ALIASES

        out = []
        for name, text in values.items():
            fld = into.fields.get(name)
            where = (*at, name)
            if fld is None:
                self.problem(where, f"{into.name} has no field {name!r}")
                continue
            if not fld.stored or fld.type.computed or (fld.prop("readonly") and not stamp):
                self.problem(where, f"{into.name}.{name} is computed or read-only and cannot be set")
                continue
            if isinstance(text, str) and text.startswith("@"):
                ref = self.reference(text[1:], fld, into, where, known)
                if ref is not None:
                    if not stamp and ref.optional and fld.required:
                        self.problem(where, f"{into.name}.{name} is required but target {ref.name!r} is optional "
                                            "(skipped, it would leave the field blank)")
                    out.append(Value(name, fld, ref=ref.name))
                continue
            expect = None if fld.target or fld.type_name in ("reference", "user") else FIELD_TYPE_ALIASES.get(fld.type_name)
            rule = self.formula(text, source, where, expect)
            if rule is not None:
                out.append(Value(name, fld, rule=rule))
        return out

    def reference(self, name: str, fld: Field, into: Entity, where: tuple, known: dict[str, Target]) -> Target | None:
        target = known.get(name)
        if target is None:
            self.problem(where, f"'@{name}' names no target declared before this one")
            return None
        allowed = fld.prop("to") if fld.type_name == "reference" else [fld.target]
        if isinstance(allowed, str):
            allowed = [allowed]
        if target.entity not in (allowed or ()):
            self.problem(where, f"{into.name}.{fld.name} does not link to {target.entity} (the entity of '@{name}')")
            return None
        return target

    def move(self, m: Mapping, source: Entity, known: dict[str, Target], at: tuple) -> bool:
        ent = self.model.entities.get(m["entity"])
        if ent is None:
            self.problem((*at, "entity"), f"there is no entity {m['entity']!r}")
            return False
        target = known.get(m["to"])
        if target is None:
            self.problem((*at, "to"), f"there is no target {m['to']!r}")
            return False
        ok = True
        for key, entity in (("field", target.entity), ("from_field", source.name)):
            name = m.get(key) or m["field"]
            fld = ent.fields.get(name)
            links = (fld.prop("to") if fld is not None and fld.type_name == "reference" else
                     [fld.target] if fld is not None and fld.target else [])
            links = [links] if isinstance(links, str) else links
            if fld is None or entity not in (links or ()):
                self.problem((*at, key), f"{ent.name}.{name} is no lookup or reference to {entity}")
                ok = False
        return ok

    def formula(self, text: Any, ent: Entity, where: tuple, expect: str | None):
        from engine import rules
        from engine.rules.checks import _fits

        if not isinstance(text, str):
            self.problem(where, "must be a formula (text)")
            return None
        try:
            compiled = rules.compile(text, ent.name, self.model, registry=self.functions)
        except rules.RuleError as exc:
            at = f" at column {exc.column}" if getattr(exc, "column", None) else ""
            self.problem(where, f"{exc.kind.replace('_', ' ')} error{at}: {exc.message} (in {text!r})")
            return None
        if expect is not None and not _fits(compiled.type, expect):
            self.problem(where, f"must give {expect}, but gives {compiled.type} (in {text!r})")
            return None
        return compiled

