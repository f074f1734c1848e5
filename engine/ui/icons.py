"""Icons: one set (Heroicons, MIT, from the ``heroicons`` package) drawn as inline SVG, so no icon font,
no sprite file and no CDN. ``icon(name)`` in every template; ``name`` is a Heroicons name
(https://heroicons.com, e.g. ``phone``, ``calendar-days``) or one of the short names entities have
always declared (``icon: building``), which ``ALIASES`` maps. An unknown name draws a neutral square
rather than failing a page; ``known(name)`` lets the model checks name the entity that declared it.
"""

from __future__ import annotations

import functools

from markupsafe import Markup

# The short names entity declarations used before the icon set was chosen, and common synonyms.
ALIASES = {
    "book": "book-open", "box": "cube", "building": "building-office", "calendar-check": "calendar-days",
    "cash": "banknotes", "file-signature": "document-check", "file-text": "document-text",
    "life-buoy": "lifebuoy", "list": "list-bullet", "target": "viewfinder-circle", "mail": "envelope",
    "email": "envelope", "note": "pencil-square", "task": "check-circle", "call": "phone",
    "meeting": "calendar-days", "settings": "cog-6-tooth", "search": "magnifying-glass",
    "attachment": "paper-clip", "edit": "pencil", "delete": "trash", "close": "x-mark",
}
FALLBACK = "squares-2x2"


@functools.lru_cache(maxsize=None)
def known(name: str) -> bool:
    from heroicons import IconDoesNotExist, _load_icon

    try:
        _load_icon("mini", ALIASES.get(name, name))
    except IconDoesNotExist:
        return False
    return True


@functools.lru_cache(maxsize=512)
def _svg(name: str, size: int, style: str, css: str) -> str:
    from heroicons.jinja import heroicon_micro, heroicon_mini, heroicon_outline

    draw = {"mini": heroicon_mini, "micro": heroicon_micro, "outline": heroicon_outline}[style]
    real = ALIASES.get(name, name) if known(name or "") else FALLBACK
    return str(draw(real, size=size, **{"class": f"icon {css}".strip(), "aria-hidden": "true",
                                       "focusable": "false"}))


def icon(name: str | None, size: int = 20, style: str = "mini", css: str = "") -> Markup:
    """An inline SVG icon, hidden from screen readers (the text beside it says what it is)."""
    return Markup(_svg(name or FALLBACK, size, style, css))


__all__ = ["ALIASES", "icon", "known"]
