"""``follow_up`` as a default plugin (``"follow_up"`` in ``engine.plugins.DEFAULT_PLUGINS``)."""

from __future__ import annotations

from engine.plugins import hookimpl  # noqa: F401
