"""The generic REST blueprint: every entity of the model under /api/v1, with no per-entity code."""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.routing import BaseConverter

from engine.security.tokens import Identity, authenticate
from engine.storage.query import COUNT_CAP, DEFAULT_LIMIT, MAX_LIMIT, ListQuery, coerce_filter, check_sort
from engine.storage.records import Context

from .errors import ApiError, to_problem
from .idempotency import replay_or_run
from .serialize import SYSTEM_LOOKUPS

MAX_BULK = 10_000
LIST_TIMEOUT_MS = 5_000
RESERVED = {"limit", "offset", "cursor", "sort", "fields", "expand", "count", "where"}
PUBLIC = {"api.openapi"}


class EntityName(BaseConverter):
    """Entity names are snake_case; ``_meta`` and ``_bulk`` are never entities."""

    regex = r"[a-z][a-z0-9_]*"


def api_blueprint() -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")
    bp.record_once(lambda state: state.app.url_map.converters.setdefault("entity", EntityName))
    bp.before_request(_authenticate)
    bp.register_error_handler(Exception, to_problem)
    bp.add_url_rule("/openapi.json", "openapi", _openapi)
    bp.add_url_rule("/_meta", "meta", _meta)
    bp.add_url_rule("/_meta/<entity>", "meta_entity", _meta_entity)
    bp.add_url_rule("/<entity:entity>", "list", _list, methods=["GET"])
    bp.add_url_rule("/<entity:entity>", "create", _create, methods=["POST"])
    bp.add_url_rule("/<entity:entity>/_bulk", "bulk", _bulk, methods=["POST"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>", "get", _get, methods=["GET"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>", "update", _update, methods=["PATCH"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>", "delete", _delete, methods=["DELETE"])
    bp.add_url_rule("/<entity:entity>/<int:record_id>/history", "history", _history, methods=["GET"])
    from . import automation
    automation.register(bp)
    return bp


# -- plumbing -------------------------------------------------------------------------------------

def _rt():
    return current_app.extensions["crm"]


def _serializers():
    return current_app.extensions["crm.serializers"]


def _authenticate():
    if request.endpoint in PUBLIC:
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    identity = authenticate(_rt().records, token.strip()) if scheme.lower() == "bearer" else None
    if identity is None:
        raise ApiError(401, "Unauthorized", "send a valid API token as 'Authorization: Bearer <token>'"
                       if header else "authentication required: 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": 'Bearer realm="crm"'})
    g.identity = identity
    return None


def _context() -> Context:
    identity: Identity = g.identity
    return Context(user_id=identity.user_id)


def _entity(name: str):
    entity = _rt().model.entities.get(name)
    if entity is None:
        raise ApiError(404, "Not found", f"there is no entity {name!r}; GET /api/v1/_meta lists them",
                       kind="unknown-entity")
    return entity


def _json_body(kind: type = dict) -> Any:
    if not request.is_json:
        raise ApiError(415, "Unsupported media type", "send the body as application/json")
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, kind):
        raise ApiError(400, "Bad request", f"the body must be a JSON {'object' if kind is dict else 'array'}")
    return body


def _json(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    response = Response(orjson.dumps(data), status=status, mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _etag(record: dict) -> str:
    return f'"{record["id"]}-{record["version"]}"'


def _if_match(record_id: int) -> int | None:
    """The version an ``If-Match`` header names (None when absent or ``*``)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    for tag in (t.strip().removeprefix("W/").strip('"') for t in header.split(",")):
        rid, _, version = tag.partition("-")
        if rid == str(record_id) and version.isdigit():
            return int(version)
    raise ApiError(412, "Precondition failed", f"If-Match {header!r} does not name a version of record {record_id}",
                   kind="stale-version")


def _record_json(entity: str, record: dict) -> dict:
    return _serializers().dump(entity, record)


# -- model ----------------------------------------------------------------------------------------

def _openapi():
    return _json(current_app.extensions["crm.openapi"])


def _meta():
    from .meta import model_meta
    return _json(model_meta(_rt().model))


def _meta_entity(entity: str):
    from .meta import entity_meta
    return _json(entity_meta(_rt().model, _entity(entity)))


# -- records --------------------------------------------------------------------------------------

def _list(entity: str):
    ent = _entity(entity)
    q, fields, expand = _list_query(ent)
    if fields:
        q.columns = fields
    page = _rt().records.list(q, timeout_ms=LIST_TIMEOUT_MS, context=_context())
    data = _serializers().dump_many(ent.name, page.records, fields)
    if expand:
        _expand(ent, page.records, data, expand)
    body: dict[str, Any] = {"data": data, "next_cursor": page.next_cursor}
    if q.count:
        body["total"] = page.total
        body["total_is_estimate"] = page.total_is_estimate
    return _json(body)


def _list_query(ent) -> tuple[ListQuery, tuple[str, ...] | None, list[str]]:
    args = request.args
    q = ListQuery(ent.name)
    q.limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    q.offset = _int_arg("offset", 0, 0, 1_000_000)
    q.cursor = args.get("cursor") or None
    if q.cursor and q.offset:
        raise ApiError(400, "Bad query", "use either cursor or offset, not both", kind="bad-query")
    q.count = _bool_arg("count")
    if "sort" in args:
        q.sort = check_sort(ent, args["sort"])
    elif (ent.layouts.get("list") or {}).get("sort"):
        q.sort = check_sort(ent, ent.layouts["list"]["sort"])
    for key, value in args.items(multi=True):
        if key in RESERVED:
            continue
        name, _, rest = key.partition("[")
        op = rest[:-1] if rest.endswith("]") else ("eq" if not rest else None)
        if op is None:
            raise ApiError(400, "Bad query", f"cannot read the parameter {key!r}; write field=value or field[op]=value",
                           kind="bad-query")
        q.filters.append(coerce_filter(ent, name, op, value))
    if args.get("where"):
        q.formula = args["where"]
    fields = None
    if args.get("fields"):
        names = tuple(dict.fromkeys(n.strip() for n in args["fields"].split(",") if n.strip()))
        known = set(_serializers().columns(ent))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ApiError(400, "Bad query", f"unknown field(s) in fields: {', '.join(unknown)}", kind="bad-query")
        fields = tuple(dict.fromkeys(("id", *names)))
    expand = [n.strip() for n in args.get("expand", "").split(",") if n.strip()]
    for name in expand:
        field = ent.fields.get(name)
        if name not in SYSTEM_LOOKUPS and (field is None or not field.target):
            raise ApiError(400, "Bad query", f"cannot expand {name!r}: it is not a lookup of {ent.name}", kind="bad-query")
        if fields and SYSTEM_LOOKUPS.get(name, name) not in fields:
            fields = (*fields, SYSTEM_LOOKUPS.get(name, name))
    return q, fields, expand


def _expand(ent, records: list[dict], data: list[dict], names: list[str]) -> None:
    rt, serializers = _rt(), _serializers()
    for name in names:
        column = SYSTEM_LOOKUPS.get(name, name)
        target = "user" if name in SYSTEM_LOOKUPS else ent.fields[name].target
        found = rt.records.fetch_many(target, (r.get(column) for r in records))
        for record, item in zip(records, data):
            related = found.get(record.get(column))
            item[name if name in SYSTEM_LOOKUPS and name != "owner_id" else column] = (
                serializers.dump(target, related) if related else None)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "Bad query", f"{name} must be a whole number from {low} to {high}", kind="bad-query")
    return int(raw)


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, "Bad query", f"{name} must be true or false", kind="bad-query")
    return raw in ("true", "1")


def _get(entity: str, record_id: int):
    ent = _entity(entity)
    record = _rt().records.get(ent.name, record_id)
    return _json(_record_json(ent.name, record), headers={"ETag": _etag(record)})


def _create(entity: str):
    ent = _entity(entity)
    body = _json_body()

    def run() -> Response:
        record = _rt().records.create(ent.name, body, context=_context())
        return _json(_record_json(ent.name, record), 201,
                     {"Location": f"/api/v1/{ent.name}/{record['id']}", "ETag": _etag(record)})

    return replay_or_run(_rt(), g.identity.user_id, request, run)


def _update(entity: str, record_id: int):
    ent = _entity(entity)
    body = _json_body()
    record = _rt().records.update(ent.name, record_id, body, version=_if_match(record_id), context=_context())
    return _json(_record_json(ent.name, record), headers={"ETag": _etag(record)})


def _delete(entity: str, record_id: int):
    ent = _entity(entity)
    _rt().records.delete(ent.name, record_id, version=_if_match(record_id), context=_context())
    return Response(status=204, mimetype=None, content_type=None)


def _bulk(entity: str):
    ent = _entity(entity)
    body = _json_body()
    records = body.get("records")
    if not isinstance(records, list):
        raise ApiError(400, "Bad request", "the body needs 'records': a list of objects")
    if len(records) > MAX_BULK:
        raise ApiError(413, "Payload too large", f"at most {MAX_BULK} records per call; got {len(records)}")
    unknown = set(body) - {"records", "mode", "key", "atomic"}
    if unknown:
        raise ApiError(400, "Bad request", f"unknown properties: {', '.join(sorted(unknown))}")
    atomic = body.get("atomic", True)
    if not isinstance(atomic, bool):
        raise ApiError(400, "Bad request", "atomic must be true or false")
    mode, key = body.get("mode", "create"), body.get("key")
    if not isinstance(mode, str) or mode not in ("create", "update", "upsert"):
        raise ApiError(400, "Bad request", "mode must be create, update or upsert")
    if mode == "upsert" and key is None:
        raise ApiError(400, "Bad request", "an upsert needs 'key': a unique field to match records by")
    if key is not None and (not isinstance(key, str) or key not in ent.fields or not ent.fields[key].unique):
        raise ApiError(400, "Bad request", f"key {key!r} is not a unique field of {ent.name}")

    def run() -> Response:
        result = _rt().records.bulk(ent.name, records, mode=mode, key=key, atomic=atomic, context=_context())
        status = 200 if result.ok else (422 if atomic else 207)
        return _json({"items": result.items, "counts": result.counts(), "atomic": atomic}, status)

    return replay_or_run(_rt(), g.identity.user_id, request, run)


def _history(entity: str, record_id: int):
    ent = _entity(entity)
    _rt().records.get(ent.name, record_id)   # 404 for a record that does not exist
    rows = _rt().records.history_of(ent.name, record_id)
    return _json({"data": [{"field": r["field"], "old_value": r["old_value"], "new_value": r["new_value"],
                            "changed_by": r["changed_by"], "changed_at": r["changed_at"].isoformat()} for r in rows]})


__all__ = ["COUNT_CAP", "MAX_BULK", "api_blueprint"]
