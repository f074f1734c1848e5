"""Checked syntax tree -> one Python function, generated as source and compiled once.

The function has the signature of ``CompiledRule.evaluate``:
``(record, *, prior=None, is_new=False, user=None, now=None, related=None)``. Nothing is parsed or
type-checked per record; helpers that can fail sit on their own source line, so a runtime error is
reported with the position of the function call that raised it (read from the traceback).

Value conventions inside the generated code: text and picklists are ``str`` ("" when blank),
booleans are ``bool`` (never blank), multi-select picklists a sequence (empty when blank); numbers
(Decimal or int), dates, date/times and ids may be ``None`` (blank).
"""

from __future__ import annotations

import itertools
import re
import traceback
from decimal import Decimal
from typing import Any

from . import ast
from . import runtime as rt
from .errors import Position, RuleError, RuleRuntimeError
from .schema import NUMERIC, TEXTUAL

_FILENAME_COUNTER = itertools.count()
_MARKER = re.compile(r"#@(\d+)$")
_EMPTY: dict = {}


def blank_code(t: str) -> str:
    if t in TEXTUAL or t == "text":
        return '""'
    if t == "boolean":
        return "False"
    if t == "multipicklist":
        return "()"
    return "None"


def blank_value(t: str) -> Any:
    return {"text": "", "picklist": "", "boolean": False, "multipicklist": ()}.get(t)


class PythonGenerator:
    def __init__(self, *, blank_as_zero: bool = False, text: str = ""):
        self.blank_as_zero = blank_as_zero
        self.text = text
        self.ns: dict[str, Any] = {
            "_Fail": rt.Fail, "_add": rt.CTX.add, "_sub": rt.CTX.subtract, "_mul": rt.CTX.multiply,
            "_div": rt.div, "_pow": rt.power, "_walk": rt.walk, "_ident": rt.ident, "_same": rt.same,
            "_date_add": rt.date_add, "_date_diff": rt.date_diff, "_dt_add": rt.dt_add, "_dt_diff": rt.dt_diff,
            "_to_int": rt.to_int, "_clock": rt.clock, "_as_decimal": rt.as_decimal, "_E": _EMPTY,
        }
        self._consts: dict[tuple, str] = {}
        self._temps = itertools.count(1)
        self.markers: list[Position] = []
        self.uses_now = False

    # -- helpers ------------------------------------------------------------------------------------
    def const(self, value: Any) -> str:
        key = (type(value).__name__, value if not isinstance(value, (set, frozenset)) else tuple(sorted(map(repr, value))))
        name = self._consts.get(key)
        if name is None:
            name = f"_c{len(self._consts) + 1}"
            self._consts[key] = name
            self.ns[name] = value
        return name

    def temp(self) -> str:
        return f"_t{next(self._temps)}"

    def bind(self, name: str, value: Any) -> str:
        self.ns[name] = value
        return name

    def marked(self, node: ast.Node, fn: str, args: list[str]) -> str:
        """A call on its own line, so a runtime error can be traced to ``node``'s position."""
        self.markers.append(node.pos)
        return f"\n{fn}( #@{len(self.markers) - 1}\n{', '.join(args)})"

    def normalise(self, raw: str, t: str) -> tuple[str, bool]:
        if t in TEXTUAL:
            return f"({raw} or '')", False
        if t == "boolean":
            return f"({raw} is True)", False
        if t == "multipicklist":
            return f"({raw} or ())", False
        if t == "id":
            return f"_ident({raw})", True
        if t in NUMERIC and self.blank_as_zero:
            return f"({raw} or 0)", False
        return raw, True

    # -- nodes ------------------------------------------------------------------------------------------
    def gen(self, node: ast.Node) -> tuple[str, bool]:
        """(code, may be None)."""
        return getattr(self, "_" + type(node).__name__.lower())(node)

    def _literal(self, node: ast.Literal) -> tuple[str, bool]:
        value, t = node.value, node.type
        if value is None:
            code = blank_code(t)
            return code, code == "None"
        if isinstance(value, bool):
            return repr(value), False
        if isinstance(value, str):
            return repr(value), False
        if isinstance(value, int):
            value = Decimal(value)
        if isinstance(value, (list, tuple)):
            return self.const(tuple(value)), False
        return self.const(value), False

    def access(self, keys: tuple[tuple[str, ...], ...], node: ast.Node, root: str = "r") -> str:
        if len(keys) == 1:
            alternatives = keys[0]
            if len(alternatives) == 1:
                return f"{root}.get({alternatives[0]!r})"
            code = f"{root}.get({alternatives[0]!r})"
            for key in alternatives[1:]:
                code = f"({code} if {alternatives[0]!r} in {root} else {root}.get({key!r}))"
            return code
        return self.marked(node, "_walk", [root, "related", self.const(keys)])

    def gen_raw(self, node) -> str:
        if isinstance(node, ast.Ref):
            return self.access(node.info.keys or (node.path,), node)
        keys = node.info.keys[:1] if node.info.keys else ((node.name,),)
        return self.access(keys, node, "(user or _E)")

    def _ref(self, node: ast.Ref) -> tuple[str, bool]:
        return self.normalise(self.access(node.info.keys or (node.path,), node), node.type)

    def _userref(self, node: ast.UserRef) -> tuple[str, bool]:
        keys = node.info.keys[:1] if node.info.keys else ((node.name,),)
        return self.normalise(self.access(keys, node, "(user or _E)"), node.type)

    def _unary(self, node: ast.Unary) -> tuple[str, bool]:
        code, nullable = self.gen(node.operand)
        if node.op == "not":
            return f"(not {code})", False
        if node.op == "+":
            return code, nullable
        if not nullable:
            return f"(-{code})", False
        t = self.temp()
        return f"(None if ({t} := {code}) is None else -{t})", True

    def propagate(self, parts: list[tuple[str, bool]], build, blank: str = "None") -> tuple[str, bool]:
        """``build(codes)`` with a blank result when any nullable part is None."""
        codes, tests = [], []
        for code, nullable in parts:
            if nullable:
                t = self.temp()
                tests.append(f"({t} := {code}) is None")
                codes.append(t)
            else:
                codes.append(code)
        if not tests:
            return build(codes), False
        return f"({blank} if {' or '.join(tests)} else {build(codes)})", blank == "None"

    def _binary(self, node: ast.Binary) -> tuple[str, bool]:
        op = node.op
        a, b = self.gen(node.left), self.gen(node.right)
        if op in ("and", "or"):
            return f"({a[0]} {op} {b[0]})", False
        if op == "&":
            return f"({a[0]} + {b[0]})", False
        if op in ("=", "<>"):
            sym = "==" if op == "=" else "!="
            for side, other in ((node.left, node.right), (node.right, node.left)):
                if isinstance(side, (ast.Ref, ast.UserRef)) and side.type in TEXTUAL and \
                        isinstance(other, ast.Literal) and isinstance(other.value, str) and other.value:
                    raw = self.gen_raw(side)  # a blank text is never equal to a non-empty constant
                    return f"({raw} {sym} {other.value!r})", False
            return f"({a[0]} {sym} {b[0]})", False
        if op in ("<", "<=", ">", ">="):
            if not a[1] and not b[1]:
                return f"({a[0]} {op} {b[0]})", False
            code, _ = self.propagate([a, b], lambda c: f"{c[0]} {op} {c[1]}", "False")
            return code, False
        ta, tb = node.left.type, node.right.type
        if ta in NUMERIC and tb in NUMERIC or (ta == "null" or tb == "null") and node.type in NUMERIC \
                and ta not in ("date", "datetime") and tb not in ("date", "datetime"):
            fn = {"+": "_add", "-": "_sub", "*": "_mul"}.get(op)
            if fn is not None:
                return self.propagate([a, b], lambda c: f"{fn}({c[0]}, {c[1]})")
            helper = "_div" if op == "/" else "_pow"
            return self.propagate([a, b], lambda c: self.marked(node, helper, c))
        if ta == "date" and op in "+-" and tb != "date":
            sign = "" if op == "+" else "-"
            return self.propagate([a, b], lambda c: self.marked(node, "_date_add", [c[0], f"{sign}{c[1]}"]))
        if tb == "date" and op == "+":
            return self.propagate([a, b], lambda c: self.marked(node, "_date_add", [c[1], c[0]]))
        if ta == "date" and tb == "date":
            return self.propagate([a, b], lambda c: f"_date_diff({c[0]}, {c[1]})")
        if ta == "datetime" and op in "+-" and tb != "datetime":
            sign = "" if op == "+" else "-"
            return self.propagate([a, b], lambda c: self.marked(node, "_dt_add", [c[0], f"{sign}{c[1]}"]))
        if tb == "datetime" and op == "+":
            return self.propagate([a, b], lambda c: self.marked(node, "_dt_add", [c[1], c[0]]))
        if ta == "datetime" and tb == "datetime":
            return self.propagate([a, b], lambda c: f"_dt_diff({c[0]}, {c[1]})")
        raise RuleError(f"cannot generate {ta} {op} {tb}", node.pos, self.text)

    def _in(self, node: ast.In) -> tuple[str, bool]:
        operand, _ = self.gen(node.operand)
        if all(isinstance(i, ast.Literal) for i in node.items):
            values = []
            for item in node.items:
                value = item.value if item.value is not None else blank_value(item.type)
                values.append(Decimal(value) if isinstance(value, int) and not isinstance(value, bool) else value)
            code = f"({operand} in {self.const(frozenset(values))})"
        else:
            t = self.temp()
            tests = [f"{t} == {self.gen(i)[0]}" for i in node.items]
            tests[0] = f"({t} := {operand}) == {self.gen(node.items[0])[0]}"
            code = f"({' or '.join(tests)})"
        return (f"(not {code})" if node.negated else code), False

    # -- calls --------------------------------------------------------------------------------------------
    def _call(self, node: ast.Call) -> tuple[str, bool]:
        spec = node.spec
        if spec.special:
            return getattr(self, "_fn_" + node.name.lower())(node)
        parts = [self.gen(a) for a in node.args]
        if spec.inline is not None:
            build = lambda c: spec.inline.format(*c)  # noqa: E731
        else:
            fn = self.bind(f"_f_{node.name}", spec.python)
            build = lambda c: self.marked(node, fn, c)  # noqa: E731
        if spec.blanks == "pass":
            code = build([p[0] for p in parts])
            nullable = spec.nullable if spec.nullable is not None else node.type not in TEXTUAL | {"boolean", "multipicklist"}
            return code, nullable
        blank = blank_code(node.type)
        code, nullable = self.propagate(parts, build, blank)
        if spec.nullable:
            nullable = True
        return code, nullable

    def _fn_if(self, node):
        (c, _), (a, an), (b, bn) = (self.gen(x) for x in node.args)
        return f"({a} if {c} else {b})", an or bn

    def _fn_case(self, node):
        subject, _ = self.gen(node.args[0])
        rest = node.args[1:]
        t = self.temp()
        parts, nullable = [], False
        for i in range(0, len(rest) - 1, 2):
            value, _ = self.gen(rest[i])
            result, rn = self.gen(rest[i + 1])
            nullable |= rn
            test = f"({t} := {subject}) == {value}" if i == 0 else f"{t} == {value}"
            parts.append(f"{result} if {test} else")
        default, dn = self.gen(rest[-1])
        return f"({' '.join(parts)} {default})", nullable or dn

    def _fn_and(self, node):
        return "(" + " and ".join(self.gen(a)[0] for a in node.args) + ")", False

    def _fn_or(self, node):
        return "(" + " or ".join(self.gen(a)[0] for a in node.args) + ")", False

    def _fn_not(self, node):
        return f"(not {self.gen(node.args[0])[0]})", False

    def _blank_test(self, node, text_never_null: bool):
        arg = node.args[0]
        code, nullable = self.gen(arg)
        t = arg.type
        if t in TEXTUAL or t == "multipicklist":
            if text_never_null:
                return "False", False
            return (f"({code} == '')" if t in TEXTUAL else f"(not {code})"), False
        if t == "boolean" or not nullable:
            return "False", False
        return f"({code} is None)", False

    def _fn_isblank(self, node):
        return self._blank_test(node, False)

    def _fn_isnull(self, node):
        return self._blank_test(node, True)

    def _substitute(self, node, text_too: bool):
        (a, an), (b, bn) = self.gen(node.args[0]), self.gen(node.args[1])
        t = node.args[0].type
        tmp = self.temp()
        if t in TEXTUAL:
            return (f"({tmp} if ({tmp} := {a}) != '' else {b})" if text_too else a), False
        if t == "multipicklist":
            return (f"({tmp} if ({tmp} := {a}) else {b})" if text_too else a), False
        if t == "boolean" or not an:
            return a, an
        return f"({b} if ({tmp} := {a}) is None else {tmp})", bn

    def _fn_blankvalue(self, node):
        return self._substitute(node, True)

    def _fn_nullvalue(self, node):
        return self._substitute(node, False)

    def _fn_isnew(self, node):
        return "is_new", False

    def _fn_today(self, node):
        self.uses_now = True
        return "today", False

    def _fn_now(self, node):
        self.uses_now = True
        return "now", False

    def _field_keys(self, node):
        ref = node.args[0]
        return ref, (ref.info.keys or (ref.path,))

    def _fn_priorvalue(self, node):
        ref, keys = self._field_keys(node)
        raw = self.access(keys, ref, "(prior if prior is not None and not is_new else r)")
        return self.normalise(raw, ref.type)

    def _fn_ischanged(self, node):
        ref, keys = self._field_keys(node)
        before, after = self.access(keys, ref, "prior"), self.access(keys, ref, "r")
        if ref.type == "id":
            before, after = f"_ident({before})", f"_ident({after})"
        return f"(not is_new and prior is not None and not _same({before}, {after}))", False

    # -- the function -------------------------------------------------------------------------------------
    def function(self, tree: ast.Node, result_type: str):
        code, _ = self.gen(tree)
        if result_type in NUMERIC:
            code = f"_as_decimal({code})"
        lines = ["def evaluate(record, *, prior=None, is_new=False, user=None, now=None, related=None):",
                 "    r = record"]
        if self.uses_now:
            lines.append("    now, today = _clock(now)")
        lines += ["    try:", f"        return (\n{code}\n)", "    except Exception as exc:",
                  "        raise _runtime_error(exc) from (None if isinstance(exc, _Fail) else exc)"]
        source = "\n".join(lines)
        filename = f"<formula {next(_FILENAME_COUNTER)}>"
        markers, text = list(self.markers), self.text
        line_of_marker = {}
        for number, line in enumerate(source.split("\n"), start=1):
            found = _MARKER.search(line)
            if found:
                line_of_marker[number] = markers[int(found.group(1))]

        def runtime_error(exc: BaseException) -> RuleError:
            if isinstance(exc, RuleError):
                return exc
            position = None
            for frame, lineno in traceback.walk_tb(exc.__traceback__):
                if frame.f_code.co_filename == filename and lineno in line_of_marker:
                    position = line_of_marker[lineno]
            message = str(exc) if isinstance(exc, rt.Fail) else f"{type(exc).__name__}: {exc}"
            return RuleRuntimeError(message, position, text)

        self.ns["_runtime_error"] = runtime_error
        exec(compile(source, filename, "exec"), self.ns)  # noqa: S102 - our own generated source, once
        fn = self.ns["evaluate"]
        fn.__qualname__ = fn.__name__ = "evaluate"
        return fn, source
