"""The record page, the screen a rep lives on: header with the entity's ``highlights``, the path of
its workflow, the composer of its ``quick_actions``, one timeline, related lists as cards, details
with inline editing. ``page`` draws it; ``timeline``, ``composer`` and ``inline`` are its live parts
(htmx)."""

from .composer import compose
from .inline import field_editor, field_save, field_view
from .page import record_page
from .timeline import timeline_part

__all__ = ["compose", "field_editor", "field_save", "field_view", "record_page", "timeline_part"]
