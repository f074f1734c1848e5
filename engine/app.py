"""``create_app(settings)``: the Flask application. No side effects at import time."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, jsonify

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

    @app.get("/health")
    def health():
        """Liveness and the applied model version; no record data, so no login needed."""
        with runtime.db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
            version, digest, _ = applied_state(conn)
        status = "ok" if digest == runtime.model.digest else "migration pending"
        return jsonify(status=status, model_version=version, model_digest=runtime.model.digest,
                       applied_digest=digest, database=runtime.db.dialect,
                       entities=len(runtime.model.entities)), 200 if status == "ok" else 503

    return app
