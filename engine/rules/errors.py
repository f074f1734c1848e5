"""Errors of the formula language. Every error knows its kind and where in the expression it is.

``kind`` is one of ``syntax``, ``type``, ``unknown_field``, ``runtime`` and ``no_sql`` (an
expression that is valid but cannot be computed by the database: it reads a computed value, the
prior record, or calls a function without a SQL implementation). The position is the offset
(0-based) and the line and column (1-based) inside the expression, so the metadata loader can
add ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Position:
    """Where a piece of an expression starts (``offset`` 0-based; ``line``/``column`` 1-based)."""

    offset: int
    line: int
    column: int
    end: int | None = None

    @classmethod
    def at(cls, text: str, offset: int, end: int | None = None) -> "Position":
        offset = max(0, min(offset, len(text)))
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        return cls(offset, line, column, end)

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


class RuleError(Exception):
    """Base of every formula error. ``kind``, ``message``, ``position`` (or None) and ``expression``."""

    kind = "error"

    def __init__(self, message: str, position: Position | None = None, expression: str | None = None):
        super().__init__(message)
        self.message = message
        self.position = position
        self.expression = expression

    @property
    def offset(self) -> int | None:
        return None if self.position is None else self.position.offset

    @property
    def line(self) -> int | None:
        return None if self.position is None else self.position.line

    @property
    def column(self) -> int | None:
        return None if self.position is None else self.position.column

    def with_expression(self, expression: str) -> "RuleError":
        if self.expression is None:
            self.expression = expression
        return self

    def pointer(self) -> str:
        """The expression's offending line with a caret under the position ('' if unknown)."""
        if self.position is None or self.expression is None:
            return ""
        line = self.expression.split("\n")[self.position.line - 1]
        return f"{line}\n{' ' * (self.position.column - 1)}^"

    def __str__(self) -> str:
        where = f" at {self.position}" if self.position is not None else ""
        return f"{self.kind} error{where}: {self.message}"


class RuleSyntaxError(RuleError):
    kind = "syntax"


class RuleTypeError(RuleError):
    kind = "type"


class UnknownFieldError(RuleError):
    kind = "unknown_field"


class RuleRuntimeError(RuleError):
    kind = "runtime"


class NotInSQLError(RuleError):
    """The expression is valid but cannot be turned into SQL (see the message for the part)."""

    kind = "no_sql"
