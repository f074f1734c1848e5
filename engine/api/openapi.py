"""The OpenAPI 3.1 document, generated from the model: every route of the API blueprint (entities,
bulk, export, history, search, audit), their schemas, parameters, error responses and examples, and
the fragments plugins add through ``crm_openapi`` (the workflow's transitions and run log, the
dashboards), merged in. Field schemas come from the field types
(``json_schema``). The document is the contract: what it allows the API accepts, what it forbids
the API refuses with a 4xx (tests/test_api_contract.py runs schemathesis with every check)."""

from __future__ import annotations

import re
from copy import deepcopy
from typing import Any, Iterable, Mapping

from engine import __version__
from engine.fields import INT64_MAX
from engine.metadata.model import AppModel, Entity, Field
from engine.storage.query import MAX_LIMIT, SYSTEM_TYPES, TEXT_OPERATORS, operators_for, system_field

from .routes import ETAG_PATTERN, MAX_BULK, NAME_PATTERN

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
BOOLEAN_TEXTS = ["true", "false", "1", "0", "yes", "no", "y", "n", "on", "off", "t", "f"]   # as the boolean type reads them
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": INT64_MAX}
EXAMPLES = {"text": "Acme", "textarea": "Notes", "email": "ann@example.com", "phone": "+1 555 0100",
            "url": "https://example.com", "integer": 42, "number": "12.5000", "currency": "1250.00",
            "percent": "50.00", "boolean": True, "date": "2026-12-31", "datetime": "2026-12-31T09:30:00+00:00",
            "json": {}}


def build_openapi(model: AppModel, fragments: Iterable[Mapping[str, Any] | None] = ()) -> dict:
    """The document for ``model``, with the ``fragments`` of plugins (``paths``, ``components``,
    ``tags``) merged in, in order."""
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "CRM engine API", "version": __version__,
                 "description": f"Generated from the metadata (model {model.digest}). Errors are "
                                "application/problem+json (RFC 9457)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {"/api/v1/openapi.json": _openapi_path(), "/api/v1/_meta": _meta_paths()},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API token: crm token create"}},
                       "schemas": _common_schemas(),
                       "responses": _common_responses()},
    }
    spec["paths"]["/api/v1/_meta/{entity}"] = _meta_entity_path(model)
    for entity in model.entities.values():
        _entity_components(spec["components"]["schemas"], entity)
        spec["paths"].update(_entity_paths(entity))
    spec["paths"].update(_search_paths())
    spec["paths"].update(_audit_paths())
    for fragment in fragments:
        merge_fragment(spec, fragment or {})
    return spec


def merge_fragment(spec: dict, fragment: Mapping[str, Any]) -> None:
    """Add a plugin's fragment to ``spec``: its paths, its components (by section) and its tags."""
    spec["paths"].update(fragment.get("paths") or {})
    for section, items in (fragment.get("components") or {}).items():
        spec["components"].setdefault(section, {}).update(items)
    if fragment.get("tags"):
        known = {t["name"] for t in spec.get("tags", ())}
        spec.setdefault("tags", []).extend(t for t in fragment["tags"] if t["name"] not in known)


# -- components ----------------------------------------------------------------------------------

def _common_schemas() -> dict:
    return {
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                   "status": {"type": "integer"}, "detail": {"type": "string"},
                                   "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
        "FieldError": {"type": "object", "required": ["field", "code", "message"],
                       "properties": {"field": {"type": ["string", "null"]}, "code": {"type": "string"},
                                      "message": {"type": "string"}}},
        "BulkItem": {"type": "object", "required": ["index", "status"],
                     "properties": {"index": {"type": "integer"},
                                    "status": {"enum": ["created", "updated", "unchanged", "error", "skipped"]},
                                    "id": {"type": ["integer", "null"]},
                                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}}}},
        "BulkResult": {"type": "object", "required": ["items", "counts", "atomic"],
                       "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/BulkItem"}},
                                      "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                                      "atomic": {"type": "boolean"}}},
        "HistoryEntry": {"type": "object", "required": ["field", "old_value", "new_value", "changed_by", "changed_at"],
                         "properties": {"field": {"type": "string"}, "old_value": {}, "new_value": {},
                                        "changed_by": {"type": ["integer", "null"]},
                                        "changed_at": {"type": "string", "format": "date-time"}}},
    }


def _common_responses() -> dict:
    texts = {"BadRequest": "The request or its query is malformed; detail names the cause.",
             "Unauthorized": "No valid API token.",
             "Forbidden": "Your role does not allow this operation (or a session call lacks its CSRF token).",
             "NotFound": "No such entity or record (or none you may see).",
             "Conflict": "The record is referenced by others (restricted delete) or the request is in progress.",
             "PreconditionFailed": "If-Match names a version that is no longer current.",
             "PreconditionRequired": "This server requires If-Match on writes to a record (CRM_REQUIRE_IF_MATCH).",
             "PayloadTooLarge": "The body is too large.", "UnsupportedMediaType": "The body is not JSON.",
             "Unprocessable": "Values that fields cannot take; errors lists each field.",
             "Unavailable": "The query ran past the time limit (query-timeout), or the database cannot be reached "
                            "(database-unavailable); retry after Retry-After."}
    out = {name: {"description": text, "content": {"application/problem+json": {"schema": PROBLEM_REF}}}
           for name, text in texts.items()}
    # the HTTP server refuses an over-long request line before the application sees it: its own body
    out["URITooLong"] = {"description": "The request line is longer than the HTTP server reads (answered by the "
                                        "server, before the API, in its own format)."}
    return out


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]} if schema else {}


def _expandable(schema: dict) -> dict:
    """A lookup as read: its id, the linked record as an object when ``expand=`` names it, or null."""
    return {"anyOf": [schema, {"type": "object", "required": ["id"], "description": "the linked record (expand=)"},
                      {"type": "null"}]}


def _field_schema(field: Field) -> dict:
    schema = deepcopy(field.type.json_schema(field))
    if field.label:
        schema["title"] = str(field.label)
    return schema


def _entity_components(schemas: dict, entity: Entity) -> None:
    name = _schema_name(entity)
    read = {n: _nullable(_field_schema(system_field(n))) for n in SYSTEM_TYPES}
    for n in ("created_by", "updated_by", "owner_id"):
        read[n] = _expandable(_field_schema(system_field(n)))
    read["id"] = ID_SCHEMA
    read["version"] = {"type": "integer", "minimum": 1}
    writable, required = {}, []
    for field in entity.fields.values():
        if not (field.stored or field.computed_on_read):
            continue
        read[field.name] = _expandable(_field_schema(field)) if field.target else _nullable(_field_schema(field))
        if field.readonly:
            continue
        # a required field is never blank: null is refused even where a default fills it when left out
        writable[field.name] = _field_schema(field) if field.required else read[field.name]
        if field.required and field.default is None:
            required.append(field.name)
    writable["owner_id"] = _nullable(ID_SCHEMA)
    create = dict(writable)
    example = {f.name: EXAMPLES[f.type_name] for f in entity.fields.values()
               if f.name in writable and f.type_name in EXAMPLES and (f.required or f.name == entity.title)}
    schemas[name] = {"type": "object", "properties": read, "required": ["id"],   # fields= may leave out the rest
                     "description": f"{entity.label.get('en')} ({entity.label.get('zh')})"}
    schemas[f"{name}Create"] = {"type": "object", "properties": create, "required": required,
                                "additionalProperties": False, "examples": [example]}
    schemas[f"{name}Update"] = {"type": "object", "properties": writable, "additionalProperties": False}
    schemas[f"{name}Page"] = {"type": "object", "required": ["data", "next_cursor"],
                              "properties": {"data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                                             "next_cursor": {"type": ["string", "null"]},
                                             "total": {"type": "integer"}, "total_is_estimate": {"type": "boolean"}}}
    # Each row is checked on its own and answered in its item of the BulkResult (207, or 422 when atomic),
    # so the document cannot refuse a row: it says what a row should be and lets any object through.
    bulk_row = {"type": "object", "description": f"A row as in {name}Create (mode create) or {name}Update plus "
                                                 "id or the key field (update, upsert); its errors are in its item"}
    keys = [f.name for f in entity.fields.values() if f.unique]
    schemas[f"{name}Bulk"] = {
        "type": "object", "required": ["records"], "additionalProperties": False,
        "properties": {"records": {"type": "array", "maxItems": MAX_BULK, "items": bulk_row},
                       "mode": {"enum": ["create", "update", "upsert"], "default": "create"},
                       "key": {"enum": [*keys, None], "description": "A unique field to match rows by"},
                       "atomic": {"type": "boolean", "default": True}},
        # an upsert matches by a key: without one (or with none to name) it is a 400
        "if": {"required": ["mode"], "properties": {"mode": {"const": "upsert"}}},
        "then": {"required": ["key"], "properties": {"key": {"enum": keys}}} if keys else False}


def _schema_name(entity: Entity) -> str:
    return "".join(part.title() for part in entity.name.split("_"))


# -- paths ---------------------------------------------------------------------------------------

def _errors(*codes: str) -> dict:
    if "401" in codes:   # whoever is authenticated may still lack the permission, and every call reads the database
        codes = (*codes, "403", *(() if "503" in codes else ("503",)))
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "409": "Conflict",
             "412": "PreconditionFailed", "428": "PreconditionRequired", "413": "PayloadTooLarge", "414": "URITooLong", "415": "UnsupportedMediaType",
             "422": "Unprocessable", "503": "Unavailable"}
    return {code: {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


def _json_content(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


#: The parameters and header of a record's routes, for plugins' paths on a record too.
RECORD_ID = {"name": "id", "in": "path", "required": True, "schema": ID_SCHEMA}
ETAG_HEADER = {"ETag": {"description": "The record's version, for If-Match", "schema": {"type": "string"}}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
            "schema": {"type": "string", "pattern": ETAG_PATTERN, "example": '"17-3"'},
            "description": "An ETag from a previous response (\"<id>-<version>\", a comma-separated list "
                           "of them, or *): refuse (412) if the record changed since. Anything else is a 400."}


def _entity_paths(entity: Entity) -> dict:
    name, tag = _schema_name(entity), entity.name
    record_id, etag, if_match = RECORD_ID, ETAG_HEADER, IF_MATCH
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "A retried request with the same key replays the first answer."}
    base = f"/api/v1/{entity.name}"
    return {
        base: {
            "get": {"tags": [tag], "operationId": f"list_{entity.name}", "summary": f"List {entity.plural.get('en')}",
                    "parameters": _list_parameters(entity),
                    "responses": {"200": {"description": "A page", "content": _json_content(f"{name}Page")},
                                  **_errors("400", "401", "414", "503")}},
            "post": {"tags": [tag], "operationId": f"create_{entity.name}", "summary": f"Create a {entity.label.get('en')}",
                     "parameters": [idem],
                     "requestBody": {"required": True, "content": _json_content(f"{name}Create")},
                     "responses": {"201": {"description": "Created", "content": _json_content(name),
                                           "headers": {**etag, "Location": {"schema": {"type": "string"}}}},
                                   **_errors("400", "401", "404", "409", "413", "415", "422")}},
        },
        f"{base}/_bulk": {
            "post": {"tags": [tag], "operationId": f"bulk_{entity.name}",
                     "summary": f"Create, update or upsert up to {MAX_BULK} {entity.plural.get('en')}",
                     "parameters": [idem],
                     "requestBody": {"required": True, "content": _json_content(f"{name}Bulk")},
                     "responses": {code: {"description": text, "content": _json_content("BulkResult")}
                                   for code, text in (("200", "Every item written"),
                                                      ("207", "Per-item: some items failed"))}
                     | {"422": {"description": "Atomic: an item failed, nothing written (BulkResult); or the "
                                               "Idempotency-Key was used with another request (Problem)",
                                "content": {**_json_content("BulkResult"),
                                            "application/problem+json": {"schema": PROBLEM_REF}}}}
                     | _errors("400", "401", "404", "409", "413", "415")},
        },
        f"{base}/_export": {
            "get": {"tags": [tag], "operationId": f"export_{entity.name}",
                    "summary": f"Every {entity.label.get('en')} matching the filters, as CSV or XLSX, as the list shows it",
                    "parameters": [p for p in _list_parameters(entity) if p["name"] not in ("limit", "cursor", "offset", "count")]
                    + EXPORT_PARAMETERS,
                    "responses": {"200": {"description": "CSV or XLSX: a header line, then one line per record",
                                          "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                                          "content": {"text/csv": {"schema": {"type": "string"}},
                                                      "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":
                                                          {"schema": {"type": "string", "format": "binary"}}}},
                                  **_errors("400", "401", "414", "503")}},
        },
        f"{base}/{{id}}": {
            "get": {"tags": [tag], "operationId": f"get_{entity.name}", "parameters": [record_id],
                    "responses": {"200": {"description": "The record", "content": _json_content(name), "headers": etag},
                                  **_errors("401", "404")}},
            "patch": {"tags": [tag], "operationId": f"update_{entity.name}", "parameters": [record_id, if_match],
                      "requestBody": {"required": True, "content": _json_content(f"{name}Update")},
                      "responses": {"200": {"description": "Updated", "content": _json_content(name), "headers": etag},
                                    **_errors("400", "401", "404", "409", "412", "413", "415", "422", "428")}},
            "delete": {"tags": [tag], "operationId": f"delete_{entity.name}", "parameters": [record_id, if_match],
                       "responses": {"204": {"description": "Deleted"},
                                     **_errors("400", "401", "404", "409", "412", "422", "428")}},
        },
        f"{base}/{{id}}/history": {
            "get": {"tags": [tag], "operationId": f"history_{entity.name}", "parameters": [record_id],
                    "responses": {"200": {"description": "Changes of tracked fields", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["data"], "properties": {
                            "data": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}}}}}}},
                        **_errors("401", "404")}},
        },
    }


def _names_pattern(names: list[str], prefix: str = "") -> str:
    """A comma-separated list of ``names`` (each maybe after ``prefix``), as the API reads it."""
    one = f"{prefix}({'|'.join(re.escape(n) for n in names)})"
    return f"^{one}(,{one})*$"


def _filter_value(field: Field) -> dict:
    """One filter value in the query string, as the field type reads it (bounds of numbers aside)."""
    schema = _field_schema(field)      # a formula's or a rollup's is the schema of what it returns
    if schema.get("type") == "integer":
        unsigned = schema.get("minimum", -1) >= 0
        return {"type": "string", "pattern": r"^[0-9]{1,18}$" if unsigned else r"^-?[0-9]{1,18}$"}
    if schema.get("format") == "decimal":
        return {"type": "string", "pattern": r"^-?[0-9]{1,30}(\.[0-9]{1,10})?$"}
    if schema.get("format") in ("date", "date-time"):
        return {"type": "string", "format": schema["format"]}
    if schema.get("type") == "boolean":
        return {"type": "string", "enum": BOOLEAN_TEXTS}
    if "enum" in schema:
        return {"type": "string", "enum": schema["enum"]}
    return {"type": "string", "maxLength": schema.get("maxLength", 32000)}


#: The export's own parameters (``engine/api/routes.py`` ``_export_options``; docs/api.md).
EXPORT_PARAMETERS = [
    {"name": name, "in": "query", "schema": {"type": "string", "enum": list(values), "default": values[0]},
     "description": text}
    for name, values, text in (
        ("file", ("csv", "xlsx"), "The file: CSV (default) or XLSX"),
        ("format", ("raw", "readable"), "Amounts as plain numbers (raw) or with their currency (readable)"),
        ("lang", ("en", "zh"), "The language of picklist labels, label headers and readable amounts"),
        ("headers", ("name", "label"), "Column headers: field names or labels in lang"),
        ("ids", ("0", "1"), "1: an id column after each lookup, owner or reference column"))
] + [{"name": "tz", "in": "query", "schema": {"type": "string", "default": "UTC", "maxLength": 64},
      "description": "An IANA time zone for date-times, e.g. Asia/Shanghai"}]


def _list_parameters(entity: Entity) -> list[dict]:
    filterable = [f for f in entity.fields.values() if f.stored and not f.prop("encrypted")]
    sortable = [*SYSTEM_TYPES, *(f.name for f in filterable)]
    readable = [*SYSTEM_TYPES, *(f.name for f in entity.fields.values() if f.stored or f.computed_on_read)]
    lookups = [f.name for f in entity.fields.values() if f.target] + ["owner", "owner_id", "created_by", "updated_by"]
    optional = {"in": "query", "allowEmptyValue": True}     # an empty value is the same as none
    params = [
        {"name": "limit", **optional, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}},
        {"name": "cursor", **optional, "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
        {"name": "offset", **optional, "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000}},
        {"name": "sort", **optional, "schema": {"type": "string", "pattern": _names_pattern(sortable, "[-+]?")},
         "description": f"Comma-separated fields, '-' for descending; fields: {', '.join(sortable)}",
         "example": "-created_at,id"},
        {"name": "fields", **optional, "schema": {"type": "string", "pattern": _names_pattern(readable)},
         "description": "Comma-separated fields to return"},
        {"name": "expand", **optional, "schema": {"type": "string", "pattern": _names_pattern(lookups)},
         "description": f"Comma-separated lookups to return as objects: {', '.join(lookups)}"},
        {"name": "count", "in": "query", "schema": {"type": "boolean"},
         "description": "Add total (exact up to 10,000, then an estimate marked total_is_estimate)"},
        {"name": "where", **optional, "schema": {"type": "string", "maxLength": 4000},
         "description": "A formula-language condition, e.g. amount > 1000 AND stage = 'won' (docs/formulas.md): "
                        "one the language refuses is a 400 naming the cause"},
    ]
    for field in [*(system_field(n) for n in SYSTEM_TYPES), *filterable]:
        name = field.name
        ops = operators_for(field)
        value = _filter_value(field)
        one = value.get("pattern", "").strip("^$") or None
        listed = ({"type": "string", "pattern": f"^{one}(,{one})*$"} if one else
                  {"type": "string", "pattern": f"^({'|'.join(re.escape(v) for v in value['enum'])})"
                                                f"(,({'|'.join(re.escape(v) for v in value['enum'])}))*$"}
                  if "enum" in value else {"type": "string", "minLength": 1})
        props = {op: value for op in ops if op not in ("in", "isnull", *TEXT_OPERATORS)}
        props.update({op: {"type": "string"} for op in ops if op in TEXT_OPERATORS})
        props["in"] = listed
        props["isnull"] = {"type": "string", "enum": BOOLEAN_TEXTS}
        params.append({"name": name, "in": "query", "style": "deepObject", "explode": True,
                       "schema": {"type": "object", "additionalProperties": False, "properties": props},
                       "description": f"Filter on {name}: {name}[op]=value with op one of {', '.join(ops)} "
                                      f"({name}=value means eq; in takes comma-separated values)"})
    return params


def _meta_paths() -> dict:
    return {"get": {"tags": ["model"], "operationId": "meta", "summary": "The entities of the model",
                    "responses": {"200": {"description": "Entities", "content": {"application/json": {
                        "schema": {"type": "object"}}}}, **_errors("401")}}}


def _meta_entity_path(model: AppModel) -> dict:
    return {"get": {"tags": ["model"], "operationId": "meta_entity", "summary": "One entity: fields, options, layouts",
                    "parameters": [{"name": "entity", "in": "path", "required": True,
                                    "schema": {"type": "string", "enum": list(model.entities)}}],
                    "responses": {"200": {"description": "The entity", "content": {"application/json": {
                        "schema": {"type": "object"}}}}, **_errors("401", "404")}}}


# -- routes beside the entities ------------------------------------------------------------------

def _query(name: str, schema: dict, description: str = "", required: bool = False) -> dict:
    param = {"name": name, "in": "query", "schema": schema, "required": required}
    if description:
        param["description"] = description
    return param


def _json_object(properties: dict, required: list[str] | tuple[str, ...] = ()) -> dict:
    return {"application/json": {"schema": {"type": "object", "required": list(required or properties),
                                            "properties": properties}}}


def _openapi_path() -> dict:
    return {"get": {"tags": ["model"], "operationId": "openapi", "summary": "This document", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["openapi", "paths"]}}}}}}}


def _search_paths() -> dict:
    hit = {"type": "object", "required": ["entity", "id", "record"], "properties": {
        "entity": {"type": "string"}, "id": ID_SCHEMA, "record": {"type": "object"}}}
    return {"/api/v1/_search": {"get": {
        "tags": ["search"], "operationId": "search", "summary": "Text in the searchable fields of every entity you may read",
        "parameters": [_query("q", {"type": "string", "minLength": 2, "maxLength": 200, "pattern": r"\S[\s\S]*\S"},
                              "At most 200 characters, at least two of them not spaces", required=True),
                       _query("limit", {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
                              "At most this many hits per entity")],
        "responses": {"200": {"description": "Hits, entities in model order",
                              "content": _json_object({"data": {"type": "array", "items": hit}})},
                      **_errors("400", "401")}}}}


def _audit_paths() -> dict:
    entry = {"type": "object", "required": ["id", "at", "kind", "user_id", "ip", "entity", "record_id", "detail"],
             "properties": {"id": ID_SCHEMA, "at": {"type": "string", "format": "date-time"}, "kind": {"type": "string"},
                            "user_id": {"type": ["integer", "null"]}, "ip": {"type": ["string", "null"]},
                            "entity": {"type": ["string", "null"]}, "record_id": {"type": ["integer", "null"]},
                            "detail": {}}}
    return {"/api/v1/_audit": {"get": {
        "tags": ["audit"], "operationId": "audit", "summary": "The audit log, newest first (admins)",
        "parameters": [_query("kind", {"type": "string", "pattern": NAME_PATTERN}, "Only entries of this kind"),
                       _query("user", {"type": "integer", "minimum": 0, "maximum": INT64_MAX}, "Only this user's entries"),
                       _query("since", {"type": "string", "format": "date-time"}, "From this time (with its offset)"),
                       _query("until", {"type": "string", "format": "date-time"}, "Before this time (with its offset)"),
                       _query("before", {"type": "integer", "minimum": 0, "maximum": 2**62},
                              "next_before of the previous page"),
                       _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 100})],
        "responses": {"200": {"description": "Entries", "content": _json_object(
            {"data": {"type": "array", "items": entry}, "next_before": {"type": ["integer", "null"]}})},
            **_errors("400", "401")}}}}


# -- for the fragments of plugins (crm_openapi): the same parts the API's own paths are made of --

schema_name = _schema_name
list_parameters = _list_parameters
error_responses = _errors
query_parameter = _query
json_object = _json_object
