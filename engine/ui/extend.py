"""What the screens of a plugin are built with (the workflow's transition screen, the dashboards).

``ui_routes(name, import_name)`` is a blueprint whose screens need a signed-in user (``g.identity``,
``g.access``, ``g.context``, as every screen of the UI) and draw in the UI's frame (``base.html``
with the navigation); its templates come from the plugin's ``templates/`` folder beside
``import_name``'s module. A plugin returns it from ``crm_blueprints``. The helpers the UI's own
screens use (``engine.ui.common``, ``engine.ui.present``, ``engine.ui.i18n``) are theirs to use too.
"""

from __future__ import annotations

from flask import Blueprint

from .views import shell, sign_in


def ui_routes(name: str, import_name: str, *, template_folder: str | None = "templates") -> Blueprint:
    """A blueprint of screens for signed-in users, drawn in the UI's frame."""
    bp = Blueprint(name, import_name, template_folder=template_folder)
    bp.before_request(sign_in)
    bp.context_processor(shell)
    return bp


__all__ = ["ui_routes"]
