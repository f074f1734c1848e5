"""Errors as ``application/problem+json`` (RFC 9457): one mapping from every error family to HTTP."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Response, current_app, has_request_context, request
from werkzeug.exceptions import HTTPException

from engine.messages import localize
from engine.security.problem import PROBLEM, TYPE_BASE, problem
from engine.storage.database import QueryTimeout
from engine.storage.errors import (
    Conflict,
    DeleteRestricted,
    DuplicateFound,
    NotFound,
    PermissionDenied,
    RecordError,
    Refused,
    ValidationFailed,
)
from engine.storage.query import QueryError

log = logging.getLogger("engine.api")

#: The title of a capability's refusal (``Refused``) by its status.
REFUSED_TITLES = {403: "Forbidden", 404: "Not found", 409: "Conflict", 422: "Validation failed"}


class ApiError(Exception):
    """An error the API reports as it is: status, a short title, a detail that names the cause."""

    def __init__(self, status: int, title: str, detail: str, *, kind: str | None = None,
                 headers: dict | None = None, **extra):
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.kind = kind or title.lower().replace(" ", "-")
        self.headers = headers or {}
        self.extra = extra


def to_problem(exc: Exception) -> Response:
    """The one place where an exception becomes an HTTP answer."""
    if isinstance(exc, ApiError):
        return problem(exc.status, exc.title, exc.detail, exc.kind, exc.headers, **exc.extra)
    if isinstance(exc, QueryError):
        return problem(400, "Bad query", str(exc), "bad-query", errors=_errors(exc))
    if isinstance(exc, DuplicateFound):   # before ValidationFailed, which it is (for bulk rows)
        how = " (repeat the request with the header X-CRM-Duplicates: allow to save anyway)" if exc.overridable else ""
        return problem(409, "Duplicate", f"{_entity_label(exc.entity)}: {_joined(exc)}{how}", "duplicate",
                       action=exc.action, overridable=exc.overridable, candidates=exc.candidates, hidden=exc.hidden,
                       errors=_errors(exc))
    if isinstance(exc, ValidationFailed):
        return problem(422, "Validation failed", f"{_entity_label(exc.entity) or 'the record'}: {_joined(exc)}",
                       "validation", errors=_errors(exc))
    if isinstance(exc, PermissionDenied):
        return problem(403, "Forbidden", _say(exc.args[0] if exc.args else str(exc)), "forbidden")
    if isinstance(exc, NotFound):
        return problem(404, "Not found", _say(exc.args[0] if exc.args else str(exc)), "not-found")
    if isinstance(exc, Conflict):
        return problem(412, "Precondition failed", _say(exc.args[0] if exc.args else str(exc)), "stale-version",
                       current_version=exc.current)
    if isinstance(exc, DeleteRestricted):
        refs = [{"entity": e, "field": f, "ids": ids, "count": n} for e, f, ids, n in exc.references]
        return problem(409, "Delete restricted", str(exc), "delete-restricted", references=refs)
    if isinstance(exc, Refused):
        errors = [{"field": exc.field, "code": exc.kind, "message": _say(exc.message)}] if exc.field else []
        return problem(exc.status, REFUSED_TITLES.get(exc.status, "Refused"), _say(exc.message), exc.kind,
                       **({"errors": errors} if errors else {}), **exc.detail)
    if isinstance(exc, RecordError):
        return problem(400, "Bad request", str(exc), "bad-request")
    if isinstance(exc, QueryTimeout):
        return problem(503, "Query timeout", str(exc), "query-timeout", {"Retry-After": "1"})
    if isinstance(exc, sa.exc.OperationalError):   # unreachable, restarting, locked: nothing was written
        log.warning("database unavailable: %s", str(exc.orig or exc).strip().splitlines()[0])
        return problem(503, "Database unavailable", "the database cannot be reached or is busy; try again shortly",
                       "database-unavailable", {"Retry-After": "5"})
    if isinstance(exc, HTTPException):
        title = exc.name
        detail = exc.description or title
        if exc.code == 413:
            detail = "the request body is larger than this server accepts"
        headers = {"Allow": ", ".join(sorted(exc.valid_methods))} if getattr(exc, "valid_methods", None) else None
        return problem(exc.code or 500, title, detail, title.lower().replace(" ", "-"), headers)
    log.exception("unhandled error")
    return problem(500, "Internal error", "the server failed; the error is logged", "internal")


def _errors(exc: ValidationFailed) -> list[dict]:
    return [{"field": e.field, "code": e.code, "message": _say(e.message)} for e in exc.errors]


# -- the language of the answer (Accept-Language; messages stay English without a catalog) -------

def _lang() -> str:
    """The best language of the request's ``Accept-Language`` that has a catalog, else English."""
    if not has_request_context():
        return "en"
    catalogs = current_app.extensions.get("crm.catalogs", {})
    return request.accept_languages.best_match(["en", *catalogs]) or "en"


def _say(text) -> str:
    """An engine message (English, maybe a ``Msg`` with values) in the request's language."""
    lang = _lang()
    if lang == "en":
        return str(text)
    catalog = current_app.extensions.get("crm.catalogs", {}).get(lang, {})
    return localize(text, lambda msgid: catalog.get(msgid, msgid))


def _entity_label(entity: str) -> str:
    ent = _model_entity(entity)
    return ent.label.get(_lang()) if ent is not None and _lang() != "en" else entity


def _model_entity(entity: str):
    runtime = current_app.extensions.get("crm") if has_request_context() else None
    return runtime.model.entities.get(entity) if runtime is not None and entity else None


def _joined(exc: ValidationFailed) -> str:
    """The errors as one line: ``field: message; ...``, with the fields' labels in languages other
    than English (English keeps the field names the API takes)."""
    if _lang() == "en":
        return str(exc)
    ent = _model_entity(exc.entity)
    parts = []
    for e in exc.errors:
        field = ent.fields.get(e.field) if ent is not None and e.field else None
        name = field.label.get(_lang()) if field is not None else e.field
        parts.append(f"{name}: {_say(e.message)}" if name else _say(e.message))
    return "; ".join(parts)


__all__ = ["PROBLEM", "TYPE_BASE", "ApiError", "problem", "to_problem"]
