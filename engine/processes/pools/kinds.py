"""The metadata of ``pools``, as a default plugin gives it to the loader (``"pools.kinds"``): it
loads even when ``"pools"`` is turned off."""

from __future__ import annotations

from engine.plugins import hookimpl  # noqa: F401
