"""Default plugin module (to be filled by its part of engine/dataio)."""

from __future__ import annotations
