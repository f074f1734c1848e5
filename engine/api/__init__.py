"""The generated REST API: ``install(app, runtime)`` mounts it, its OpenAPI document (with the
fragments of plugins, ``crm_openapi``) and the docs page. Plugins' own API routes are blueprints
made with ``engine.api.extend.api_routes``, mounted by the app with the rest of ``crm_blueprints``."""

from __future__ import annotations

from flask import Flask, request

from .errors import to_problem
from .openapi import build_openapi
from .routes import api_blueprint
from .serialize import Serializers

MAX_BODY = 32 * 1024 * 1024  # room for 10,000 records in one bulk call


def install(app: Flask, runtime) -> None:
    app.extensions["crm.serializers"] = Serializers(runtime.model)
    fragments = reversed(runtime.pm.hook.crm_openapi(runtime=runtime))   # in the order plugins registered
    app.extensions["crm.openapi"] = build_openapi(runtime.model, fragments)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_blueprint(api_blueprint())
    _install_docs(app)

    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def api_errors(exc):  # routes outside the blueprint's rules still answer problem+json under /api/
        if request.path.startswith("/api/"):
            return to_problem(exc)
        return exc


def _install_docs(app: Flask) -> None:
    from flask_swagger_ui import get_swaggerui_blueprint

    docs = get_swaggerui_blueprint("/api/docs", "/api/v1/openapi.json",
                                   config={"app_name": "CRM engine API", "persistAuthorization": True})
    app.register_blueprint(docs)


__all__ = ["install"]
