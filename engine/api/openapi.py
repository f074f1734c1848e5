"""The OpenAPI 3.1 document, generated from the model: every entity's paths, schemas, parameters,
error responses and examples. Field schemas come from the field types (``json_schema``)."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from engine import __version__
from engine.metadata.model import AppModel, Entity, Field
from engine.storage.query import MAX_LIMIT, OPERATORS, SYSTEM_TYPES, TEXT_OPERATORS, TEXT_TYPES, system_field

from .routes import MAX_BULK

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
EXAMPLES = {"text": "Acme", "textarea": "Notes", "email": "ann@example.com", "phone": "+1 555 0100",
            "url": "https://example.com", "integer": 42, "number": "12.5000", "currency": "1250.00",
            "percent": "50.00", "boolean": True, "date": "2026-12-31", "datetime": "2026-12-31T09:30:00+00:00",
            "json": {}}


def build_openapi(model: AppModel) -> dict:
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "CRM engine API", "version": __version__,
                 "description": f"Generated from the metadata (model {model.digest}). Errors are "
                                "application/problem+json (RFC 9457)."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {"/api/v1/_meta": _meta_paths()},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "An API token: crm token create"}},
                       "schemas": _common_schemas(),
                       "responses": _common_responses()},
    }
    spec["paths"]["/api/v1/_meta/{entity}"] = _meta_entity_path(model)
    for entity in model.entities.values():
        _entity_components(spec["components"]["schemas"], entity)
        spec["paths"].update(_entity_paths(entity))
    return spec


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
             "PayloadTooLarge": "The body is too large.", "UnsupportedMediaType": "The body is not JSON.",
             "Unprocessable": "Values that fields cannot take; errors lists each field.",
             "Unavailable": "The query ran past the time limit."}
    return {name: {"description": text, "content": {"application/problem+json": {"schema": PROBLEM_REF}}}
            for name, text in texts.items()}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]} if schema else {}


def _field_schema(field: Field) -> dict:
    schema = deepcopy(field.type.json_schema(field))
    if field.label:
        schema["title"] = str(field.label)
    return schema


def _entity_components(schemas: dict, entity: Entity) -> None:
    name = _schema_name(entity)
    read = {n: _nullable(_field_schema(system_field(n))) for n in SYSTEM_TYPES}
    read["id"] = {"type": "integer"}
    read["version"] = {"type": "integer"}
    writable, required = {}, []
    for field in entity.fields.values():
        if not (field.stored or field.computed_on_read):
            continue
        read[field.name] = _nullable(_field_schema(field))
        if field.readonly:
            continue
        writable[field.name] = read[field.name]
        if field.required and field.default is None:
            required.append(field.name)
    writable["owner_id"] = _nullable({"type": "integer", "minimum": 1})
    create = {**writable, **{name: _field_schema(entity.fields[name]) for name in required}}  # required: no null
    example = {f.name: EXAMPLES[f.type_name] for f in entity.fields.values()
               if f.name in writable and f.type_name in EXAMPLES and (f.required or f.name == entity.title)}
    schemas[name] = {"type": "object", "properties": read, "required": ["id", "version"],
                     "description": f"{entity.label.get('en')} ({entity.label.get('zh')})"}
    schemas[f"{name}Create"] = {"type": "object", "properties": create, "required": required,
                                "additionalProperties": False, "examples": [example]}
    schemas[f"{name}Update"] = {"type": "object", "properties": writable, "additionalProperties": False}
    schemas[f"{name}Page"] = {"type": "object", "required": ["data", "next_cursor"],
                              "properties": {"data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                                             "next_cursor": {"type": ["string", "null"]},
                                             "total": {"type": "integer"}, "total_is_estimate": {"type": "boolean"}}}
    bulk_row = deepcopy(schemas[f"{name}Update"])
    bulk_row["properties"] = {**bulk_row["properties"], "id": {"type": "integer"}}
    schemas[f"{name}Bulk"] = {"type": "object", "required": ["records"], "additionalProperties": False,
                              "properties": {"records": {"type": "array", "maxItems": MAX_BULK, "items": bulk_row},
                                             "mode": {"enum": ["create", "update", "upsert"]},
                                             "key": {"enum": [f.name for f in entity.fields.values() if f.unique] or [None]},
                                             "atomic": {"type": "boolean"}}}


def _schema_name(entity: Entity) -> str:
    return "".join(part.title() for part in entity.name.split("_"))


# -- paths ---------------------------------------------------------------------------------------

def _errors(*codes: str) -> dict:
    if "401" in codes:   # whoever is authenticated may still lack the permission
        codes = (*codes, "403")
    names = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "409": "Conflict",
             "412": "PreconditionFailed", "413": "PayloadTooLarge", "415": "UnsupportedMediaType",
             "422": "Unprocessable", "503": "Unavailable"}
    return {code: {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


def _json_content(ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _entity_paths(entity: Entity) -> dict:
    name, tag = _schema_name(entity), entity.name
    record_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    etag = {"ETag": {"description": "The record's version, for If-Match", "schema": {"type": "string"}}}
    if_match = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "An ETag from a previous response: refuse (412) if the record changed since."}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "A retried request with the same key replays the first answer."}
    base = f"/api/v1/{entity.name}"
    return {
        base: {
            "get": {"tags": [tag], "operationId": f"list_{entity.name}", "summary": f"List {entity.plural.get('en')}",
                    "parameters": _list_parameters(entity),
                    "responses": {"200": {"description": "A page", "content": _json_content(f"{name}Page")},
                                  **_errors("400", "401", "503")}},
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
        f"{base}/{{id}}": {
            "get": {"tags": [tag], "operationId": f"get_{entity.name}", "parameters": [record_id],
                    "responses": {"200": {"description": "The record", "content": _json_content(name), "headers": etag},
                                  **_errors("401", "404")}},
            "patch": {"tags": [tag], "operationId": f"update_{entity.name}", "parameters": [record_id, if_match],
                      "requestBody": {"required": True, "content": _json_content(f"{name}Update")},
                      "responses": {"200": {"description": "Updated", "content": _json_content(name), "headers": etag},
                                    **_errors("400", "401", "404", "412", "413", "415", "422")}},
            "delete": {"tags": [tag], "operationId": f"delete_{entity.name}", "parameters": [record_id, if_match],
                       "responses": {"204": {"description": "Deleted"}, **_errors("401", "404", "409", "412", "422")}},
        },
        f"{base}/{{id}}/history": {
            "get": {"tags": [tag], "operationId": f"history_{entity.name}", "parameters": [record_id],
                    "responses": {"200": {"description": "Changes of tracked fields", "content": {"application/json": {
                        "schema": {"type": "object", "required": ["data"], "properties": {
                            "data": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}}}}}}},
                        **_errors("401", "404")}},
        },
        **(_transition_paths(entity, base, record_id, etag, if_match) if entity.workflow else {}),
    }


def _transition_paths(entity: Entity, base: str, record_id: dict, etag: dict, if_match: dict) -> dict:
    """The workflow's transitions (docs/automation.md)."""
    names = [t["name"] for t in entity.workflow.get("transitions") or ()]
    transition = {"type": "object", "required": ["name", "label", "to", "requires"], "properties": {
        "name": {"type": "string"}, "label": {"type": "object", "additionalProperties": {"type": "string"}},
        "to": {"type": "string"}, "requires": {"type": "array", "items": {"type": "string"}}}}
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    record = {"$ref": f"#/components/schemas/{_schema_name(entity)}"}
    return {
        f"{base}/{{id}}/transitions": {"get": {
            "tags": [entity.name], "operationId": f"transitions_{entity.name}", "parameters": [record_id],
            "summary": "The workflow transitions the caller may take now",
            "responses": {"200": {"description": "Transitions", "headers": etag, "content": {"application/json": {
                "schema": {"type": "object", "required": ["field", "state", "data"], "properties": {
                    "field": {"type": ["string", "null"]}, "state": {"type": ["string", "null"]},
                    "data": {"type": "array", "items": transition}}}}}},
                **_errors("401", "403", "404")}}},
        f"{base}/{{id}}/transitions/{{name}}": {"post": {
            "tags": [entity.name], "operationId": f"transition_{entity.name}",
            "parameters": [record_id, name_param, if_match], "summary": "Take a workflow transition",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "The record after the transition", "headers": etag,
                                  "content": {"application/json": {"schema": record}}},
                          **_errors("400", "401", "403", "404", "412", "415", "422")}}},
    }


def _list_parameters(entity: Entity) -> list[dict]:
    sortable = [*SYSTEM_TYPES, *(f.name for f in entity.fields.values() if f.stored)]
    lookups = [f.name for f in entity.fields.values() if f.target] + ["owner", "created_by", "updated_by"]
    params = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000}},
        {"name": "sort", "in": "query", "schema": {"type": "string"},
         "description": f"Comma-separated fields, '-' for descending; fields: {', '.join(sortable)}",
         "example": "-created_at,id"},
        {"name": "fields", "in": "query", "schema": {"type": "string"}, "description": "Comma-separated fields to return"},
        {"name": "expand", "in": "query", "schema": {"type": "string"},
         "description": f"Comma-separated lookups to return as objects: {', '.join(lookups)}"},
        {"name": "count", "in": "query", "schema": {"type": "boolean"},
         "description": "Add total (exact up to 10,000, then an estimate marked total_is_estimate)"},
        {"name": "where", "in": "query", "schema": {"type": "string"},
         "description": "A formula-language condition, e.g. amount > 1000 AND stage = 'won'"},
    ]
    for name in sortable:
        field = entity.fields.get(name) or system_field(name)
        ops = [op for op in OPERATORS if op not in TEXT_OPERATORS or field.type_name in TEXT_TYPES]
        params.append({"name": name, "in": "query", "style": "deepObject", "explode": True,
                       "schema": {"type": "object", "additionalProperties": False,
                                  "properties": {op: {"type": "string"} for op in ops}},
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
