"""Files on the API: a record's attachments and its file fields.

``GET/POST /api/v1/{entity}/{id}/_attachments`` lists / uploads (``multipart/form-data``, part ``file``);
``GET/DELETE /api/v1/{entity}/{id}/_attachments/{file_id}`` downloads (``?inline=1`` shows a PDF or an
image in the browser) / deletes. A file field: ``POST /api/v1/{entity}/_files/{field}`` uploads and
answers the file's id, which the record's create or update then sets as the field's value;
``GET /api/v1/{entity}/{id}/_files/{field}`` downloads it.

Rights are the record's: listing and downloading need read (a record the caller cannot see is a 404,
an entity their role cannot read a 403, as for the record itself), a file field also the field; upload
and delete need update. Errors are problem+json naming the limit that refused a file.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from flask import Blueprint, Response, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses
from engine.fields import INT64_MAX

from .plugin import files_of
from .service import INLINE, FileRefused, human_size


def blueprint() -> Blueprint:
    bp = api.api_routes("files_api", __name__)
    bp.add_url_rule("/<entity:entity>/<int:record_id>/_attachments", "attachments", attachments, methods=["GET", "POST"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>/_attachments/<int:file_id>", "attachment", attachment,
                    methods=["GET", "DELETE"])
    bp.add_url_rule("/<entity:entity>/_files/<field>", "field_upload", field_upload, methods=["POST"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>/_files/<field>", "field_file", field_file, methods=["GET"])
    return bp


def _service():
    service = files_of(api.runtime())
    if service is None:
        raise ApiError(404, "Not found", "files are turned off on this server")
    return service


# -- rights (shared with the UI's screens) ------------------------------------------------------
def readable_record(rt, ent, record_id: int, context) -> dict:
    """The record as the caller may read it: ``PermissionDenied`` (403) or ``NotFound`` (404) otherwise."""
    if record_id < 1 or record_id > INT64_MAX:
        raise ApiError(404, "Not found", f"{ent.name} {record_id} does not exist")
    return rt.records.get(ent.name, record_id, context=context)


def may_update(ent, access) -> bool:
    return access is None or access.can(ent.name, "update")


def require_update(rt, ent, access) -> None:
    if access is not None:
        access.require(ent.name, "update")


def file_json(row: dict) -> dict:
    base = f"/api/v1/{row['entity']}/{row['record_id']}"
    url = (f"{base}/_attachments/{row['id']}" if not row["field"] else f"{base}/_files/{row['field']}") \
        if row["record_id"] is not None else None
    return {"id": row["id"], "name": row["name"], "content_type": row["mime"], "size": row["size"],
            "sha256": row["sha256"], "uploaded_by": row["uploaded_by"],
            "uploaded_at": row["uploaded_at"].isoformat().replace("+00:00", "Z"), "field": row["field"] or None,
            "url": url, "inline": row["mime"] in INLINE}


def disposition(name: str, inline: bool) -> str:
    """RFC 6266 / 5987: an ASCII fallback and the UTF-8 name (a Chinese name survives)."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    fallback = re.sub(r'[^A-Za-z0-9._ -]', "_", fallback).strip() or "file"
    return f"{'inline' if inline else 'attachment'}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def send(service, row: dict, *, inline: bool) -> Response:
    """The file as a streamed download; inline only for the safe types (PDF, raster images)."""
    try:
        chunks = service.store.stream(row["key"])
    except FileNotFoundError:
        raise ApiError(404, "Not found", f"the bytes of file {row['id']} ({row['name']}) are missing from the store",
                       kind="file-missing") from None
    shown = inline and row["mime"] in INLINE
    mime = row["mime"] if row["mime"] in INLINE or row["mime"].startswith("text/") or row["mime"].startswith(
        "application/") else "application/octet-stream"
    headers = {"Content-Disposition": disposition(row["name"], shown), "X-Content-Type-Options": "nosniff",
               "Content-Length": str(row["size"]), "Cache-Control": "private, no-store",
               "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"}
    if shown and row["mime"] == "application/pdf":
        headers.pop("Content-Security-Policy")   # the browser's PDF viewer needs its own scripts
    return Response(chunks, mimetype=mime, headers=headers, direct_passthrough=True)


def uploaded_file():
    """The ``file`` part of a multipart request (400 naming it when missing)."""
    part = request.files.get("file")
    if part is None:
        raise ApiError(400, "Bad request", "send the file as multipart/form-data in a part named 'file'",
                       kind="bad-request", errors=[{"field": "file", "code": "required", "message": "no file part"}])
    return part


def refused(exc: FileRefused) -> ApiError:
    titles = {413: "File too large", 415: "File type not allowed"}
    return ApiError(exc.status, titles.get(exc.status, "File refused"), exc.message, kind=f"file-{exc.code}",
                    errors=[{"field": "file", "code": exc.code, "message": exc.message}])


# -- attachments -------------------------------------------------------------------------------
def attachments(entity: str, record_id: int):
    service, rt, ent = _service(), api.runtime(), api.entity(entity)
    context = api.context()
    readable_record(rt, ent, record_id, context)
    if request.method == "GET":
        return api.json_response({"data": [file_json(r) for r in service.of_record(ent.name, record_id)]})
    require_update(rt, ent, g.access)
    part = uploaded_file()
    try:
        row = service.upload(ent, record_id, part.stream, part.filename, user_id=g.identity.user_id)
    except FileRefused as exc:
        raise refused(exc) from None
    return api.json_response(file_json(row), 201)


def _attachment_row(service, ent, record_id: int, file_id: int) -> dict:
    row = service.find(file_id) if 1 <= file_id <= INT64_MAX else None
    if row is None or row["entity"] != ent.name or row["record_id"] != record_id or row["field"]:
        raise ApiError(404, "Not found", f"{ent.name} {record_id} has no attachment {file_id}")
    return row


def attachment(entity: str, record_id: int, file_id: int):
    service, rt, ent = _service(), api.runtime(), api.entity(entity)
    inline = inline_asked() if request.method == "GET" else False   # a bad query first: 400
    readable_record(rt, ent, record_id, api.context())
    row = _attachment_row(service, ent, record_id, file_id)
    if request.method == "GET":
        return send(service, row, inline=inline)
    require_update(rt, ent, g.access)
    service.delete(row, user_id=g.identity.user_id)
    return Response(status=204)


# -- file fields -------------------------------------------------------------------------------
def _file_field(ent, field: str, access, op: str):
    f = ent.fields.get(field)
    hidden = access.hidden(ent.name) if access is not None else frozenset()
    if f is None or f.type.name != "file" or field in hidden:
        raise ApiError(404, "Not found", f"{ent.name} has no file field {field!r}")
    if op == "write" and access is not None:
        access.require(ent.name, "update" if access.can(ent.name, "update") else "create")
        errors = access.write_errors(ent.name, {field: None})
        if errors:
            raise ApiError(403, "Forbidden", f"{field}: {errors[0].message}")
    return f


def field_upload(entity: str, field: str):
    service, ent = _service(), api.entity(entity)
    _file_field(ent, field, g.access, "write")
    part = uploaded_file()
    try:
        row = service.upload(ent, None, part.stream, part.filename, user_id=g.identity.user_id, field=field)
    except FileRefused as exc:
        raise refused(exc) from None
    return api.json_response(file_json(row), 201)


def field_file(entity: str, record_id: int, field: str):
    service, rt, ent = _service(), api.runtime(), api.entity(entity)
    inline = inline_asked()
    _file_field(ent, field, g.access, "read")
    record = readable_record(rt, ent, record_id, api.context())
    file_id = record.get(field)
    row = service.find(file_id) if file_id else None
    if row is None:
        raise ApiError(404, "Not found", f"{ent.name} {record_id} has no file in {field}")
    return send(service, row, inline=inline)


def inline_asked() -> bool:
    """``?inline=1`` (the only value the document allows; anything else is a 400 naming it)."""
    values = request.args.getlist("inline")
    if not values:
        return False
    if values != ["1"]:
        raise ApiError(400, "Bad query", "inline is 1 when given, and given once", kind="bad-query",
                       errors=[{"field": "inline", "code": "invalid", "message": "give inline=1 or leave it out"}])
    return True


# -- the document ------------------------------------------------------------------------------
def openapi_fragment(model, limits) -> dict:
    rid = {"name": "record_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}}
    fid = {"name": "file_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}}
    entity = {"name": "entity", "in": "path", "required": True, "schema": {"type": "string",
              "enum": sorted(model.entities)}}
    inline = {"name": "inline", "in": "query", "required": False, "schema": {"type": "string", "enum": ["1"]},
              "description": "show a PDF or an image in the browser (other types always download)"}
    file_schema = {"$ref": "#/components/schemas/File"}
    upload = {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}},
        "description": f"the file (site limit for attachments: {human_size(limits.max_size)}; types: "
                       f"{', '.join(limits.types)}; the type is checked on the content)"}
    binary = {"description": "The file, in its own type (Content-Disposition names it)", "content": {
        "*/*": {"schema": {"type": "string", "format": "binary"}}}}
    paths = {
        "/api/v1/{entity}/{record_id}/_attachments": {
            "get": {"tags": ["files"], "operationId": "attachments_list", "summary": "The record's attachments",
                    "parameters": [entity, rid],
                    "responses": {"200": {"description": "The attachments, newest first", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "data": {"type": "array", "items": file_schema}}}}}},
                        **error_responses("401", "403", "404")}},
            "post": {"tags": ["files"], "operationId": "attachments_upload", "summary": "Attach a file to the record",
                     "parameters": [entity, rid], "requestBody": upload,
                     "responses": {"201": {"description": "Attached", "content": {"application/json": {
                         "schema": file_schema}}}, **error_responses("400", "401", "403", "404", "413", "415", "422")}}},
        "/api/v1/{entity}/{record_id}/_attachments/{file_id}": {
            "get": {"tags": ["files"], "operationId": "attachment_download", "summary": "Download an attachment",
                    "parameters": [entity, rid, fid, inline],
                    "responses": {"200": binary, **error_responses("400", "401", "403", "404")}},
            "delete": {"tags": ["files"], "operationId": "attachment_delete", "summary": "Delete an attachment",
                       "parameters": [entity, rid, fid],
                       "responses": {"204": {"description": "Deleted"}, **error_responses("401", "403", "404")}}},
        "/api/v1/{entity}/_files/{field}": {
            "post": {"tags": ["files"], "operationId": "file_field_upload",
                     "summary": "Upload a file for a file field; set the field to the answer's id on create/update",
                     "parameters": [entity, {"name": "field", "in": "path", "required": True,
                                             "schema": {"type": "string"}}], "requestBody": upload,
                     "responses": {"201": {"description": "Stored", "content": {"application/json": {
                         "schema": file_schema}}}, **error_responses("400", "401", "403", "404", "413", "415", "422")}}},
        "/api/v1/{entity}/{record_id}/_files/{field}": {
            "get": {"tags": ["files"], "operationId": "file_field_download", "summary": "Download a file field's file",
                    "parameters": [entity, rid, {"name": "field", "in": "path", "required": True,
                                                 "schema": {"type": "string"}}, inline],
                    "responses": {"200": binary, **error_responses("400", "401", "403", "404")}}},
    }
    # One path per entity, as the API's other per-entity routes are documented (the routes serve every
    # entity; an operationId stays unique with the entity in it).
    paths = {path.replace("{entity}", name): {
        method: {**op, "operationId": f"{op['operationId']}_{name}",
                 "parameters": [p for p in op["parameters"] if p is not entity]}
        for method, op in item.items()} for path, item in paths.items() for name in sorted(model.entities)}
    schema = {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "content_type": {"type": "string"},
        "size": {"type": "integer"}, "sha256": {"type": "string"}, "uploaded_by": {"type": ["integer", "null"]},
        "uploaded_at": {"type": "string", "format": "date-time"}, "field": {"type": ["string", "null"]},
        "url": {"type": ["string", "null"]}, "inline": {"type": "boolean"}}}
    return {"paths": paths, "components": {"schemas": {"File": schema}},
            "tags": [{"name": "files", "description": "Attachments and file fields (docs/api.md#files)"}]}
