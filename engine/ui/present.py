"""How records look in the web UI: the fields a screen shows, their labels, widgets and display
text. Everything here is derived from the model and the field-type registry (each type names its
widget); no entity is known by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable

from babel.numbers import format_decimal

from engine.fields.numeric import LOCALES, currencies_of, format_money, is_amount
from engine.metadata.model import Entity, Field
from engine.storage.query import SYSTEM_TYPES, system_field
from engine.storage.titles import SYSTEM_LABELS, pointer_titles, text_title, title_of

from .i18n import local, zone_name
from .i18n import translate as _

#: The key of ``titles`` under which ``lookup_titles`` keeps a row's currency: ``(CURRENCY, row id)``.
CURRENCY = "$currency"


@dataclass(frozen=True)
class Column:
    """One field as a screen shows it (a declared field, or a system column)."""

    name: str
    field: Field
    system: bool

    def label(self, lang: str) -> str:
        return _(SYSTEM_LABELS[self.name]) if self.system else self.field.label.get(lang)

    @property
    def widget(self) -> str:
        return self.field.type.widget

    @property
    def kind(self) -> str:
        """The type a value displays as (a formula shows as the type it returns)."""
        if self.field.type_name == "formula":
            return str(self.field.prop("returns") or "text")
        if self.field.type_name == "rollup":
            return "currency" if is_amount(self.field) else "number"
        return self.field.type_name

    @property
    def target(self) -> str | None:
        return "user" if self.system and SYSTEM_TYPES[self.name] == "user" else self.field.target

    @property
    def sortable(self) -> bool:
        return self.system or (self.field.stored and not self.field.prop("encrypted"))


def column(ent: Entity, name: str) -> Column | None:
    """The column ``name`` of ``ent``, or None when it has no such field."""
    if name in ent.fields:
        return Column(name, ent.fields[name], False)
    if name in SYSTEM_TYPES:
        return Column(name, system_field(name), True)
    return None


def columns(ent: Entity, names: Iterable[str], hidden: frozenset[str] = frozenset()) -> list[Column]:
    """The columns named, in order, without those the user may not read (or that do not exist)."""
    return [c for n in names if n not in hidden and (c := column(ent, n)) is not None]


def list_columns(ent: Entity, hidden: frozenset[str]) -> list[Column]:
    layout = ent.layouts.get("list") or {}
    names = layout.get("columns") or [ent.title, "owner_id", "updated_at"]
    return columns(ent, names, hidden)


def form_sections(ent: Entity, hidden: frozenset[str]) -> list[dict]:
    """[{label, columns, fields: [Column]}] from the ``form`` layout (every field when none is declared)."""
    declared = ent.layouts.get("form") or [{"fields": list(ent.fields)}]
    sections = []
    for section in declared:
        cols = columns(ent, section.get("fields", ()), hidden)
        if cols:
            sections.append({"label": section.get("section"), "columns": int(section.get("columns") or 1),
                             "fields": cols})
    return sections


def lookup_titles(records_svc, ent: Entity, cols: list[Column], rows: list[dict], context) -> dict:
    """{(target entity, id): title} for every lookup value shown, read with the user's rights (a
    record the user may not see keeps only its id); and the rows' currencies (``CURRENCY``)."""
    pointers = [(c.name, c.target) for c in cols if c.target is not None]
    pointers += [(c.name, None) for c in cols if c.kind == "reference"]
    titles = pointer_titles(records_svc, pointers, rows, context)
    if any(c.kind == "currency" for c in cols):
        titles.update({(CURRENCY, rid): code for rid, code in currencies_of(records_svc, ent, rows, context).items()})
    return titles


def default_currency() -> str:
    """The site's currency (``CRM_CURRENCY``), for amounts whose entity names none."""
    from flask import current_app, has_app_context

    runtime = current_app.extensions.get("crm") if has_app_context() else None
    return getattr(getattr(runtime, "settings", None), "currency", None) or "USD"


def display(col: Column, value: Any, lang: str, titles: dict | None = None, record: dict | None = None) -> str:
    """The text a value shows as (blank as an empty string); an amount in the currency of ``record``
    (the row it is read from, whose code ``lookup_titles`` found) or else the site's."""
    if value is None or value == "" or value == []:
        return ""
    kind = col.kind
    locale = LOCALES.get(lang, "en_US")
    if kind in ("lookup", "user") or (col.target and isinstance(value, int)):
        return (titles or {}).get((col.target, value)) or f"#{value}"
    if kind == "reference":
        return (titles or {}).get((value.entity, value.id)) or f"{value.entity} #{value.id}"
    if kind == "picklist":
        return next((o.label.get(lang) for o in col.field.options if o.value == value), str(value))
    if kind == "multipicklist":
        labels = {o.value: o.label.get(lang) for o in col.field.options}
        return ", ".join(labels.get(v, str(v)) for v in value)
    if kind == "boolean":
        return _("Yes") if value else _("No")
    if kind == "currency" and isinstance(value, (int, Decimal, float)):
        code = (titles or {}).get((CURRENCY, record.get("id"))) if record is not None else None
        return format_money(value, code or col.field.prop("currency") or default_currency(), lang)
    if kind == "percent" and isinstance(value, (int, Decimal, float)):
        return f"{format_decimal(value, locale=locale)}%"
    if kind in ("number", "integer") and isinstance(value, (int, Decimal, float)):
        return format_decimal(value, locale=locale)
    if isinstance(value, datetime):
        return f"{local(value).strftime('%Y-%m-%d %H:%M')} {zone_name()}"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def tone(col: Column, value: Any) -> str | None:
    """The badge tone of a picklist value (its option's ``color``, else ``gray``); None for a value
    that is not one option of a picklist (it shows as plain text)."""
    if col.kind != "picklist" or value in (None, ""):
        return None
    return next((o.color or "gray" for o in col.field.options if o.value == value), None)


def input_value(col: Column, value: Any) -> Any:
    """A value as a form input holds it (text for most widgets; a list for multi-select)."""
    if value is None:
        return [] if col.widget == "multiselect" else ""
    if col.widget == "multiselect":
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    if isinstance(value, datetime):
        return local(value).strftime("%Y-%m-%dT%H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if col.kind == "reference" and hasattr(value, "entity"):
        return f"{value.entity}:{value.id}"
    return str(value)


__all__ = ["CURRENCY", "Column", "column", "columns", "default_currency", "display", "form_sections", "input_value", "list_columns",
           "lookup_titles", "text_title", "title_of", "tone"]


def buttons(contributed) -> list[dict]:
    """``RecordAction``s the plugins returned (a hook's results, in registration order) as the
    templates draw them, in order; a kind that is no plain name becomes ``action``."""
    found = [a for each in reversed(contributed) for a in each or ()]
    return [{"key": a.key, "label": a.label, "url": a.url, "opens": a.method.lower() == "get", "style": a.style,
             "kind": a.kind if re.fullmatch(r"[a-z][a-z0-9-]*", a.kind or "") else "action",
             "value": getattr(a, "value", ""), "selection": getattr(a, "selection", True)}
            for a in sorted(found, key=lambda a: a.order)]
