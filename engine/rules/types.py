"""The type checker: resolves references, picks functions, and gives every node its type.

Strict types: text is not a number (``1 = "1"`` is an error), ``&`` joins text, conditions must
be TRUE/FALSE. Every error names its position in the expression.
"""

from __future__ import annotations

from . import ast
from .errors import Position, RuleError, RuleRuntimeError, RuleTypeError, UnknownFieldError
from .functions import FunctionRegistry
from .schema import NUMERIC, TEXTUAL, Schema, Unresolved

_DESCRIBE = {"number": "a number", "currency": "a currency amount", "percent": "a percent", "text": "text",
             "picklist": "a picklist", "multipicklist": "a multi-select picklist", "boolean": "TRUE/FALSE",
             "date": "a date", "datetime": "a date/time", "id": "a record id (lookup)", "null": "NULL"}
_ORDERED = NUMERIC | {"text", "date", "datetime"}
_EQUATABLE = NUMERIC | TEXTUAL | {"boolean", "date", "datetime", "id"}
_CONTEXT_FUNCTIONS = frozenset({"TODAY", "NOW", "ISNEW", "ISCHANGED", "PRIORVALUE"})


def start_of(node: ast.Node) -> Position:
    """Position of the first character of a node's text."""
    while isinstance(node, (ast.Binary, ast.In)):
        node = node.left if isinstance(node, ast.Binary) else node.operand
    return node.pos


def describe(t: str) -> str:
    return _DESCRIBE.get(t, t)


def describe_kind(kind: str) -> str:
    parts = kind.split("|")
    if parts == ["any"]:
        return "any value"
    return " or ".join(describe(p) for p in parts)


def family(t: str) -> str:
    if t in NUMERIC:
        return "number"
    if t in TEXTUAL:
        return "text"
    return t


def accepts(kind: str, t: str) -> bool:
    if t == "null":
        return True
    for part in kind.split("|"):
        if part == "any" or part == t or (part == "number" and t in NUMERIC):
            return True
    return False


def unify_numeric(a: str, b: str) -> str:
    if a == b:
        return a
    if "currency" in (a, b):
        return "currency"
    return "number"


class Checker:
    def __init__(self, schema: Schema, registry: FunctionRegistry, text: str):
        self.schema = schema
        self.registry = registry
        self.text = text
        self.fields: set[str] = set()
        self.uses: set[str] = set()  # context: prior, is_new, now, user, related

    # -- errors -------------------------------------------------------------------------------------
    def fail(self, kind: str, message: str, where, *, operator: bool = False) -> None:
        """Raise at ``where``: a position, or a node (its first character, or its operator)."""
        if isinstance(where, Position) or where is None:
            pos = where
        else:
            pos = where.pos if operator else start_of(where)
        cls = {"type": RuleTypeError, "unknown_field": UnknownFieldError, "runtime": RuleRuntimeError}.get(kind, RuleError)
        raise cls(message, pos, self.text)

    def segment_position(self, node: ast.Node, index: int) -> Position:
        """Position of the index-th dotted segment of a reference."""
        offset = node.pos.offset
        if index == 0:
            return node.pos
        text, i, seen = self.text, offset, 0
        while i < len(text) and seen < index:
            if text[i] == ".":
                seen += 1
            i += 1
        while i < len(text) and text[i].isspace():
            i += 1
        return Position.at(text, i)

    # -- entry ----------------------------------------------------------------------------------------
    def check(self, node: ast.Node) -> str:
        method = getattr(self, "_" + type(node).__name__.lower())
        node.type = method(node)
        return node.type

    def adopt(self, node: ast.Node, t: str) -> None:
        """A NULL (or an untyped blank value) takes the type its context wants."""
        if node.type == "null" and t not in ("null", "any"):
            node.type = t
            if isinstance(node, ast.Call) and node.name in ("IF", "CASE", "BLANKVALUE", "NULLVALUE", "PRIORVALUE"):
                for arg in node.args:
                    self.adopt(arg, t)

    def expect_boolean(self, node: ast.Node, what: str) -> None:
        t = self.check(node)
        if t == "null":
            self.adopt(node, "boolean")
            return
        if t != "boolean":
            self.fail("type", f"{what} must be TRUE or FALSE, not {describe(t)}", node)

    # -- leaves -----------------------------------------------------------------------------------------
    def _literal(self, node: ast.Literal) -> str:
        return node.lit_type

    def _ref(self, node: ast.Ref) -> str:
        try:
            info = self.schema.resolve(node.path)
        except Unresolved as exc:
            self.fail("unknown_field", exc.message, self.segment_position(node, exc.segment))
        node.info = info
        self.fields.add(info.dotted)
        if len(node.path) > 1:
            self.uses.add("related")
        if info.type in ("json", "reference"):
            return info.type
        return info.type

    def _userref(self, node: ast.UserRef) -> str:
        try:
            info = self.schema.user(node.name)
        except Unresolved as exc:
            self.fail("unknown_field", f"$user: {exc.message}", node)
        node.info = info
        self.uses.add("user")
        return info.type

    # -- operators --------------------------------------------------------------------------------------
    def _unary(self, node: ast.Unary) -> str:
        if node.op == "not":
            self.expect_boolean(node.operand, "the operand of NOT")
            return "boolean"
        t = self.check(node.operand)
        if t == "null":
            self.adopt(node.operand, "number")
            return "number"
        if t not in NUMERIC:
            self.fail("type", f"unary {node.op} needs a number, not {describe(t)}", node, operator=True)
        return t

    def _binary(self, node: ast.Binary) -> str:
        op = node.op
        if op in ("and", "or"):
            self.expect_boolean(node.left, f"the left side of {op.upper()}")
            self.expect_boolean(node.right, f"the right side of {op.upper()}")
            return "boolean"
        a, b = self.check(node.left), self.check(node.right)
        if op in ("=", "<>", "<", "<=", ">", ">="):
            self.comparable(node, op, node.left, node.right)
            return "boolean"
        if op == "&":
            for side, t in ((node.left, a), (node.right, b)):
                if t == "null":
                    self.adopt(side, "text")
                elif t != "text":
                    hint = " (use TEXT() to turn it into text)"
                    self.fail("type", f"& joins text, but this side is {describe(t)}{hint}", side)
            return "text"
        return self.arithmetic(node, op, a, b)

    def arithmetic(self, node: ast.Binary, op: str, a: str, b: str) -> str:
        if a in TEXTUAL or b in TEXTUAL:
            hint = " (use & to join text)" if op == "+" else ""
            self.fail("type", f"{op} needs numbers, not {describe(a if a in TEXTUAL else b)}{hint}", node,
                      operator=True)
        if a == "null" and b == "null":
            self.adopt(node.left, "number")
            self.adopt(node.right, "number")
            return "number"
        if a == "null":
            a = self._adopt_side(node.left, b, op, left=True)
        if b == "null":
            b = self._adopt_side(node.right, a, op, left=False)
        if a in NUMERIC and b in NUMERIC:
            if op == "^":
                return a
            return unify_numeric(a, b)
        if op == "+":
            if a in ("date", "datetime") and b in NUMERIC:
                return a
            if b in ("date", "datetime") and a in NUMERIC:
                return b
        if op == "-":
            if a in ("date", "datetime") and b in NUMERIC:
                return a
            if a == b and a in ("date", "datetime"):
                return "number"
        if op in "+-" and {a, b} == {"date", "datetime"}:
            self.fail("type", "a date and a date/time cannot be mixed (use DATEVALUE or DATETIMEVALUE)", node,
                      operator=True)
        self.fail("type", f"{describe(a)} {op} {describe(b)} is not allowed", node, operator=True)

    def _adopt_side(self, side: ast.Node, other: str, op: str, left: bool) -> str:
        if other in NUMERIC:
            t = "number"
        elif other in ("date", "datetime"):
            t = other if (op == "-" and not left) else ("number" if not left else other)
        else:
            t = "number"
        self.adopt(side, t)
        return t

    def comparable(self, node: ast.Node, op: str, left: ast.Node, right: ast.Node) -> None:
        a, b = left.type, right.type
        if a == "null" and b == "null":
            return
        if a == "null":
            self.adopt(left, b)
            a = b
        if b == "null":
            self.adopt(right, a)
            b = a
        for t, side in ((a, left), (b, right)):
            if t == "multipicklist":
                self.fail("type", "a multi-select picklist cannot be compared; use INCLUDES()", side)
            if t not in _EQUATABLE:
                self.fail("type", f"{describe(t)} cannot be compared", side)
        fa, fb = family(a), family(b)
        ok = fa == fb or {fa, b} == {"id", "number"} or {a, fb} == {"id", "number"} or {fa, fb} == {"id", "number"}
        if not ok:
            self.fail("type", f"cannot compare {describe(a)} with {describe(b)}", node, operator=True)
        if op not in ("=", "<>"):
            for t, side in ((a, left), (b, right)):
                if t == "boolean":
                    self.fail("type", f"TRUE/FALSE values can only be compared with = and <>", side)
                if t == "picklist":
                    self.fail("type", f"a picklist can only be compared with = and <> (or use TEXT())", side)
        else:
            self.check_option(left, right)
            self.check_option(right, left)

    def check_option(self, ref: ast.Node, literal: ast.Node) -> None:
        """A text constant compared with a picklist must be one of its options (or '')."""
        info = getattr(ref, "info", None)
        if info is None or info.options is None or not isinstance(literal, ast.Literal):
            return
        if literal.lit_type != "text" or literal.value == "":
            return
        if literal.value not in info.options:
            options = ", ".join(sorted(info.options))
            self.fail("type", f"{literal.value!r} is not an option of {info.dotted} (options: {options})", literal)

    def _in(self, node: ast.In) -> str:
        self.check(node.operand)
        if not node.items:
            self.fail("type", "IN needs at least one value", node, operator=True)
        for item in node.items:
            self.check(item)
            self.comparable(node, "=", node.operand, item)
        return "boolean"

    # -- calls --------------------------------------------------------------------------------------------
    def _call(self, node: ast.Call) -> str:
        spec = self.registry.get(node.name)
        if spec is None:
            close = __import__("difflib").get_close_matches(node.name, self.registry.names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.fail("type", f"unknown function {node.name}{hint}", node)
        node.spec = spec
        count = len(node.args)
        if count < spec.minimum or (spec.maximum is not None and count > spec.maximum):
            if spec.maximum is None:
                wanted = f"at least {spec.minimum}"
            elif spec.minimum == spec.maximum:
                wanted = str(spec.minimum)
            else:
                wanted = f"{spec.minimum} to {spec.maximum}"
            self.fail("type", f"{node.name} takes {wanted} argument{'s' if wanted != '1' else ''}, "
                              f"got {count}", node)
        if node.name in _CONTEXT_FUNCTIONS:
            self.uses.add({"TODAY": "now", "NOW": "now", "ISNEW": "is_new"}.get(node.name, "prior"))
        special = getattr(self, "_fn_" + node.name.lower(), None) if spec.special else None
        if special is not None:
            return special(node)
        types = []
        for i, arg in enumerate(node.args):
            t = self.check(arg)
            kind = spec.kind_of(i)
            if not accepts(kind, t):
                hint = " (use TEXT() for a picklist)" if t == "picklist" and "text" in kind else ""
                hint = hint or (" (use TEXT() to turn it into text)" if "text" in kind.split("|") and t != "text" else "")
                self.fail("type", f"argument {i + 1} of {node.name} must be {describe_kind(kind)}, "
                                  f"not {describe(t)}{hint}", arg)
            if t == "null":
                first = kind.split("|")[0]
                self.adopt(arg, {"number": "number"}.get(first, first))
                t = arg.type
            types.append(t)
        if spec.check is not None:
            spec.check(self, node, types)
        return spec.return_type(types)

    def unify(self, nodes: list[ast.Node], what: str) -> str:
        known = [n.type for n in nodes if n.type != "null"]
        if not known:
            return "null"
        result = known[0]
        for t in known[1:]:
            if family(t) == family(result):
                result = unify_numeric(result, t) if result in NUMERIC else ("text" if t != result else t)
            else:
                bad = next(n for n in nodes if n.type == t)
                self.fail("type", f"{what} must all be of one type: {describe(result)} and {describe(t)}", bad)
        for n in nodes:
            self.adopt(n, result)
        return result

    def _fn_if(self, node):
        self.expect_boolean(node.args[0], "the condition of IF")
        for arg in node.args[1:]:
            self.check(arg)
        return self.unify(node.args[1:], "the results of IF")

    def _fn_case(self, node):
        if len(node.args) < 4 or len(node.args) % 2:
            self.fail("type", "CASE takes a value, then value/result pairs, then a default result "
                              f"(an even number of arguments, at least 4), got {len(node.args)}", node)
        subject, rest = node.args[0], node.args[1:]
        self.check(subject)
        results = []
        for i in range(0, len(rest) - 1, 2):
            self.check(rest[i])
            self.comparable(rest[i], "=", subject, rest[i])
            self.check(rest[i + 1])
            results.append(rest[i + 1])
        self.check(rest[-1])
        results.append(rest[-1])
        return self.unify(results, "the results of CASE")

    def _logical(self, node):
        for i, arg in enumerate(node.args):
            self.expect_boolean(arg, f"argument {i + 1} of {node.name}")
        return "boolean"

    _fn_and = _fn_or = _fn_not = _logical

    def _fn_isblank(self, node):
        self.check(node.args[0])
        return "boolean"

    _fn_isnull = _fn_isblank

    def _fn_blankvalue(self, node):
        for arg in node.args:
            self.check(arg)
        return self.unify(node.args, f"the arguments of {node.name}")

    _fn_nullvalue = _fn_blankvalue

    def _fn_isnew(self, node):
        return "boolean"

    def _fn_today(self, node):
        return "date"

    def _fn_now(self, node):
        return "datetime"

    def _field_argument(self, node) -> ast.Ref:
        arg = node.args[0]
        if not isinstance(arg, ast.Ref) or len(arg.path) != 1:
            self.fail("type", f"{node.name} takes a field of the record itself", arg)
        self.check(arg)
        return arg

    def _fn_ischanged(self, node):
        self._field_argument(node)
        return "boolean"

    def _fn_priorvalue(self, node):
        return self._field_argument(node).type


def check(tree: ast.Node, schema: Schema, registry: FunctionRegistry, text: str) -> Checker:
    checker = Checker(schema, registry, text)
    checker.check(tree)
    return checker
