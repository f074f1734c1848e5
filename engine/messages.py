"""Messages for people, marked for translation without knowing the interface (the bottom layer).

The engine keeps every message in English (the msgid) and the edges translate it: the web UI in the
signed-in user's language, the API by ``Accept-Language``. A message with values is a ``Msg``: the
English text itself (a ``str``, so logs, ``str(exc)`` and tests read it as before) that remembers its
template and values, so that an edge can translate the template and fill the values in again::

    FieldError(name, "required", Msg("is required"))
    FieldError(name, "transition", Msg("only {roles} may {transition}", roles=..., transition=...))

``localize(text, gettext)`` is the one translation of such a text: a ``Msg``'s template is looked up
and formatted with its values (a value that is a ``Msg`` is localized too; other values, such as
field names and typed values, stay as they are); a plain string is
looked up whole (fixed texts need no marker); anything without a translation stays English. The
placeholders are ``{name}`` (``str.format``); tests/test_ui_i18n.py checks that every translation keeps
them. The catalogs are the UI's (engine/ui/translations); ``Msg("...")`` literals anywhere in the
engine are collected into them by that test.
"""

from __future__ import annotations

from typing import Any, Callable


class Msg(str):
    """English text made from ``template.format(**params)`` that keeps ``template`` and ``params``."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, **params: Any) -> Msg:
        text = template.format(**params) if params else template
        made = super().__new__(cls, text)
        made.template, made.params = template, params
        return made

    def __reduce__(self):   # pickling (job queues) keeps the marker
        return (_rebuild, (self.template, self.params))


def _rebuild(template: str, params: dict) -> Msg:
    return Msg(template, **params)


def localize(text: Any, gettext: Callable[[str], str]) -> str:
    """``text`` translated by ``gettext`` (msgid -> translation, the msgid itself when there is none)."""
    if isinstance(text, Msg):
        translated = gettext(text.template)
        if not text.params:
            return translated
        values = {k: localize(v, gettext) if isinstance(v, Msg) else v for k, v in text.params.items()}
        try:
            return translated.format(**values)
        except (KeyError, IndexError, ValueError):   # a broken translation: the English text
            return str(text)
    if isinstance(text, str):
        return gettext(text)
    return str(text)


__all__ = ["Msg", "localize"]
