"""The metadata of ``follow_up``, as a default plugin gives it to the loader (``"follow_up.kinds"``): it
loads even when ``"follow_up"`` is turned off."""

from __future__ import annotations

from engine.plugins import hookimpl  # noqa: F401
