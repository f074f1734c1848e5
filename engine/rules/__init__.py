"""The formula language: one expression language, two back ends (Python and SQL).

Public entry points::

    evaluate(expression, record, *, fields=None, prior=None, is_new=False, user=None, now=None,
             blank_as_zero=False) -> value
    compile(expression, entity, model, *, registry=None, blank_as_zero=False) -> CompiledRule
        .type, .fields, .uses, .evaluate(record, *, prior=None, is_new=False, user=None, now=None,
        related=None), .to_sql(scope, *, predicate=False), .where(scope), .sql_capable
    Scope(metadata, entity, model, *, dialect="sqlite", user=None, now=None)   # joins for to_sql
    check_entity_rules(model, registry=None) -> list[RuleProblem]
    fetch_related(conn, metadata, model, entity, record, paths) -> nested related records
    Function, FunctionRegistry, default_registry(), registry_from_plugins(pm)

Errors are ``RuleError`` subclasses with ``.kind`` (syntax, type, unknown_field, runtime, no_sql)
and ``.position`` (offset, line, column). See docs/formulas.md.
"""

from .checks import RuleProblem, check_entity_rules, expressions_of
from .compiler import CompiledRule, compile, compile_condition, compile_with, declared_condition, evaluate
from .errors import (NotInSQLError, Position, RuleError, RuleRuntimeError, RuleSyntaxError, RuleTypeError,
                     UnknownFieldError)
from .functions import Function, FunctionRegistry, builtin_functions, default_registry, registry_from_plugins
from .parser import parse, text_literal
from .related import fetch_related
from .schema import DictSchema, FieldInfo, ModelSchema
from .to_sql import Scope, SqlCompiler, SqlValue

__all__ = [
    "CompiledRule", "DictSchema", "FieldInfo", "Function", "FunctionRegistry", "ModelSchema", "NotInSQLError",
    "Position", "RuleError", "RuleProblem", "RuleRuntimeError", "RuleSyntaxError", "RuleTypeError", "Scope",
    "SqlCompiler", "SqlValue", "UnknownFieldError", "builtin_functions", "check_entity_rules", "compile",
    "compile_condition", "declared_condition",
    "compile_with", "default_registry", "evaluate", "expressions_of", "fetch_related", "parse",
    "registry_from_plugins", "text_literal",
]
