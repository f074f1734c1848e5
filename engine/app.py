"""``create_app(settings)``: the Flask application. No side effects at import time.

It mounts the web guards (sessions, CSRF), the generic API and UI, then the blueprints of every
plugin (``crm_blueprints``): the platform's own features (workflow, dashboards) are default plugins
and come in that way, so the app knows none of them by name."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, jsonify, request

from engine.runtime import Runtime
from engine.settings import Settings
from engine.storage.migrate import applied_state


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    runtime = runtime or Runtime.boot(settings)
    app = Flask(__name__, template_folder="ui/templates")
    app.config.update(SECRET_KEY=settings.secret_key)
    app.extensions["crm"] = runtime

    from engine.security.web import install_web
    install_web(app, runtime, secure_cookies=settings.secure_cookies)

    from engine.api import install
    install(app, runtime)

    from engine.ui import install_ui
    install_ui(app, runtime)

    for found in reversed(runtime.pm.hook.crm_blueprints(runtime=runtime)):   # in the order plugins registered
        for blueprint in found or ():
            app.register_blueprint(blueprint)

    @app.errorhandler(sa.exc.OperationalError)
    def database_unavailable(exc):
        """A database that cannot be reached is a 503 to retry, on every page (the API's own handler
        answers its routes the same way, as problem+json)."""
        from engine.api.errors import to_problem

        answer = to_problem(exc)
        if request.path.startswith("/api/"):
            return answer
        return ("<!doctype html><title>503</title><p>The database cannot be reached right now. "
                "Try again in a moment.</p>", 503, {"Retry-After": "5"})

    @app.get("/health")
    def health():
        """Liveness and the applied model version; no record data, so no login needed."""
        try:
            with runtime.db.read() as conn:
                conn.execute(sa.text("SELECT 1"))
                version, digest, _ = applied_state(conn)
        except sa.exc.OperationalError:
            return jsonify(status="database unavailable", database=runtime.db.dialect), 503, {"Retry-After": "5"}
        status = "ok" if digest == runtime.model.digest else "migration pending"
        return jsonify(status=status, model_version=version, model_digest=runtime.model.digest,
                       applied_digest=digest, database=runtime.db.dialect,
                       entities=len(runtime.model.entities)), 200 if status == "ok" else 503

    return app
