"""What the API routes of a plugin are built with (the workflow's, the dashboards', a capability's).

``api_routes(name, import_name)`` is a blueprint under ``/api/v1`` that authenticates the caller
exactly as the generic routes do (a bearer token or the web session, then ``g.identity`` and
``g.access``) and answers every error as problem+json; a plugin returns it from ``crm_blueprints``.
The helpers below read a request and write an answer the way the generic routes do, so a plugin's
routes keep the same contract (ETags, If-Match, bounded query parameters, 400s that name the cause).
"""

from __future__ import annotations

from flask import Blueprint

from . import routes as _routes
from .errors import ApiError, to_problem

#: Names a route filters by as given (automation names, run triggers); as in the document.
NAME_PATTERN = _routes.NAME_PATTERN


def api_routes(name: str, import_name: str) -> Blueprint:
    """A blueprint under ``/api/v1`` with the API's authentication and problem+json errors."""
    bp = Blueprint(name, import_name, url_prefix="/api/v1")
    bp.record_once(lambda state: state.app.url_map.converters.setdefault("entity", _routes.EntityName))
    bp.before_request(_routes._authenticate)
    bp.before_request(_routes._one_value_each)
    bp.register_error_handler(Exception, to_problem)
    return bp


# -- reading a request and answering it, as the generic routes do ---------------------------------
runtime = _routes._rt                  # the Runtime serving this request
context = _routes._context             # the caller's Context for the record service
entity = _routes._entity               # the entity a URL names (404 problem when unknown)
json_body = _routes._json_body         # the body as a JSON object (415 / 400 otherwise)
json_response = _routes._json          # data as an application/json response
etag = _routes._etag                   # a record's ETag
if_match = _routes._if_match           # the version If-Match names for a record (None: any)
record_json = _routes._record_json     # a record as the caller may see it
int_arg = _routes._int_arg             # a bounded whole-number query parameter
name_arg = _routes._name_arg           # a name-like query parameter
list_query = _routes._list_query       # an entity's list parameters (filters, sort, cursor...) as a ListQuery
expand_lookups = _routes._expand        # replace lookups of a page by the linked records (expand=)
LIST_TIMEOUT_MS = _routes.LIST_TIMEOUT_MS   # the time limit of a list query


def dump_records(entity, records: list[dict], fields: tuple[str, ...] | None = None) -> list[dict]:
    """A page of records of ``entity`` as JSON, with only the fields the caller may read (or ``fields``)."""
    return _routes._serializers().dump_many(entity.name, records, _routes._only(entity, fields))


__all__ = ["LIST_TIMEOUT_MS", "NAME_PATTERN", "ApiError", "api_routes", "context", "dump_records", "entity", "etag",
           "expand_lookups", "if_match", "int_arg", "json_body", "json_response", "list_query", "name_arg", "record_json",
           "runtime"]
