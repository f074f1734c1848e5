"""The dependency graph of the computed values of a model, across entities, built once per model.

A node is one field, ``(entity, field)``. An edge ``a -> b`` says "a change of ``a`` can change ``b``":

- a stored formula field reads fields of its own record: each of them -> the formula;
- a field that ``follows`` a computed value: the fields its ``value`` and ``when`` read -> it;
- a rollup aggregates a child entity: the child's lookup, the aggregated field and the fields of
  its ``where`` -> the rollup of the parent.

So a child write reaches its parent's rollups, the parent's formulas that read them, the
grandparent's rollups over those formulas, and so on. The record service follows these edges at
write time (a rollup change is written to the parent through its own update path, which orders its
formulas by this graph and recurses into the grandparent); ``crm validate`` refuses a cycle
(``check_computed_cycles``), and the migration's backfill fills new or changed computed fields in
this order (``order``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import ast
from .errors import RuleError
from .parser import parse

Node = tuple[str, str]   # (entity, field)


def reads(text: Any) -> set[str]:
    """The own fields an expression reads (the first step of each path); nothing if it does not parse."""
    if not isinstance(text, str):
        return set()
    try:
        tree = parse(text)
    except RuleError:
        return set()
    return {node.path[0] for node in ast.walk(tree) if isinstance(node, ast.Ref) and node.path}


def follows_of(fld) -> tuple[str, str] | None:
    """(value, when) of a field's ``follows``, or None."""
    spec = fld.prop("follows")
    if isinstance(spec, Mapping) and isinstance(spec.get("value"), str):
        return spec["value"], spec.get("when") if isinstance(spec.get("when"), str) else "TRUE"
    return None


@dataclass(frozen=True)
class ComputedGraph:
    """Edges between the fields of a model's computed values (see the module docstring)."""

    edges: Mapping[Node, frozenset[Node]]          # a -> the nodes a change of a can change
    computed: frozenset[Node] = field(default_factory=frozenset)   # nodes the engine computes

    @classmethod
    def of(cls, model) -> "ComputedGraph":
        edges: dict[Node, set[Node]] = {}
        computed: set[Node] = set()

        def add(sources: Iterable[Node], target: Node) -> None:
            computed.add(target)
            for source in sources:
                edges.setdefault(source, set()).add(target)

        for ent in model.entities.values():
            for f in ent.fields.values():
                here = (ent.name, f.name)
                if f.type_name == "formula" and f.stored:
                    add(((ent.name, n) for n in reads(f.prop("expr")) if n in ent.fields), here)
                elif f.type_name == "rollup":
                    child_name, _, lookup = str(f.prop("of") or "").partition(".")
                    child = model.entities.get(child_name)
                    if child is None:
                        continue
                    names = {lookup, *reads(f.prop("where"))}
                    if f.prop("function") != "COUNT" and f.prop("field"):
                        names.add(f.prop("field"))
                    add(((child.name, n) for n in names if n in child.fields), here)
                follows = follows_of(f)
                if follows is not None:
                    add(((ent.name, n) for n in reads(follows[0]) | reads(follows[1]) if n in ent.fields), here)
        return cls({k: frozenset(v) for k, v in edges.items()}, frozenset(computed))

    def cycles(self) -> list[list[Node]]:
        """Each cycle once (the nodes of a strongly connected component, in a path order)."""
        index: dict[Node, int] = {}
        low: dict[Node, int] = {}
        stack: list[Node] = []
        on: set[Node] = set()
        found: list[list[Node]] = []
        counter = [0]

        def visit(v: Node) -> None:   # Tarjan; the graphs are small (one node per field)
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in sorted(self.edges.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1 or v in self.edges.get(v, ()):
                    found.append(self._path(sorted(group)))

        for node in sorted(set(self.edges) | self.computed):
            if node not in index:
                visit(node)
        return found

    def _path(self, group: list[Node]) -> list[Node]:
        """The members of a cycle in an order that follows its edges from the first one."""
        members = set(group)
        path = [group[0]]
        while True:
            nxt = next((w for w in sorted(self.edges.get(path[-1], ())) if w in members and w not in path), None)
            if nxt is None:
                return path + [n for n in group if n not in path]
            path.append(nxt)

    def downstream(self, nodes: Iterable[Node]) -> set[Node]:
        """``nodes`` and every node a change of them can change."""
        seen = set(nodes)
        todo = list(seen)
        while todo:
            for w in self.edges.get(todo.pop(), ()):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    def order(self, nodes: Iterable[Node] | None = None) -> list[Node]:
        """The computed nodes (or those of ``nodes``) so that each comes after what it reads
        (a cycle, refused at load, would keep its members in name order)."""
        wanted = set(self.computed if nodes is None else nodes)
        incoming: dict[Node, int] = {n: 0 for n in wanted}
        for source, targets in self.edges.items():
            if source in wanted:
                for t in targets:
                    if t in wanted:
                        incoming[t] += 1
        ready = sorted(n for n, k in incoming.items() if k == 0)
        out: list[Node] = []
        while ready:
            n = ready.pop(0)
            out.append(n)
            for t in sorted(self.edges.get(n, ())):
                if t in incoming:
                    incoming[t] -= 1
                    if incoming[t] == 0:
                        ready.append(t)
        return out + sorted(wanted - set(out))
