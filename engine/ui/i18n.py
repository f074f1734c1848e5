"""Languages of the web UI.

Two sources of text, kept apart on purpose: labels of entities, fields, options, sections and
transitions come from the metadata (``{en: ..., zh: ...}``, read with ``Label.get(lang)``), and the
interface's own strings come from Babel catalogs (``translations/<lang>/LC_MESSAGES/messages.po``,
extracted from the templates and views with ``pybabel extract -F babel.cfg``). The catalogs are read
once when the app is made; a string without a translation shows in English.

The language of a request: the one the user chose (kept in the session: the switch in the
navigation, or the language of their profile, set at login and when the profile is saved), else the best match of
the browser's ``Accept-Language``, else English.

The time zone of a request: the one the user chose on their profile (kept in the session), else the
browser's own (``Intl``'s zone, which the page's script keeps in the ``tz`` cookie), else UTC. Date-times are stored in UTC; they are shown, typed and filtered in this zone.
"""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from pathlib import Path
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.messages.pofile import read_po
from flask import Flask, g, request, session

LANGUAGES = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
CATALOGS = Path(__file__).parent / "translations"


def load_catalogs(folder: Path = CATALOGS) -> dict[str, dict[str, str]]:
    """{language: {English text: translation}} from every ``messages.po`` (fuzzy entries skipped)."""
    found: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        path = folder / lang / "LC_MESSAGES" / "messages.po"
        if not path.exists():
            continue
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=lang)
        found[lang] = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy
                       and isinstance(m.id, str)}
    return found


def install_i18n(app: Flask) -> None:
    """``_()`` in templates (newstyle gettext: ``_("Hello %(name)s", name=x)``, escaped) and in views."""
    catalogs = load_catalogs()
    app.extensions["crm.catalogs"] = catalogs
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(gettext=lambda text: translate(text),
                                            ngettext=lambda s, p, n: translate(s if n == 1 else p),
                                            newstyle=True)
    app.jinja_env.globals.update(current_lang=current_lang, LANGUAGES=LANGUAGES, zone_name=zone_name)
    app.jinja_env.filters["when"] = lambda value: local(value).strftime("%Y-%m-%d %H:%M") if value else ""


def current_lang() -> str:
    """The language of this request."""
    lang = getattr(g, "lang", None)
    if lang is None:
        chosen = session.get("lang")
        lang = chosen if chosen in LANGUAGES else (request.accept_languages.best_match(LANGUAGES) or DEFAULT)
        g.lang = lang
    return lang


def current_zone() -> tzinfo:
    """The time zone of this request (UTC unless the browser said otherwise)."""
    zone = getattr(g, "zone", None)
    if zone is None:
        name = session.get("tz") or unquote(request.cookies.get("tz") or "")[:64]   # the profile's, else the browser's
        try:
            zone = ZoneInfo(name) if name and name != "UTC" else timezone.utc
        except (ZoneInfoNotFoundError, ValueError):   # unknown, or not a zone name at all
            zone = timezone.utc
        g.zone = zone
    return zone


def local(value: datetime) -> datetime:
    """An aware date-time in the request's time zone."""
    return value.astimezone(current_zone())


def zone_name() -> str:
    zone = current_zone()
    return "UTC" if zone is timezone.utc else str(zone)


def translate(text: str) -> str:
    """``text`` in the request's language (English when the catalog has no translation)."""
    from flask import current_app

    lang = current_lang()
    if lang == DEFAULT:
        return text
    return current_app.extensions["crm.catalogs"].get(lang, {}).get(text, text)


def say(message) -> str:
    """An engine message in the request's language: a text (a ``Msg`` with values, or fixed English)
    or an error of the record service (a ``ValidationFailed`` lists its fields by their labels)."""
    from engine.messages import localize
    from engine.storage.errors import ValidationFailed

    if isinstance(message, ValidationFailed):
        from flask import current_app

        ent = current_app.extensions["crm"].model.entities.get(message.entity)
        parts = []
        for e in message.errors:
            field = ent.fields.get(e.field) if ent is not None and e.field else None
            # English keeps the field's name (what the API and the formulas call it), others its label
            name = field.label.get(current_lang()) if field is not None and current_lang() != DEFAULT else e.field
            parts.append(f"{name}: {say(e.message)}" if name else say(e.message))
        return "; ".join(parts)
    if isinstance(message, BaseException):
        message = message.args[0] if message.args and isinstance(message.args[0], str) else str(message)
    return localize(message, translate)


_ = translate

__all__ = ["LANGUAGES", "current_lang", "current_zone", "install_i18n", "load_catalogs", "local", "say", "translate",
           "zone_name"]
