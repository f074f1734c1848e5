"""Text -> syntax tree, with the lark LALR parser built once per process.

Expressions are capped before they reach the back ends: at most ``MAX_LENGTH`` characters,
``MAX_NODES`` pieces and ``MAX_DEPTH`` levels of nesting (each call or operator inside another is
one level). Deeper trees exhaust the recursion of the compilers and the nesting Python
allows in generated code, so they are a syntax error with a clear message, wherever they come from
(metadata or an API ``where=``). Text cannot hold a NUL character or a lone surrogate, written or
escaped: no database stores them.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .errors import Position, RuleSyntaxError

_GRAMMAR = Path(__file__).with_name("grammar.lark")
MAX_LENGTH = 10_000
MAX_NODES = 2_000
MAX_DEPTH = 30
#: Tree nodes that only group (a call's argument list, a function's name): no level of nesting.
_GROUPING = frozenset({"args", "name"})
_OPS = {"==": "=", "!=": "<>", "&&": "and", "||": "or", "!": "not"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'"}
_READABLE = {"NUMBER": "a number", "STRING": "a text in quotes", "NAME": "a field or function name",
             "USERVAR": "$user", "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "DOT": "'.'",
             "CMP": "a comparison", "ADD": "'+' or '-'", "MUL": "'*' or '/'", "POW": "'^'", "AMP": "'&'",
             "AND": "AND", "OR": "OR", "NOT": "NOT", "IN": "IN", "TRUE": "TRUE", "FALSE": "FALSE",
             "NULL": "NULL", "$END": "the end of the expression"}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(_GRAMMAR.read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=True)


def parse(text: str) -> ast.Node:
    """Parse ``text``; raises ``RuleSyntaxError`` with the position of the problem."""
    if not isinstance(text, str):
        raise RuleSyntaxError(f"an expression must be text, not {type(text).__name__}")
    if not text.strip():
        raise RuleSyntaxError("the expression is empty", Position.at(text, 0), text)
    if len(text) > MAX_LENGTH:
        raise RuleSyntaxError(f"the expression is longer than {MAX_LENGTH:,} characters", Position.at(text, 0), text)
    _check_characters(text)
    try:
        tree = _lark().parse(text)
        _check_size(tree, text)
        return _Build(text).transform(tree)
    except UnexpectedInput as exc:
        raise _syntax_error(text, exc) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, RuleSyntaxError):
            raise exc.orig_exc.with_expression(text) from None
        raise


def _check_characters(text: str) -> None:
    for offset, char in enumerate(text):
        if char == "\x00" or "\ud800" <= char <= "\udfff":
            raise RuleSyntaxError(f"the character {char!r} cannot be in an expression (no text can hold it)",
                                  Position.at(text, offset), text)


def _check_size(tree: Tree, text: str) -> None:
    """Refuse trees nested deeper than ``MAX_DEPTH`` or larger than ``MAX_NODES`` (walked without
    recursion: the tree is what is being checked)."""
    stack, nodes = [(tree, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise RuleSyntaxError(f"the expression has more than {MAX_NODES:,} parts; split it or use IN (...)",
                                  Position.at(text, 0), text)
        if depth > MAX_DEPTH:
            offset = getattr(node.meta, "start_pos", 0) if not getattr(node.meta, "empty", True) else 0
            raise RuleSyntaxError(f"the expression is nested more than {MAX_DEPTH} levels deep (calls and "
                                  "operators inside one another)", Position.at(text, offset), text)
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth if child.data in _GROUPING else depth + 1))


def _syntax_error(text: str, exc: UnexpectedInput) -> RuleSyntaxError:
    offset = getattr(exc, "pos_in_stream", None)
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        offset = len(text.rstrip())
        message = "the expression ends too early"
        expected = getattr(exc, "expected", None)
        if expected:
            message += f"; expected {_expected(expected)}"
        return RuleSyntaxError(message, Position.at(text, offset), text)
    if isinstance(exc, UnexpectedCharacters):
        char = text[offset] if offset is not None and offset < len(text) else "?"
        if char in "\"'":
            return RuleSyntaxError(f"this text has no closing {char}", Position.at(text, offset or 0), text)
        return RuleSyntaxError(f"unexpected character {char!r}", Position.at(text, offset or 0), text)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        offset = token.start_pos if token.start_pos is not None else (offset or 0)
        return RuleSyntaxError(f"unexpected {str(token)!r}; expected {_expected(exc.expected)}",
                               Position.at(text, offset), text)
    return RuleSyntaxError(str(exc).splitlines()[0], Position.at(text, offset or 0), text)


def _expected(names) -> str:
    names = set(names)
    if "NUMBER" in names:  # an operand is expected
        return "a value (a number, a text in quotes, a field, a function or '(')"
    words = sorted({_READABLE.get(n, n) for n in names})
    return ", ".join(words[:8]) + (" ..." if len(words) > 8 else "")


def text_literal(text: str) -> str:
    """``text`` written as a text literal of the language (the inverse of reading one): what a
    user typed, put into an expression, stays data."""
    escaped = (text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f"'{escaped}'"


def _unquote(raw: str, pos: Position, text: str) -> str:
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body) + 0 and len(body) >= i + 6:
                try:
                    code = int(body[i + 2:i + 6], 16)
                except ValueError:
                    code = None
                if code == 0 or (code is not None and 0xD800 <= code <= 0xDFFF):
                    raise RuleSyntaxError(f"the escape \\{body[i + 1:i + 6]} is no character a text can hold",
                                          Position.at(text, pos.offset + 1 + i), text)
                if code is not None:
                    out.append(chr(code))
                    i += 6
                    continue
            if nxt not in _ESCAPES:
                raise RuleSyntaxError(f"unknown escape \\{nxt} in a text (use \\\\ for a backslash)",
                                      Position.at(text, pos.offset + 1 + i), text)
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@v_args(meta=True)
class _Build(Transformer):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def _pos(self, item) -> Position:
        if isinstance(item, Token):
            return Position.at(self.text, item.start_pos, item.end_pos)
        if isinstance(item, ast.Node):
            return item.pos
        return Position.at(self.text, item.start_pos, item.end_pos)

    def number(self, meta, items):
        return ast.Literal(self._pos(items[0]), Decimal(str(items[0])), "number")

    def string(self, meta, items):
        pos = self._pos(items[0])
        return ast.Literal(pos, _unquote(str(items[0]), pos, self.text), "text")

    def true(self, meta, items):
        return ast.Literal(self._pos(items[0]), True, "boolean")

    def false(self, meta, items):
        return ast.Literal(self._pos(items[0]), False, "boolean")

    def null(self, meta, items):
        return ast.Literal(self._pos(items[0]), None, "null")

    def ref(self, meta, items):
        return ast.Ref(self._pos(items[0]), tuple(str(t) for t in items))

    def userref(self, meta, items):
        var, name = items
        if str(var).lower() != "$user":
            raise RuleSyntaxError(f"unknown global {str(var)!r} (only $user is known)", self._pos(var), self.text)
        return ast.UserRef(self._pos(var), str(name))

    def name(self, meta, items):
        return items[0]

    def args(self, meta, items):
        return list(items)

    def call(self, meta, items):
        name, args = items
        return ast.Call(self._pos(name), str(name).upper(), args or [])

    def unop(self, meta, items):
        op, operand = items
        word = str(op).lower()
        word = _OPS.get(word, word)
        return ast.Unary(self._pos(op), word, operand)

    def binop(self, meta, items):
        left, op, right = items
        word = str(op).lower()
        return ast.Binary(self._pos(op), _OPS.get(word, word), left, right)

    def in_(self, meta, items):
        operand, in_tok, args = items
        return ast.In(self._pos(in_tok), operand, args, False)

    def not_in(self, meta, items):
        operand, not_tok, _in, args = items
        return ast.In(self._pos(not_tok), operand, args, True)
