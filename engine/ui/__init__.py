"""The generated web UI: ``install_ui(app, runtime)`` mounts the screens (``views``), the interface
languages (``i18n``) and the static assets. Bootstrap 5 comes from the Bootstrap-Flask package and is
served by this app, so the UI works with no internet; icons are inline SVG from the ``heroicons``
package (``icon(name)`` in templates, ``icons``); htmx (partial page updates) is vendored in
``static/vendor/`` with its licence; our own script and styles are in ``static/``.
A field's input is the template ``templates/ui/widgets/<widget>.html`` of its type's widget; plugins
add widgets (and replace templates) through ``crm_template_dirs``. Plugins add screens (blueprints made
with ``engine.ui.extend.ui_routes``), navigation entries, home panels, and record-page buttons and
panels through their hooks; the UI draws them without knowing which plugin they come from.
"""

from __future__ import annotations

from flask import Flask, session


def install_ui(app: Flask, runtime) -> None:
    from flask_bootstrap import Bootstrap5

    from .i18n import install_i18n
    from .icons import icon
    from .present import tone
    from .views import ui_blueprint

    plugin_dirs = [str(d) for found in runtime.pm.hook.crm_template_dirs() for d in found or ()]
    if plugin_dirs:   # plugins' templates first: their widgets, and any template they replace
        from jinja2 import ChoiceLoader, FileSystemLoader

        app.jinja_loader = ChoiceLoader([FileSystemLoader(plugin_dirs), app.jinja_loader])
    app.config.setdefault("BOOTSTRAP_SERVE_LOCAL", True)
    Bootstrap5(app)
    install_i18n(app)
    app.jinja_env.globals["pop_flash"] = lambda: session.pop("flash", None)
    app.jinja_env.globals["icon"] = icon
    app.jinja_env.globals["tone"] = tone
    app.register_blueprint(ui_blueprint(), static_folder=None)
    from .profile import profile_blueprint

    app.register_blueprint(profile_blueprint())
    app.add_url_rule("/ui/static/<path:filename>", "ui_static",
                     lambda filename: _static(app, filename))


def _static(app: Flask, filename: str):
    from pathlib import Path

    from flask import send_from_directory

    return send_from_directory(Path(__file__).parent / "static", filename, max_age=3600)


__all__ = ["install_ui"]
