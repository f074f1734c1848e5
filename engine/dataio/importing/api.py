"""Imports on the API (the same authentication and problem+json errors as every route), and their
OpenAPI fragment; mounted by the ``imports`` default plugin.

``POST /api/v1/_imports``                         multipart: ``file`` + ``entity`` and options; 202 with the job
``POST /api/v1/_imports/preview``                 multipart: ``file`` + ``entity``: headers, auto mapping, first rows
``GET  /api/v1/_imports``                         the caller's imports (an admin's: everyone's)
``GET  /api/v1/_imports/{id}``                    status, counts, progress, first errors per column
``GET  /api/v1/_imports/{id}/errors.csv``         the rejected rows with an ``error`` column
``POST /api/v1/_imports/{id}/cancel``             stop after the current chunk
``POST /api/v1/_imports/{id}/revert``             undo (per-record refusals listed)
``GET|PUT /api/v1/_imports/mappings/{entity}/{name}``  a saved mapping

Every route needs the role's ``import`` right on the entity (and create / update as the mode
writes); an import is visible to the user who started it and to administrators only (others get 404).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from flask import Blueprint, Response, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses

from .plugin import imports_of
from .readers import ImportFileError
from .service import ImportError_, Options, progress_of

PREVIEW_ROWS = 10
BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": None}


def blueprint() -> Blueprint:
    bp = api.api_routes("imports_api", __name__)
    bp.add_url_rule("/_imports", "start", _start, methods=["POST"])
    bp.add_url_rule("/_imports", "list", _list, methods=["GET"])
    bp.add_url_rule("/_imports/preview", "preview", _preview, methods=["POST"])
    bp.add_url_rule("/_imports/<int(max=9223372036854775807):job_id>", "job", _job, methods=["GET"])
    bp.add_url_rule("/_imports/<int(max=9223372036854775807):job_id>/errors.csv", "errors", _errors, methods=["GET"])
    bp.add_url_rule("/_imports/<int(max=9223372036854775807):job_id>/cancel", "cancel", _cancel, methods=["POST"])
    bp.add_url_rule("/_imports/<int(max=9223372036854775807):job_id>/revert", "revert", _revert, methods=["POST"])
    bp.add_url_rule("/_imports/mappings/<entity>/<name>", "mapping", _mapping, methods=["GET", "PUT"])
    bp.register_error_handler(ImportFileError, _file_problem)
    return bp


def _file_problem(exc: ImportFileError):
    from engine.api.errors import to_problem

    return to_problem(ApiError(422, "Unreadable file", str(exc), kind=f"import-{exc.code}",
                               errors=[{"field": "file", "code": exc.code, "message": str(exc),
                                        **({"row": exc.row} if exc.row is not None else {})}]))


def _service():
    service = imports_of(api.runtime())
    if service is None:
        raise ApiError(404, "Not found", "imports are turned off on this server")
    return service


def _entity_rights(entity: str, mode: str = "create") -> None:
    api.entity(entity)   # 404 for an unknown entity
    for op in ("import", *{"create": ("create",), "update": ("update",)}.get(mode, ("create", "update"))):
        g.access.require(entity, op)


def _own(job_id: int) -> dict:
    job = _service().get(job_id)
    if job is None or (not g.access.admin and job["user_id"] != g.identity.user_id):
        raise ApiError(404, "Not found", f"there is no import {job_id}", kind="not-found")
    return job


def _form_options() -> Options:
    form = request.form
    known = {"entity", "mode", "key", "encoding", "delimiter", "sheet", "locale", "unresolved", "duplicates",
             "automations", "mapping", "mapping_name", "dry_run"}
    unknown = [k for k in form if k not in known]
    if unknown:
        raise ImportError_(f"unknown option(s): {', '.join(unknown)} (allowed: {', '.join(sorted(known))})",
                           field=unknown[0])
    automations = _flag("automations")
    options = Options(mode=form.get("mode") or "create", key=form.get("key") or None,
                      encoding=form.get("encoding") or None, delimiter=form.get("delimiter") or None,
                      sheet=form.get("sheet") or None, locale=form.get("locale") or None,
                      unresolved=form.get("unresolved") or "error",
                      duplicates=form.get("duplicates") or "error",
                      automations=True if automations is None else automations)
    if form.get("mapping"):
        import json

        try:
            options.mapping = json.loads(form["mapping"])
        except ValueError:
            raise ImportError_("mapping must be JSON: {\"columns\": {...}, \"constants\": {...}}",
                               field="mapping") from None
    elif form.get("mapping_name"):
        from .store import load_mapping

        options.mapping = load_mapping(_service(), form.get("entity", ""), form["mapping_name"])
    return options


def _flag(name: str) -> bool | None:
    raw = request.form.get(name, "").strip().lower()
    if raw not in BOOL:
        raise ImportError_(f"{name} must be true or false", field=name)
    return BOOL[raw]


def _upload() -> tuple[Path, str]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ImportError_("send the file as the multipart part 'file'", field="file")
    name = Path(upload.filename).name[:200]
    tmp = tempfile.NamedTemporaryFile(delete=False, suffix=Path(name).suffix.lower())
    with tmp:
        upload.save(tmp)
    return Path(tmp.name), name


def _start():
    entity = request.form.get("entity") or ""
    if not entity:
        raise ImportError_("entity is required", field="entity")
    options = _form_options()
    _entity_rights(entity, options.mode)
    path, name = _upload()
    try:
        job_id = _service().start(path, entity, options, user_id=g.identity.user_id, access=g.access,
                                  dry_run=bool(_flag("dry_run")), name=name)
    finally:
        path.unlink(missing_ok=True)
    response = api.json_response({"data": _job_json(_service().get(job_id))})
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/_imports/{job_id}"
    return response


def _preview():
    from .mapping import complete, importable

    entity = request.form.get("entity") or ""
    if not entity:
        raise ImportError_("entity is required", field="entity")
    options = _form_options()
    _entity_rights(entity, options.mode)
    path, name = _upload()
    try:
        table = _service().open(path, options, name)
        ent = api.entity(entity)
        mapping = complete(ent, table.headers, None) if not options.mapping else _service().check(
            entity, options, table.headers, g.access)
        rows = []
        for number, values in table.rows():
            rows.append({"row": number, "values": [None if v is None else str(v) for v in values]})
            if len(rows) >= PREVIEW_ROWS:
                break
    finally:
        path.unlink(missing_ok=True)
    fields = [{"name": n, "label": dict(f.label.texts), "type": f.type_name, "required": f.required}
              for n, f in importable(ent).items()]
    return api.json_response({"data": {
        "file": name, "kind": table.kind, "encoding": table.encoding, "delimiter": table.delimiter,
        "sheet": table.sheet, "headers": table.headers, "mapping": mapping.as_json(), "rows": rows,
        "fields": fields}})


def _list():
    user = None if g.access.admin else g.identity.user_id
    return api.json_response({"data": [_job_json(j, errors=False) for j in _service().list(user_id=user)]})


def _job(job_id: int):
    return api.json_response({"data": _job_json(_own(job_id))})


def _job_json(job: dict, *, errors: bool = True) -> dict:
    options = dict(job["options"] or {})
    out = {"id": job["id"], "entity": job["entity"], "status": job["status"], "dry_run": job["dry_run"],
           "file": job["file_name"], "user_id": job["user_id"], "options": options,
           "counts": {c: job[c] for c in ("created", "updated", "unchanged", "failed")},
           "progress": progress_of(job), "error": job["error"],
           "created_at": job["created_at"].isoformat(),
           "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
           "errors_csv": f"/api/v1/_imports/{job['id']}/errors.csv"}
    if errors:
        out["first_errors"] = _service().first_errors(job["id"])
    return out


def _errors(job_id: int):
    from .revert import error_rows_csv

    job = _own(job_id)
    stem = Path(job["file_name"]).stem or "import"
    return Response(error_rows_csv(_service(), job_id), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{stem}-errors.csv"'.encode(
                        "ascii", "replace").decode()})


def _cancel(job_id: int):
    _own(job_id)
    return api.json_response({"data": _job_json(_service().cancel(job_id))})


def _revert(job_id: int):
    from .revert import RevertRefused, revert

    job = _own(job_id)
    _entity_rights(job["entity"], "upsert")
    g.access.require(job["entity"], "delete")
    try:
        result = revert(_service(), job_id, api.context())
    except RevertRefused as exc:
        raise ImportError_(exc.message, status=exc.status, code="revert") from None
    response = api.json_response({"data": result})
    if result["refused"]:   # the others were reverted; these are listed with their reasons
        response.status_code = 409
    return response


def _mapping(entity: str, name: str):
    from .store import load_mapping, save_mapping

    _entity_rights(entity)
    if request.method == "GET":
        return api.json_response({"data": load_mapping(_service(), entity, name)})
    saved = save_mapping(_service(), entity, name, api.json_body(), user_id=g.identity.user_id, access=g.access)
    return api.json_response({"data": saved})


# -- OpenAPI ----------------------------------------------------------------------------------------
def openapi_fragment() -> dict:
    obj = {"type": "object"}
    job = {"type": "object", "required": ["id", "entity", "status", "counts", "progress"], "properties": {
        "id": {"type": "integer"}, "entity": {"type": "string"},
        "status": {"enum": ["queued", "running", "done", "failed", "cancelled", "reverted"]},
        "dry_run": {"type": "boolean"}, "file": {"type": "string"}, "options": obj,
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "progress": {"type": "object", "properties": {"rows_done": {"type": "integer"},
                                                       "rows_total": {"type": ["integer", "null"]},
                                                       "rate": {"type": ["number", "null"]},
                                                       "seconds_left": {"type": ["number", "null"]}}},
        "first_errors": {"type": "object", "additionalProperties": {"type": "array", "items": obj}},
        "errors_csv": {"type": "string"}}}
    form = {"type": "object", "required": ["file", "entity"], "properties": {
        "file": {"type": "string", "format": "binary"}, "entity": {"type": "string"},
        "mode": {"enum": ["create", "update", "upsert"]}, "key": {"type": "string"},
        "dry_run": {"type": "boolean"}, "encoding": {"type": "string"}, "delimiter": {"type": "string"},
        "sheet": {"type": "string"}, "locale": {"type": "string"},
        "unresolved": {"enum": ["error", "empty", "create"]},
        "duplicates": {"enum": ["error", "skip", "create", "update"]}, "automations": {"type": "boolean"},
        "mapping": {"type": "string", "description": "JSON: {columns: {header: field|null}, constants: {}}"},
        "mapping_name": {"type": "string"}}}
    multipart = {"required": True, "content": {"multipart/form-data": {"schema": form}}}

    def ok(description: str, schema: dict, code: str = "200") -> dict:
        return {code: {"description": description, "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": schema}}}}}}

    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    tag = ["imports"]
    paths = {
        "/api/v1/_imports": {
            "post": {"tags": tag, "operationId": "import_start", "summary": "Upload a CSV or XLSX file and start an import",
                     "requestBody": multipart, "responses": {**ok("The queued job", job, "202"),
                                                             **error_responses("400", "401", "404", "413", "422")}},
            "get": {"tags": tag, "operationId": "imports", "summary": "Your imports (an administrator's: all)",
                    "responses": {**ok("Imports", {"type": "array", "items": job}), **error_responses("401")}}},
        "/api/v1/_imports/preview": {"post": {
            "tags": tag, "operationId": "import_preview", "summary": "Headers, automatic mapping and first rows of a file",
            "requestBody": multipart, "responses": {**ok("The preview", obj), **error_responses("400", "401", "404", "422")}}},
        "/api/v1/_imports/{job_id}": {"get": {
            "tags": tag, "operationId": "import", "summary": "An import's status, counts, progress and first errors",
            "parameters": job_id, "responses": {**ok("The job", job), **error_responses("401", "404")}}},
        "/api/v1/_imports/{job_id}/errors.csv": {"get": {
            "tags": tag, "operationId": "import_errors", "summary": "The rejected rows, with an error column",
            "parameters": job_id, "responses": {"200": {"description": "CSV", "content": {"text/csv": {}}},
                                                **error_responses("401", "404")}}},
        "/api/v1/_imports/{job_id}/cancel": {"post": {
            "tags": tag, "operationId": "import_cancel", "summary": "Stop an import after its current chunk",
            "parameters": job_id, "responses": {**ok("The job", job), **error_responses("401", "404")}}},
        "/api/v1/_imports/{job_id}/revert": {"post": {
            "tags": tag, "operationId": "import_revert", "summary": "Undo an import (refused per record changed since)",
            "parameters": job_id, "responses": {**ok("Reverted", obj), **error_responses("401", "404", "409", "422")}}},
        "/api/v1/_imports/mappings/{entity}/{name}": {
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"tags": tag, "operationId": "import_mapping", "summary": "A saved mapping",
                    "responses": {**ok("The mapping", obj), **error_responses("401", "404")}},
            "put": {"tags": tag, "operationId": "import_mapping_save", "summary": "Save a mapping under a name",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": obj}}},
                    "responses": {**ok("The mapping", obj), **error_responses("400", "401", "404", "422")}}},
    }
    return {"paths": paths, "tags": [{"name": "imports", "description": "CSV and XLSX imports with mapping, dry run, "
                                                                        "error rows and revert"}]}
