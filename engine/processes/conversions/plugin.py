"""``conversions`` as a default plugin (``"conversions"`` in ``engine.plugins.DEFAULT_PLUGINS``)."""

from __future__ import annotations

from engine.plugins import hookimpl  # noqa: F401
