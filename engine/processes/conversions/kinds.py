"""The metadata of ``conversions``, as a default plugin gives it to the loader (``"conversions.kinds"``): it
loads even when ``"conversions"`` is turned off."""

from __future__ import annotations

from engine.plugins import hookimpl  # noqa: F401
