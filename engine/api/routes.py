"""The generic REST blueprint: every entity of the model under /api/v1, with no per-entity code."""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request, stream_with_context
from werkzeug.routing import BaseConverter

from engine.fields import INT64_MAX, unsafe_text, whole_number
from engine.security.audit import audit
from engine.security.permissions import access_for
from engine.security.tokens import Identity
from engine.security.web import bearer_identity, session_identity
from engine.storage.query import COUNT_CAP, DEFAULT_LIMIT, MAX_LIMIT, ListQuery, coerce_filter, check_sort
from engine.storage.records import Context

from .body import read_json
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
    bp.before_request(_one_value_each)
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
    bp.add_url_rule("/<entity:entity>/_export", "export", _export, methods=["GET"])
    bp.add_url_rule("/_search", "search", _search, methods=["GET"])
    bp.add_url_rule("/_audit", "audit", _audit, methods=["GET"])
    return bp


# -- plumbing -------------------------------------------------------------------------------------

def _rt():
    return current_app.extensions["crm"]


def _serializers():
    return current_app.extensions["crm.serializers"]


def _authenticate():
    """A bearer token, or else the web session's cookie (whose unsafe requests the app's CSRF
    check has already vetted); then the caller's role, loaded once for the request."""
    if request.endpoint in PUBLIC:
        return None
    records = _rt().records
    header = request.headers.get("Authorization", "")
    if header:
        identity = bearer_identity()
    else:
        identity = session_identity(records)
    if identity is None:
        raise ApiError(401, "Unauthorized", "send a valid API token as 'Authorization: Bearer <token>'"
                       if header else "authentication required: 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": 'Bearer realm="crm"'})
    g.identity = identity
    g.access = access_for(records, identity.user_id, identity.role or "")
    if g.access.admin and request.method not in ("GET", "HEAD", "OPTIONS"):
        audit(records, "admin_bypass", user_id=identity.user_id, detail={"method": request.method,
                                                                          "path": request.path})
    return None


def _one_value_each() -> None:
    """Each query parameter at most once: a second ``limit`` or ``q`` is a 400, not silently dropped
    (the filters of a list or an export may repeat: their conditions add up)."""
    for key in request.args:
        if len(request.args.getlist(key)) > 1 and (key in RESERVED or request.endpoint not in ("api.list", "api.export")):
            raise ApiError(400, "Bad query", f"the parameter {key!r} is given more than once", kind="bad-query",
                           errors=[{"field": key, "code": "repeated", "message": "give it once"}])


def _context() -> Context:
    identity: Identity = g.identity
    return Context(user_id=identity.user_id, access=g.access, duplicates=_duplicates())


#: How a write treats the warnings of duplicate rules: the header, or the query parameter ``duplicates``.
DUPLICATES_HEADER = "X-CRM-Duplicates"


def _duplicates() -> str:
    """``allow`` (save past a ``warn`` duplicate rule, audited) or ``check`` (the default)."""
    asked = request.args.get("duplicates") if request.method != "GET" else None   # a GET's parameters filter
    value = (request.headers.get(DUPLICATES_HEADER) or asked or "check").strip().lower()
    if value not in ("check", "allow"):
        raise ApiError(400, "Bad request", f"{DUPLICATES_HEADER} (or duplicates=) must be check or allow, not {value!r}",
                       kind="bad-request", errors=[{"field": "duplicates", "code": "choice", "message": "check or allow"}])
    return value


def _only(ent, fields: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
    """The names a response may hold: ``fields`` if asked, else every column the caller may read
    (None: all of them, the fast path)."""
    if fields or not g.access.hidden(ent.name):
        return fields
    return g.access.readable_columns(ent, _serializers().columns(ent))


def _entity(name: str):
    entity = _rt().model.entities.get(name)
    if entity is None:
        raise ApiError(404, "Not found", f"there is no entity {name!r}; GET /api/v1/_meta lists them",
                       kind="unknown-entity")
    return entity


def _json_body(kind: type = dict) -> Any:
    if not request.is_json:
        raise ApiError(415, "Unsupported media type", "send the body as application/json")
    body = read_json(request.get_data(cache=True))
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


#: ``If-Match`` as the OpenAPI document describes it: ETags this API sends, a list of them, or ``*``.
ETAG_PATTERN = r'^(\*|(W/)?"[0-9]{1,19}-[0-9]{1,19}"( *, *(W/)?"[0-9]{1,19}-[0-9]{1,19}")*)$'


def _if_match(record_id: int) -> int | None:
    """The version an ``If-Match`` header names (None when absent or ``*``); a header that is no list
    of ETags is a 400 (one naming other records or versions is a 412)."""
    header = request.headers.get("If-Match")
    if _rt().settings.require_if_match and (header is None or header.strip() == "*"):
        raise ApiError(428, "Precondition required", "this server requires If-Match on writes to a record: "
                       'send the ETag of the version you read (If-Match: "<id>-<version>")',
                       kind="precondition-required", errors=[{"field": "If-Match", "code": "required",
                                                              "message": "required by this server (CRM_REQUIRE_IF_MATCH)"}])
    if header is None or header.strip() == "*":
        return None
    if not re.fullmatch(ETAG_PATTERN, header.strip()):
        raise ApiError(400, "Bad request", f"If-Match {header!r} is not an ETag of this API: write "
                       '"<id>-<version>" as the ETag header gave it, a comma-separated list of them, or *',
                       kind="bad-header", errors=[{"field": "If-Match", "code": "format",
                                                   "message": 'an ETag such as "17-3", a list of them, or *'}])
    for tag in (t.strip().removeprefix("W/").strip('"') for t in header.split(",")):
        rid, _, version = tag.partition("-")
        if rid == str(record_id) and version.isdigit():
            return int(version)
    raise ApiError(412, "Precondition failed", f"If-Match {header!r} does not name a version of record {record_id}",
                   kind="stale-version")


def _record_json(entity: str, record: dict) -> dict:
    return _serializers().dump(entity, record, _only(_entity(entity)))


# -- model ----------------------------------------------------------------------------------------

def _openapi():
    return _json(current_app.extensions["crm.openapi"])


def _meta():
    from .meta import model_meta
    return _json(model_meta(_rt().model))


def _meta_entity(entity: str):
    from .meta import entity_meta
    ent = _entity(entity)
    body = entity_meta(_rt().model, ent)
    hidden = g.access.hidden(ent.name)
    body["fields"] = [f for f in body["fields"] if f["name"] not in hidden]
    return _json(body)


# -- records --------------------------------------------------------------------------------------

def _list(entity: str):
    ent = _entity(entity)
    q, fields, expand = _list_query(ent)
    if fields:
        q.columns = fields
    page = _rt().records.list(q, timeout_ms=LIST_TIMEOUT_MS, context=_context())
    data = _serializers().dump_many(ent.name, page.records, _only(ent, fields))
    if expand:
        _expand(ent, page.records, data, expand)
    body: dict[str, Any] = {"data": data, "next_cursor": page.next_cursor}
    if q.count:
        body["total"] = page.total
        body["total_is_estimate"] = page.total_is_estimate
    return _json(body)


def _list_query(ent, options: frozenset[str] = frozenset()) -> tuple[ListQuery, tuple[str, ...] | None, list[str]]:
    args = request.args
    q = ListQuery(ent.name)
    hidden = g.access.hidden(ent.name)
    q.limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    q.offset = _int_arg("offset", 0, 0, 1_000_000)
    q.cursor = args.get("cursor") or None
    if q.cursor and q.offset:
        raise ApiError(400, "Bad query", "use either cursor or offset, not both", kind="bad-query")
    q.count = _bool_arg("count")
    if "sort" in args:
        q.sort = check_sort(ent, args["sort"], hidden)
    elif (ent.layouts.get("list") or {}).get("sort"):
        q.sort = check_sort(ent, ent.layouts["list"]["sort"])
    for key, value in args.items(multi=True):
        if key in RESERVED or key in options:
            continue
        name, _, rest = key.partition("[")
        op = rest[:-1] if rest.endswith("]") else ("eq" if not rest else None)
        if op is None:
            raise ApiError(400, "Bad query", f"cannot read the parameter {key!r}; write field=value or field[op]=value",
                           kind="bad-query")
        q.filters.append(coerce_filter(ent, name, op, value, hidden))
    if args.get("where"):
        q.formula = args["where"]
    fields = None
    if args.get("fields"):
        names = tuple(dict.fromkeys(n.strip() for n in args["fields"].split(",") if n.strip()))
        known = set(_serializers().columns(ent)) - hidden
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ApiError(400, "Bad query", f"unknown field(s) in fields: {', '.join(unknown)} "
                           "(unknown or not permitted)", kind="bad-query",
                           errors=[{"field": "fields", "code": "unknown", "message": "unknown or not permitted"}])
        fields = tuple(dict.fromkeys(("id", *names)))
    expand = [n.strip() for n in args.get("expand", "").split(",") if n.strip()]
    for name in expand:
        field = ent.fields.get(name)
        if name in hidden or (name not in SYSTEM_LOOKUPS and (field is None or not field.target)):
            raise ApiError(400, "Bad query", f"cannot expand {name!r}: it is not a lookup of {ent.name}", kind="bad-query")
        if not g.access.can("user" if name in SYSTEM_LOOKUPS else field.target, "read"):
            raise ApiError(403, "Forbidden", f"cannot expand {name!r}: your role may not read "
                           f"{'user' if name in SYSTEM_LOOKUPS else field.target}", kind="forbidden")
        if fields and SYSTEM_LOOKUPS.get(name, name) not in fields:
            fields = (*fields, SYSTEM_LOOKUPS.get(name, name))
    return q, fields, expand


def _expand(ent, records: list[dict], data: list[dict], names: list[str]) -> None:
    rt, serializers = _rt(), _serializers()
    for name in names:
        column = SYSTEM_LOOKUPS.get(name, name)
        target = "user" if name in SYSTEM_LOOKUPS else ent.fields[name].target
        found = rt.records.fetch_many(target, (r.get(column) for r in records), context=_context())
        only = _only(_entity(target))
        for record, item in zip(records, data):
            related = found.get(record.get(column))
            # a record the caller may not see stays a bare id: no more than the lookup itself says
            item[name if name in SYSTEM_LOOKUPS and name != "owner_id" else column] = (
                serializers.dump(target, related, only) if related else record.get(column) if name != "owner" else None)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    number = whole_number(raw)
    if number is None or not low <= number <= high:
        raise ApiError(400, "Bad query", f"{name} must be a whole number from {low} to {high} (ASCII digits)",
                       kind="bad-query", errors=[{"field": name, "code": "range",
                                                  "message": f"a whole number from {low} to {high}"}])
    return number


def _datetime_arg(name: str):
    """A date-time parameter, read by the datetime field type (an offset is required; a value that UTC
    cannot hold is refused), or None when absent. An empty value is not a date-time: refused."""
    from engine.fields import FieldValueError
    from engine.storage.query import system_field

    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return system_field(name, "datetime").coerce(raw)
    except FieldValueError as exc:
        raise ApiError(400, "Bad query", f"{name}: {exc.message} (an ISO 8601 date-time with an offset)",
                       kind="bad-query", errors=[{"field": name, "code": exc.code, "message": exc.message}]) from None


#: Names the API filters by as given (automation names, run triggers, audit kinds); as in the document.
NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,120}$"


def _name_arg(name: str) -> str | None:
    """A name-like query parameter (None when absent); anything else is a 400 naming it."""
    raw = request.args.get(name)
    if raw is not None and not re.fullmatch(NAME_PATTERN, raw):
        raise ApiError(400, "Bad query", f"{name} must be 1 to 120 letters, digits or _ . : -", kind="bad-query",
                       errors=[{"field": name, "code": "format", "message": "1 to 120 letters, digits or _ . : -"}])
    return raw


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(400, "Bad query", f"{name} must be true or false", kind="bad-query")
    return raw in ("true", "1")


def _get(entity: str, record_id: int):
    ent = _entity(entity)
    record = _rt().records.get(ent.name, record_id, context=_context())
    return _json(_record_json(ent.name, record), headers={"ETag": _etag(record)})


def _create(entity: str):
    ent = _entity(entity)
    body = _json_body()

    def run(conn) -> Response:
        record = _rt().records.create(ent.name, body, context=_context(), conn=conn)
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

    def run(conn) -> Response:
        result = _rt().records.bulk(ent.name, records, mode=mode, key=key, atomic=atomic, context=_context(),
                                    conn=conn)
        status = 200 if result.ok else (422 if atomic else 207)
        return _json({"items": result.items, "counts": result.counts(), "atomic": atomic}, status)

    return replay_or_run(_rt(), g.identity.user_id, request, run)


def _history(entity: str, record_id: int):
    ent = _entity(entity)
    _rt().records.get(ent.name, record_id, context=_context())   # 404 for a record that does not exist (for you)
    rows = _rt().records.history_of(ent.name, record_id, context=_context())
    return _json({"data": [{"field": r["field"], "old_value": r["old_value"], "new_value": r["new_value"],
                            "changed_by": r["changed_by"], "changed_at": r["changed_at"].isoformat()} for r in rows]})


def _export(entity: str):
    """The records matching the list parameters as CSV or XLSX (every page), with the fields the caller may read,
    each value as the list shows it (``engine/api/exports.py``)."""
    from .exports import csv_lines, export_rows

    ent = _entity(entity)
    context = _context()
    g.access.require(ent.name, "export")
    q, fields, _ = _list_query(ent, EXPORT_OPTIONS)
    options, kind = _export_options()
    if request.args.get("cursor") or request.args.get("offset") or request.args.get("count"):
        raise ApiError(400, "Bad query", "an export takes filters, where, sort and fields; not cursor, offset or count",
                       kind="bad-query")
    names = list(fields or _only(ent) or _serializers().columns(ent))
    columns, rows = export_rows(_rt().records, ent, q, names, context, options)
    audit(_rt().records, "export", user_id=context.user_id, entity=ent.name,
          detail={"query": request.query_string.decode("utf-8", "replace")[:1000]})
    if kind == "xlsx":
        from .exports_xlsx import xlsx_chunks

        body = xlsx_chunks(ent.plural.get(options.lang), columns, rows, options)
        return Response(stream_with_context(body), mimetype=XLSX,
                        headers={"Content-Disposition": f'attachment; filename="{ent.name}.xlsx"'})
    return Response(stream_with_context(csv_lines(columns, rows, options)), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{ent.name}.csv"'})


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: The export's own parameters (not filters), each checked by ``_export_options``.
EXPORT_CHOICES = {"file": ("csv", "xlsx"), "format": ("raw", "readable"), "lang": ("en", "zh"),
                  "headers": ("name", "label"), "ids": ("0", "1")}
EXPORT_OPTIONS = frozenset({*EXPORT_CHOICES, "tz"})


def _export_options():
    """(``ExportOptions``, csv or xlsx) from the query: ``file`` csv (default) or xlsx; ``format`` raw
    (default: plain amounts) or readable (amounts with their currency); ``lang`` en (default) or zh;
    ``headers`` name (default) or label; ``ids`` 1 for an id column after each pointer; ``tz`` an IANA
    zone for date-times (default UTC). Any other value is a 400 naming the parameter."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from .exports import ExportOptions

    chosen = {}
    for name, allowed in EXPORT_CHOICES.items():
        value = request.args.get(name, allowed[0])
        if value not in allowed:
            raise ApiError(400, "Bad query", f"{name} must be {' or '.join(allowed)}", kind="bad-query",
                           errors=[{"field": name, "code": "enum", "message": "not a value it takes"}])
        chosen[name] = value
    zone_name = request.args.get("tz", "UTC")
    try:
        zone = ZoneInfo(zone_name) if zone_name != "UTC" else None
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(400, "Bad query", "tz must be an IANA time zone name such as Asia/Shanghai", kind="bad-query",
                       errors=[{"field": "tz", "code": "enum", "message": "not a time zone"}]) from None
    lang = chosen["lang"]
    catalog = current_app.extensions.get("crm.catalogs", {}).get(lang, {})
    options = ExportOptions(lang=lang, money=chosen["format"] == "readable", ids=chosen["ids"] == "1",
                            headers=chosen["headers"], currency=_rt().settings.currency,
                            translate=lambda text: catalog.get(text, text), **({"zone": zone} if zone else {}))
    return options, chosen["file"]


def _search():
    """``q`` in the searchable fields of every entity the caller may read."""
    from engine.storage.search import search

    raw = request.args.get("q", "")
    text = raw.strip()
    if len(text) < 2 or len(raw) > 200:
        raise ApiError(400, "Bad query", "q must be 2 to 200 characters", kind="bad-query")
    if unsafe_text(text):
        raise ApiError(400, "Bad query", f"q {unsafe_text(text)}", kind="bad-query",
                       errors=[{"field": "q", "code": "encoding", "message": unsafe_text(text)}])
    limit = _int_arg("limit", 10, 1, 50)
    context = _context()
    hits = search(_rt().records, text, context, limit=limit)
    return _json({"data": [{"entity": e, "id": r["id"], "record": _record_json(e, r)} for e, r in hits]})


def _audit():
    """The audit log, newest first (admins only); filters kind, user, since, until; paged by before."""
    from engine.security.audit import query_audit

    if not g.access.admin:
        g.access.require("_audit", "read")
    args = request.args
    since, until = (_datetime_arg(k) for k in ("since", "until"))
    user = _int_arg("user", 0, 0, INT64_MAX)
    limit = _int_arg("limit", 100, 1, 500)
    rows = query_audit(_rt().records, kind=_name_arg("kind"), user_id=user or None,
                       since=since, until=until, before_id=_int_arg("before", 0, 0, 2**62) or None, limit=limit)
    data = [{"id": r["id"], "at": r["at"].isoformat(), "kind": r["kind"], "user_id": r["actor_id"], "ip": r["ip"],
             "entity": r["entity"], "record_id": r["record_id"], "detail": r["detail"]} for r in rows]
    return _json({"data": data, "next_before": data[-1]["id"] if len(data) == limit else None})


__all__ = ["COUNT_CAP", "MAX_BULK", "api_blueprint"]
