"""Dashboards on the API (the same authentication and permissions as every route).

``GET /api/v1/_dashboards``                     the dashboards and the widgets the caller may see
``GET /api/v1/_dashboards/{name}``              every such widget computed (``?lang=zh`` for labels)
``GET /api/v1/_dashboards/{name}/{widget}.svg`` one widget drawn as SVG
"""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from engine.dashboards import compute
from engine.dashboards.svg import render

from .errors import ApiError


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/_dashboards", "dashboards", _list, methods=["GET"])
    bp.add_url_rule("/_dashboards/<name>", "dashboard", _one, methods=["GET"])
    bp.add_url_rule("/_dashboards/<name>/<widget>.svg", "dashboard_svg", _svg, methods=["GET"])


def _routes():
    from . import routes

    return routes


def _visible(dashboard):
    access = getattr(g, "access", None)
    return [w for w in dashboard.widgets if access is None or access.can(w.entity, "read")]


def _dashboard(name: str):
    found = _routes()._rt().dashboards.get(name)
    if found is None:
        raise ApiError(404, "Not found", f"there is no dashboard {name!r}; GET /api/v1/_dashboards lists them")
    return found


def _list():
    r = _routes()
    return r._json({"data": [{"name": d.name, "label": dict(d.label.texts),
                              "widgets": [{"name": w.name, "type": w.type, "label": dict(w.label.texts),
                                           "entity": w.entity} for w in _visible(d)]}
                             for d in r._rt().dashboards.values() if _visible(d)]})


def _lang() -> str:
    lang = request.args.get("lang", "en")
    if lang not in ("en", "zh"):
        raise ApiError(400, "Bad query", "lang must be en or zh", kind="bad-query")
    return lang


def _one(name: str):
    r = _routes()
    dashboard = _dashboard(name)
    lang = _lang()
    results = [compute(r._rt().records, w, access=getattr(g, "access", None), lang=lang).as_json()
               for w in _visible(dashboard)]
    return r._json({"name": dashboard.name, "label": dict(dashboard.label.texts), "widgets": results})


def _svg(name: str, widget: str):
    r = _routes()
    found = _dashboard(name).widget(widget)
    if found is None:
        raise ApiError(404, "Not found", f"dashboard {name!r} has no widget {widget!r}")
    result = compute(r._rt().records, found, access=getattr(g, "access", None), lang=_lang())
    return Response(render(result), mimetype="image/svg+xml",
                    headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
