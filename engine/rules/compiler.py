"""Parse -> check -> fold constants -> generate Python, once per expression; SQL on demand."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from . import ast
from . import runtime as rt
from .errors import NotInSQLError, RuleError, RuleTypeError
from .functions import FunctionRegistry, default_registry
from .parser import parse
from .schema import NUMERIC, TEXTUAL, DictSchema, ModelSchema, Schema, Unresolved
from .to_python import PythonGenerator
from .to_sql import Scope, SqlCompiler
from .types import check

_CONTEXT_ONLY = frozenset({"ISNEW", "ISCHANGED", "PRIORVALUE"})


class CompiledRule:
    """One checked, compiled expression.

    ``type``: its formula type (boolean, number, currency, percent, text, picklist, date, datetime,
    id, multipicklist, or null for a bare NULL). ``fields``: the dotted paths it reads (canonical:
    ``owner`` is ``owner_id``). ``uses``: the context it needs (``prior``, ``is_new``, ``now``,
    ``user``, ``related``). ``evaluate(record, *, prior=None, is_new=False, user=None, now=None,
    related=None)`` computes it on one record; ``to_sql(scope)`` gives the SQLAlchemy expression.
    """

    def __init__(self, expression: str, tree: ast.Node, schema: Schema, *, type_: str, fields: frozenset[str],
                 uses: frozenset[str], function, source: str, blank_as_zero: bool):
        self.expression = expression
        self.tree = tree
        self.entity = schema.entity
        self.type = type_
        self.fields = fields
        self.uses = uses
        self.evaluate = function
        self.python_source = source
        self.blank_as_zero = blank_as_zero
        self.sql_problem = _sql_problem(tree, expression)

    @property
    def sql_capable(self) -> bool:
        """True if ``to_sql`` can work (every field stored, every function with SQL, no ISCHANGED...)."""
        return self.sql_problem is None

    def to_sql(self, scope: Scope, *, predicate: bool = False):
        """The expression in SQL for ``scope`` (joins for lookup paths are added to the scope).

        ``predicate=True`` gives the WHERE form of a boolean expression (NULL may stand for FALSE,
        so indexes are used); the default is the strict value, typed so selected results come back
        as Python values (Decimal, date, ...). Raises ``NotInSQLError`` (kind ``no_sql``)."""
        if scope.entity != self.entity:
            raise ValueError(f"this expression was compiled for {self.entity!r}, the scope is for {scope.entity!r}")
        compiler = SqlCompiler(scope, blank_as_zero=self.blank_as_zero, expression=self.expression)
        return compiler.predicate(self.tree) if predicate else compiler.value(self.tree)

    def where(self, scope: Scope):
        """``to_sql(scope, predicate=True)`` for a boolean expression."""
        if self.type != "boolean":
            raise RuleTypeError(f"a filter must be TRUE or FALSE, this expression is {self.type}",
                                self.tree.pos, self.expression)
        return self.to_sql(scope, predicate=True)

    def __repr__(self) -> str:
        return f"<CompiledRule {self.expression!r}: {self.type}>"


def _sql_problem(tree: ast.Node, text: str) -> RuleError | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Ref) and node.info is not None and not node.info.stored:
            return NotInSQLError(f"{node.info.dotted} is not a stored column", node.pos, text)
        if isinstance(node, ast.Call):
            spec = node.spec
            if node.name in _CONTEXT_ONLY:
                return NotInSQLError(f"{node.name} needs the record being saved", node.pos, text)
            if not spec.special and spec.sql is None:
                return NotInSQLError(f"{node.name} has no SQL implementation", node.pos, text)
    return None


# -- constant folding ---------------------------------------------------------------------------------
def _foldable(node: ast.Node) -> bool:
    if isinstance(node, (ast.Literal, ast.Ref, ast.UserRef)):
        return False
    if isinstance(node, ast.Call) and (not node.spec.constant or node.name in _CONTEXT_ONLY):
        return False
    return all(isinstance(child, ast.Literal) for child in node.children())


def _fold(node: ast.Node, blank_as_zero: bool, text: str) -> ast.Node:
    """Replace constant sub-expressions by their value (so DATE(2026, 1, 31) is a bound date in SQL)."""
    if isinstance(node, ast.Unary):
        node.operand = _fold(node.operand, blank_as_zero, text)
    elif isinstance(node, ast.Binary):
        node.left = _fold(node.left, blank_as_zero, text)
        node.right = _fold(node.right, blank_as_zero, text)
    elif isinstance(node, ast.In):
        node.operand = _fold(node.operand, blank_as_zero, text)
        node.items = [_fold(i, blank_as_zero, text) for i in node.items]
    elif isinstance(node, ast.Call):
        node.args = [_fold(a, blank_as_zero, text) for a in node.args]
    if not _foldable(node):
        return node
    try:
        fn, _ = PythonGenerator(blank_as_zero=blank_as_zero, text=text).function(node, node.type)
        value = fn({})
    except Exception:  # noqa: BLE001 - a constant that fails stays, to fail at run time with its position
        return node
    if isinstance(value, int) and not isinstance(value, bool):
        value = Decimal(value)
    literal = ast.Literal(node.pos, value, node.type if value is not None else "null")
    literal.type = node.type
    return literal


# -- compile ------------------------------------------------------------------------------------------
_CACHE: dict[tuple, CompiledRule] = {}
_CACHE_LIMIT = 4096
_LOCK = threading.Lock()


def compile_with(expression: str, schema: Schema, *, registry: FunctionRegistry | None = None,
                 blank_as_zero: bool = False, cache: bool = True) -> CompiledRule:
    """Compile ``expression`` against any schema (``ModelSchema`` or ``DictSchema``)."""
    registry = registry or default_registry()
    key = (schema.key, expression, blank_as_zero, registry.key) if cache else None
    if key is not None:
        found = _CACHE.get(key)
        if found is not None:
            return found
    tree = parse(expression)
    checker = check(tree, schema, registry, expression)
    tree = _fold(tree, blank_as_zero, expression)
    generator = PythonGenerator(blank_as_zero=blank_as_zero, text=expression)
    function, source = generator.function(tree, tree.type)
    uses = set(checker.uses)
    compiled = CompiledRule(expression, tree, schema, type_=tree.type, fields=frozenset(checker.fields),
                            uses=frozenset(uses), function=function, source=source, blank_as_zero=blank_as_zero)
    if key is not None:
        with _LOCK:
            if len(_CACHE) >= _CACHE_LIMIT:
                _CACHE.clear()
            _CACHE[key] = compiled
    return compiled


def compile(expression: str, entity: str, model, *, registry: FunctionRegistry | None = None,  # noqa: A001
            blank_as_zero: bool = False) -> CompiledRule:
    """Compile ``expression`` for records of ``entity`` in ``model`` (an ``AppModel``).

    Parsing, type checking and code generation happen once; the result is cached per (model
    digest, entity, expression text, blank_as_zero, function registry). Raises ``RuleError``
    subclasses (kinds syntax, type, unknown_field) with the position in the expression."""
    return compile_with(expression, ModelSchema(model, entity), registry=registry, blank_as_zero=blank_as_zero)


def compile_condition(expression: str, entity: str, model, *, registry: FunctionRegistry | None = None,
                      what: str = "it", in_sql: bool = False, per_user: bool = True) -> CompiledRule:
    """``compile`` for a condition a declaration gives (an approval's ``when``, a pool's members):
    it must be TRUE or FALSE; with ``in_sql`` it must run in the database; without ``per_user`` it
    may not read ``$user`` (the same for every user). Raises ``RuleError`` naming ``what``."""
    compiled = compile(expression, entity, model, registry=registry)
    if compiled.type not in ("boolean", "null"):
        raise RuleTypeError(f"{what} needs a condition (TRUE or FALSE), not a {compiled.type}")
    if in_sql and not compiled.sql_capable:
        raise NotInSQLError(compiled.sql_problem or "it cannot run in the database")
    if not per_user and "user" in compiled.uses:
        raise RuleTypeError(f"{what} is the same for every user: it may not read $user")
    return compiled


def declared_condition(model, entity: str, text: str | None, path: tuple, registry, problem, *,
                       in_sql: bool = False, per_user: bool = True) -> CompiledRule | None:
    """The condition a declaration gives at ``path`` (``compile_condition``), or None when there is
    none or it is wrong: then ``problem(path, message)`` is told why, for the loader's file:line."""
    if text is None:
        return None
    try:
        return compile_condition(text, entity, model, registry=registry, what=str(path[-1]), in_sql=in_sql,
                                 per_user=per_user)
    except RuleError as exc:
        problem(path, f"{exc.kind.replace('_', ' ')} error: {exc.message} (in {text!r})")
        return None


def evaluate(expression: str, record: Mapping | None = None, *, fields: Mapping[str, str] | None = None,
             prior: Mapping | None = None, is_new: bool = False, user: Mapping | None = None, now=None,
             blank_as_zero: bool = False, related: Mapping | None = None,
             registry: FunctionRegistry | None = None) -> Any:
    """Evaluate ``expression`` on a plain record and return its value.

    ``fields`` maps a field name or dotted path (``"parent.name"``, ``"$user.role"``) to a type
    name (number, integer, currency, percent, text, date, datetime, boolean, picklist,
    multipicklist, lookup, ...); types of other fields are inferred from the values. Related
    records are nested dicts (``{"parent": {"name": "Acme"}}``). ``now`` fixes TODAY() and NOW().
    Numbers come back as Decimal, dates as date, date/times as aware UTC datetime."""
    record = dict(record or {})
    declared = dict(fields or {})
    user_fields = {k[6:]: v for k, v in declared.items() if k.startswith("$user.")}
    record = normalise_record(record, {k: v for k, v in declared.items() if not k.startswith("$user.")})
    prior = normalise_record(dict(prior), declared) if prior is not None else None
    user = normalise_record(dict(user), user_fields) if user is not None else None
    related = normalise_record(dict(related), declared) if related is not None else None
    schema_record = dict(record)
    if related:
        schema_record.update(related)
    schema = DictSchema(schema_record, declared, user)
    compiled = compile_with(expression, schema, registry=registry, blank_as_zero=blank_as_zero,
                            cache=True)
    return compiled.evaluate(record, prior=prior, is_new=is_new, user=user, now=now, related=related)


def normalise_record(record: dict, fields: Mapping[str, str], prefix: str = "") -> dict:
    """Plain values -> the values the record service gives (Decimal, date, aware datetime, lists)."""
    out = {}
    for key, value in record.items():
        path = prefix + key
        declared = fields.get(path)
        if isinstance(value, Mapping):
            out[key] = normalise_record(dict(value), fields, path + ".")
            continue
        try:
            ftype = DictSchema.declared_type(declared) if declared else None
        except Unresolved as exc:
            raise RuleTypeError(f"fields[{path!r}]: {exc.message}") from None
        out[key] = _normalise(value, ftype, path)
    return out


def _normalise(value: Any, ftype: str | None, path: str) -> Any:
    if value is None:
        return None
    try:
        if ftype in NUMERIC or (ftype is None and isinstance(value, float)):
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            if isinstance(value, float):
                return Decimal(repr(value))
            if isinstance(value, str):
                return Decimal(value.strip()) if value.strip() else None
            return value if isinstance(value, (int, Decimal)) else Decimal(value)
        if ftype == "date" and isinstance(value, str):
            return date.fromisoformat(value.strip()) if value.strip() else None
        if ftype == "date" and isinstance(value, datetime):
            return value.date()
        if ftype == "datetime" and isinstance(value, str):
            return rt.datetimevalue(value) if value.strip() else None
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc)
        if ftype == "multipicklist" and isinstance(value, str):
            return [v.strip() for v in value.split(";") if v.strip()]
        if ftype == "boolean" and not isinstance(value, bool):
            if value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                return value.strip().lower() == "true"
            raise ValueError("not TRUE or FALSE")
        if ftype in TEXTUAL and not isinstance(value, str):
            raise ValueError("not text")
        if ftype == "id" and isinstance(value, str) and value.strip().isdigit():
            return int(value)
    except (ValueError, ArithmeticError, rt.Fail) as exc:
        raise RuleTypeError(f"the value of {path} ({value!r}) is not a {ftype}: {exc}") from None
    return value
