"""The syntax tree of a formula. The type checker fills ``type`` (and ``info``/``spec``) in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Position


@dataclass(eq=False)
class Node:
    pos: Position
    type: str | None = field(default=None, init=False)

    def children(self) -> list["Node"]:
        return []


@dataclass(eq=False)
class Literal(Node):
    """A number (Decimal), text, boolean, NULL (None), or a folded constant (date, datetime)."""

    value: Any
    lit_type: str  # number, text, boolean, null, date, datetime


@dataclass(eq=False)
class Ref(Node):
    """A field of the record, or a path across lookups (``account.owner.email``)."""

    path: tuple[str, ...]
    info: Any = None  # FieldInfo, set by the checker


@dataclass(eq=False)
class UserRef(Node):
    """``$user.<field>``: the current user."""

    name: str
    info: Any = None


@dataclass(eq=False)
class Unary(Node):
    op: str  # "-", "+", "not"
    operand: Node

    def children(self):
        return [self.operand]


@dataclass(eq=False)
class Binary(Node):
    op: str  # + - * / ^ & = <> < <= > >= and or
    left: Node
    right: Node

    def children(self):
        return [self.left, self.right]


@dataclass(eq=False)
class In(Node):
    operand: Node
    items: list[Node]
    negated: bool = False

    def children(self):
        return [self.operand, *self.items]


@dataclass(eq=False)
class Call(Node):
    name: str  # upper case
    args: list[Node]
    spec: Any = None  # the Function, set by the checker

    def children(self):
        return list(self.args)


def walk(node: Node):
    """Every node of the tree, parents first."""
    yield node
    for child in node.children():
        yield from walk(child)
