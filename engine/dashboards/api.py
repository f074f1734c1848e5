"""Dashboards on the API (the same authentication and permissions as every route), and the OpenAPI
fragment that documents them; mounted by the ``dashboards`` default plugin.

``GET /api/v1/_dashboards``                     the dashboards and the widgets the caller may see
``GET /api/v1/_dashboards/{name}``              every such widget computed (``?lang=zh`` for labels)
``GET /api/v1/_dashboards/{name}/{widget}.svg`` one widget drawn as SVG
"""

from __future__ import annotations

from typing import Any, Mapping

from flask import Blueprint, Response, g, request

from engine.api import extend as api
from engine.api.extend import ApiError
from engine.api.openapi import error_responses, json_object, query_parameter

from . import compute
from .plugin import dashboards_of
from .svg import money_of, render


def blueprint() -> Blueprint:
    bp = api.api_routes("dashboards_api", __name__)
    bp.add_url_rule("/_dashboards", "dashboards", _list, methods=["GET"])
    bp.add_url_rule("/_dashboards/<name>", "dashboard", _one, methods=["GET"])
    bp.add_url_rule("/_dashboards/<name>/<widget>.svg", "dashboard_svg", _svg, methods=["GET"])
    return bp


def _visible(dashboard):
    access = getattr(g, "access", None)
    return [w for w in dashboard.widgets if access is None or access.can(w.entity, "read")]


def _dashboard(name: str):
    found = dashboards_of(api.runtime()).get(name)
    if found is None:
        raise ApiError(404, "Not found", f"there is no dashboard {name!r}; GET /api/v1/_dashboards lists them")
    return found


def _list():
    return api.json_response({"data": [{"name": d.name, "label": dict(d.label.texts),
                                        "widgets": [{"name": w.name, "type": w.type, "label": dict(w.label.texts),
                                                     "entity": w.entity} for w in _visible(d)]}
                                       for d in dashboards_of(api.runtime()).values() if _visible(d)]})


def _lang() -> str:
    lang = request.args.get("lang", "en")
    if lang not in ("en", "zh"):
        raise ApiError(400, "Bad query", "lang must be en or zh", kind="bad-query")
    return lang


def _one(name: str):
    dashboard = _dashboard(name)
    lang = _lang()
    results = [compute(api.runtime().records, w, access=getattr(g, "access", None), lang=lang).as_json()
               for w in _visible(dashboard)]
    return api.json_response({"name": dashboard.name, "label": dict(dashboard.label.texts), "widgets": results})


def _svg(name: str, widget: str):
    found = _dashboard(name).widget(widget)
    if found is None:
        raise ApiError(404, "Not found", f"dashboard {name!r} has no widget {widget!r}")
    result = compute(api.runtime().records, found, access=getattr(g, "access", None), lang=_lang())
    money = money_of(api.runtime().model, found, api.runtime().settings.currency, _lang())
    return Response(render(result, money), mimetype="image/svg+xml",
                    headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


# -- the document of these routes (crm_openapi) -----------------------------------------------------

def openapi_fragment(dashboards: Mapping[str, Any]) -> dict:
    """The dashboards' routes as OpenAPI paths (the names of the compiled ``dashboards`` as enums)."""
    label = {"type": "object", "additionalProperties": {"type": "string"}}
    lang = query_parameter("lang", {"type": "string", "enum": ["en", "zh"], "default": "en"}, "The language of labels")
    names = list(dashboards)
    widgets = sorted({w.name for d in dashboards.values() for w in d.widgets})
    name = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "enum": names} if names else {"type": "string"}}
    widget = {"name": "widget", "in": "path", "required": True,
              "schema": {"type": "string", "enum": widgets} if widgets else {"type": "string"}}
    summary = {"type": "object", "required": ["name", "type", "label", "entity"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string"}, "label": label, "entity": {"type": "string"}}}
    result = {"type": "object", "required": ["name", "type", "label"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string"}, "label": label, "value": {},
        "groups": {"type": "array", "items": {"type": "object", "required": ["key", "label", "value"]}}}}
    return {"paths": {
        "/api/v1/_dashboards": {"get": {
            "tags": ["dashboards"], "operationId": "dashboards", "summary": "The dashboards and the widgets you may see",
            "responses": {"200": {"description": "Dashboards", "content": json_object({"data": {"type": "array", "items": {
                "type": "object", "required": ["name", "label", "widgets"], "properties": {
                    "name": {"type": "string"}, "label": label, "widgets": {"type": "array", "items": summary}}}}})},
                **error_responses("401")}}},
        "/api/v1/_dashboards/{name}": {"get": {
            "tags": ["dashboards"], "operationId": "dashboard", "summary": "Every widget you may see, computed",
            "parameters": [name, lang],
            "responses": {"200": {"description": "The dashboard", "content": json_object(
                {"name": {"type": "string"}, "label": label, "widgets": {"type": "array", "items": result}})},
                **error_responses("400", "401", "404")}}},
        "/api/v1/_dashboards/{name}/{widget}.svg": {"get": {
            "tags": ["dashboards"], "operationId": "dashboard_widget_svg", "summary": "One widget drawn as SVG",
            "parameters": [name, widget, lang],
            "responses": {"200": {"description": "SVG", "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
                          **error_responses("400", "401", "404")}}},
    }}
