"""Record forms: new and edit, a widget per field type, conditional fields decided by the server
(``visible_when`` / ``required_when`` / ``readonly_when`` in the one formula language), errors beside
their fields with nothing typed lost, and the lookup type-ahead."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import g, jsonify, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from engine.fields import whole_number
from engine.storage.errors import (
    Conflict,
    DuplicateFound,
    FieldError,
    NotFound,
    PermissionDenied,
    RecordError,
    ValidationFailed,
)
from engine.storage.query import Filter, ListQuery, check_sort

from . import filters as fb
from .common import (
    editable_columns,
    entity_of,
    hidden_of,
    json_body,
    load_record,
    lock_of,
    parse_input,
    runtime,
    with_message,
)
from .i18n import current_lang
from .i18n import say
from .i18n import translate as _
from .present import (
    Column,
    column,
    display,
    form_sections,
    input_value,
    lookup_titles,
    text_title,
    title_of,
)


def new(entity: str):
    ent = entity_of(entity, "create")
    if request.method == "POST":
        values, raw = _submitted(ent, None)
        if values.get("owner_id") is None:
            values.pop("owner_id", None)   # a blank owner is the creator, as in the API (not "nobody's")
        try:
            record = runtime().records.create(ent.name, values, context=_write_context())
        except DuplicateFound as exc:
            return _form(ent, None, raw, [], duplicate=exc), 409
        except ValidationFailed as exc:
            return _form(ent, None, raw, exc.errors), 422
        except RecordError as exc:
            return _form(ent, None, raw, [FieldError(None, "error", say(exc))]), 422
        return with_message(url_for("ui.record", entity=ent.name, record_id=record["id"]),
                             _("%(thing)s created.") % {"thing": ent.label.get(current_lang())}, "success")
    defaults = {f.name: input_value(column(ent, f.name), f.literal_default) for f in ent.fields.values()
                if f.literal_default is not None}
    defaults["owner_id"] = str(g.identity.user_id)   # the record service's default: its creator
    prefill = {k: v for k, v in request.args.items() if k in ent.fields or k == "owner_id"}
    return _form(ent, None, {**defaults, **prefill}, [])


def edit(entity: str, record_id: int):
    ent = entity_of(entity, "update")
    record = load_record(ent, record_id)
    locked = lock_of(ent, record)
    if locked:   # the record's page says why; a POST would be refused by the plugin's write hook anyway
        return with_message(url_for("ui.record", entity=ent.name, record_id=record_id), locked, "warning")
    if request.method == "POST":
        values, raw = _submitted(ent, record)
        version = request.form.get("version", "")
        try:
            if values:
                runtime().records.update(ent.name, record_id, values, version=whole_number(version),
                                     context=_write_context())
        except DuplicateFound as exc:
            return _form(ent, record, {k: v for k, v in raw.items() if k in values}, [], duplicate=exc), 409
        except (ValidationFailed, Conflict, RecordError) as exc:
            # the form comes back with the user's changes over the record as it is now (with its
            # version): saving again writes those changes and nothing else
            errors = exc.errors if isinstance(exc, ValidationFailed) else [
                FieldError(None, "conflict" if isinstance(exc, Conflict) else "error", say(exc))]
            mine = {k: v for k, v in raw.items() if k in values}
            return _form(ent, record, mine, errors), 409 if isinstance(exc, Conflict) else 422
        return with_message(url_for("ui.record", entity=ent.name, record_id=record_id), _("Saved."), "success")
    return _form(ent, record, None, [])


def _write_context():
    """The user's context; "Save anyway" on a form that showed duplicates (``_duplicates=allow``) saves
    past the ``warn`` duplicate rules (the write is audited; a ``block`` rule still refuses)."""
    if request.form.get("_duplicates") == "allow":
        return replace(g.context, duplicates="allow")
    return g.context


def _form(ent, record: dict | None, raw: dict | None, errors: list[FieldError], *,
          duplicate: DuplicateFound | None = None) -> str:
    """The form: on an error, the user's own inputs come back with each error beside its field; when
    the record looks like others (``duplicate``), those with links, and "Save anyway" for a warning."""
    lang = current_lang()
    sections = form_sections(ent, hidden_of(ent))
    editable = {c.name for c in editable_columns(ent, [c for s in sections for c in s["fields"]])}
    by_field: dict[str, list[str]] = {}
    general = []
    shown = {c.name for s in sections for c in s["fields"]}
    for e in errors:
        message = _rule_message(ent, e, lang)
        (by_field.setdefault(e.field, []) if e.field in shown else general).append(
            message if e.field in shown else (f"{_field_label(ent, e.field, lang)}: {message}" if e.field else message))
    state = field_states(ent, {**(record or {}), **_coerced(ent, raw or {})}, record)
    values = {}
    for s in sections:
        for c in s["fields"]:
            source = raw if raw is not None and c.name in raw else (record or {})
            values[c.name] = input_value(c, source.get(c.name)) if source is not raw else raw[c.name]
    lookups = [c for s in sections for c in s["fields"] if c.target]
    titles = lookup_titles(runtime().records, ent, lookups, [{**(record or {}), **_coerced(ent, raw or {})}], g.context)
    lookup_text = {c.name: display(c, _as_int(values.get(c.name)), lang, titles) for c in lookups}
    return render_template("ui/form.html", ent=ent, record=record, sections=sections, values=values,
                           loaded=_loaded_form(ent, record) if record else None,
                           errors=by_field, general=general, editable=editable, state=state,
                           lookup_text=lookup_text, title=title_of(ent, record) if record else None,
                           duplicate=duplicate)


def _submitted(ent, record: dict | None) -> tuple[dict, dict]:
    """(values to write, raw inputs to show again): only editable fields of the form, and on an
    update only those the user changed. "Changed" is against the values the form was loaded with
    (``_loaded``), not the record as it is now: a field someone else changed meanwhile, and this
    user did not touch, is not written back with the old value."""
    sections = form_sections(ent, hidden_of(ent))
    cols = editable_columns(ent, [c for s in sections for c in s["fields"]])
    loaded = _loaded_values(ent, cols) if record is not None else {}
    values, raw = {}, {}
    for col in cols:
        if col.name not in request.form and col.widget not in ("checkbox", "multiselect"):
            continue
        if col.widget in ("checkbox", "multiselect") and f"_present_{col.name}" not in request.form:
            continue
        value = parse_input(col, request.form)
        raw[col.name] = request.form.getlist(col.name) if col.widget == "multiselect" else request.form.get(col.name, "")
        baseline = loaded[col.name] if col.name in loaded else (record or {}).get(col.name)
        if record is not None and _same(col, value, baseline):
            continue
        values[col.name] = value
    return values, raw


def _loaded_form(ent, record: dict) -> str:
    """The editable values as the form shows them, for ``_submitted`` to tell what the user changed."""
    sections = form_sections(ent, hidden_of(ent))
    cols = editable_columns(ent, [c for s in sections for c in s["fields"]])
    return json.dumps({c.name: input_value(c, record.get(c.name)) for c in cols}, separators=(",", ":"))


def _loaded_values(ent, cols: list[Column]) -> dict:
    """``_loaded`` read back as stored values (fields whose loaded text does not read are left out:
    they count as changed when they differ from the record)."""
    try:
        shown = json.loads(request.form.get("_loaded") or "{}")
    except ValueError:
        return {}
    if not isinstance(shown, dict):
        return {}
    out = {}
    for col in cols:
        if col.name not in shown:
            continue
        text = shown[col.name]
        form = MultiDict([(col.name, v) for v in text] if isinstance(text, list) else
                         [(col.name, "1")] if col.widget == "checkbox" and text in ("True", "true", "1") else
                         [] if col.widget == "checkbox" else [(col.name, str(text))])
        parsed = parse_input(col, form)
        try:
            out[col.name] = None if parsed is None else col.field.coerce(parsed)
        except Exception:   # noqa: BLE001 - not a value this field holds: compare with the record instead
            continue
    return out


def _same(col: Column, value: Any, current: Any) -> bool:
    if value is None or current is None:
        return value is None and current in (None, "", [])
    try:
        given = col.field.coerce(value)
    except Exception:   # noqa: BLE001 - an unreadable value differs; the record service reports it
        return False
    if col.widget == "datetime" and isinstance(current, datetime):
        # the picker holds minutes: the minute it showed keeps the stored seconds
        return given == current.replace(second=0, microsecond=0) or given == current
    return given == current


def _rule_message(ent, error: FieldError, lang: str) -> str:
    """An error's message; a validation rule's (code ``rule:<name>``) in the request's language
    when the rule declares one (the record service reports the English text)."""
    if error.code.startswith("rule:"):
        rule = next((v for v in ent.validations if v.get("name") == error.code[5:]), None)
        message = (rule or {}).get("message")
        if isinstance(message, dict) and message.get(lang):
            return str(message[lang])
    return say(error.message)


def _field_label(ent, name: str, lang: str) -> str:
    field = ent.fields.get(name)
    return field.label.get(lang) if field is not None and lang != "en" else name


def _as_int(value: Any) -> Any:
    number = whole_number(value) if isinstance(value, str) else None
    return value if number is None else number


def _coerced(ent, raw: dict) -> dict:
    """Raw form inputs as values (those that do not convert are left out)."""
    out = {}
    for name, value in raw.items():
        col = column(ent, name)
        if col is None or (col.system and name != "owner_id"):   # the owner is the one system column a form writes
            continue
        if value in ("", None, []):
            out[name] = None
            continue
        try:
            out[name] = col.field.coerce(value)
        except Exception:   # noqa: BLE001 - shown back as typed; the record service names the error
            continue
    return out


def field_states(ent, record: dict, old: dict | None) -> dict[str, dict[str, bool]]:
    """{"visible"|"required"|"readonly": {field: bool}} for the fields that declare a condition."""
    from engine import rules

    svc = runtime().records
    out: dict[str, dict[str, bool]] = {"visible": {}, "required": {}, "readonly": {}}
    for field in ent.fields.values():
        for prop, key in (("visible_when", "visible"), ("required_when", "required"), ("readonly_when", "readonly")):
            text = field.prop(prop)
            follows = field.prop("follows")
            if prop == "readonly_when" and not isinstance(text, str) and isinstance(follows, dict):
                text = follows.get("when") or "TRUE"   # read-only while it follows its computed value
            if not isinstance(text, str):
                continue
            compiled = rules.compile(text, ent.name, svc.model, registry=svc.functions)
            try:
                related = None
                paths = frozenset(p for p in compiled.fields if "." in p)
                if paths:
                    with svc.db.read() as conn:
                        related = rules.fetch_related(conn, svc.metadata, svc.model, ent.name, record, paths)
                out[key][field.name] = compiled.evaluate(record, prior=old, is_new=old is None, related=related,
                                                         user=g.access.user) is True
            except rules.RuleError:
                out[key][field.name] = key == "visible"
    return out


def form_state(entity: str):
    ent = entity_of(entity)
    body = json_body()
    old = None
    if isinstance(body.get("id"), int):
        try:
            old = runtime().records.get(ent.name, body["id"], context=g.context)
        except (NotFound, PermissionDenied):
            return jsonify(error="not found"), 404
    raw = body.get("values") if isinstance(body.get("values"), dict) else {}
    raw = {k: v for k, v in raw.items() if k in ent.fields and k not in hidden_of(ent)}
    return jsonify(field_states(ent, {**(old or {}), **_coerced(ent, raw)}, old))


def lookup(entity: str):
    """Type-ahead for lookup fields: records of ``entity`` whose title contains ``q``."""
    ent = entity_of(entity)
    text = request.args.get("q", "").strip()[:100]
    q = ListQuery(ent.name, limit=10)
    if text and text_title(ent) and ent.title not in hidden_of(ent):
        q.where = runtime().records.table(ent.name).c[ent.title].icontains(text, autoescape=True)
        q.sort = check_sort(ent, ent.title)
    elif whole_number(text) is not None:
        q.filters = [Filter("id", "eq", whole_number(text))]
    page = runtime().records.list(q, timeout_ms=2_000, context=g.context)
    return jsonify([{"id": r["id"], "title": title_of(ent, r)} for r in page.records])
