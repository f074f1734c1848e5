"""Inline editing on the record page: one field at a time, saved with the same record-service
update as the form (the user's context, rules, workflow). The editor carries the record's version
and the value the page showed: when someone else changed that field since, the save is refused and
both values are shown (keep mine, or take theirs); a change of other fields is no conflict, since
only this field is written."""

from __future__ import annotations

from typing import Any

from flask import abort, g, render_template, request
from werkzeug.datastructures import MultiDict

from engine.fields import whole_number
from engine.storage.errors import Conflict, NotFound, RecordError, ValidationFailed

from ..common import entity_of, link_to, load_record, lock_of, parse_input, runtime
from ..forms import field_states
from ..i18n import current_lang, say
from ..i18n import translate as _
from ..present import column, display, input_value, lookup_titles
from .page import inline_fields


def field_view(entity: str, record_id: int, name: str):
    """The field as the details show it (Cancel of the editor, "use theirs" of a conflict)."""
    ent, record, col = _editable(entity, record_id, name, check=False)
    return _view(ent, record, col)


def field_editor(entity: str, record_id: int, name: str):
    """The editor of one field, holding the value and version the page was loaded with."""
    ent, record, col = _editable(entity, record_id, name)
    version = whole_number(request.args.get("version", "")) or record["version"]
    loaded = request.args.get("loaded", input_value(col, record.get(col.name)))
    return _editor(ent, record, col, value=loaded, loaded=loaded, version=version)


def field_save(entity: str, record_id: int, name: str):
    ent, record, col = _editable(entity, record_id, name)
    typed = request.form.getlist(col.name) if col.widget == "multiselect" else request.form.get(col.name, "")
    loaded = request.form.get("_loaded", "")
    version = whole_number(request.form.get("version", "")) or 0
    value = parse_input(col, request.form)
    if record["version"] != version and not _same(col, _parsed(col, loaded), record.get(col.name)):
        return _conflict(ent, record, col, typed), 409
    try:
        saved = runtime().records.update(ent.name, record_id, {col.name: value}, version=record["version"],
                                         context=g.context)
    except ValidationFailed as exc:
        errors = [say(e.message) if e.field == col.name else say(exc) for e in exc.errors]
        return _editor(ent, record, col, value=typed, loaded=loaded, version=version, errors=errors), 422
    except Conflict:
        return _conflict(ent, load_record(ent, record_id), col, typed), 409
    except NotFound:
        abort(404)
    except RecordError as exc:
        return _editor(ent, record, col, value=typed, loaded=loaded, version=version, errors=[say(exc)]), 422
    return _view(ent, saved, col, saved=True)


def _editable(entity: str, record_id: int, name: str, *, check: bool = True):
    ent = entity_of(entity, "update" if check else "read")
    record = load_record(ent, record_id)
    col = column(ent, name)
    if col is None or name in g.access.hidden(ent.name):
        abort(404)
    if check and name not in inline_fields(ent, [col], lock_of(ent, record)):
        abort(403)
    return ent, record, col


def _parsed(col, text: Any) -> Any:
    value = parse_input(col, MultiDict([(col.name, v) for v in text] if isinstance(text, list) else
                                       [(col.name, "1")] if col.widget == "checkbox" and text in ("True", "true", "1")
                                       else [] if col.widget == "checkbox" else [(col.name, str(text))]))
    try:
        return None if value is None else col.field.coerce(value)
    except Exception:   # noqa: BLE001 - unreadable: it differs from any stored value
        return text


def _same(col, loaded: Any, current: Any) -> bool:
    if loaded is None or loaded == "":
        return current in (None, "", [])
    if hasattr(current, "replace") and hasattr(loaded, "second") and hasattr(current, "second"):
        return loaded == current.replace(second=0, microsecond=0) or loaded == current
    return loaded == current


def _shown(ent, record: dict, col) -> tuple[str, str | None]:
    titles = lookup_titles(runtime().records, ent, [col], [record], g.context)
    return display(col, record.get(col.name), current_lang(), titles, record), link_to(col, record.get(col.name))


def _view(ent, record: dict, col, *, saved: bool = False):
    state = field_states(ent, record, record)
    return render_template("ui/_record_field.html", ent=ent, record=record, c=col, shown=_shown(ent, record, col),
                           editable=col.name in inline_fields(ent, [col], lock_of(ent, record)), state=state,
                           saved=saved, lang=current_lang(), loaded_value=input_value(col, record.get(col.name)))


def _editor(ent, record: dict, col, *, value: Any, loaded: Any, version: int, errors: list[str] | None = None):
    titles = lookup_titles(runtime().records, ent, [col], [record], g.context)
    return render_template("ui/_record_field_edit.html", ent=ent, record=record, c=col, value=value, loaded=loaded,
                           version=version, errors={col.name: errors} if errors else {},
                           state=field_states(ent, record, record), lang=current_lang(),
                           lookup_text={col.name: display(col, record.get(col.name), current_lang(), titles)})


def _conflict(ent, current: dict, col, typed: Any):
    """Someone else changed this field since the page loaded: their value and the one typed here."""
    return render_template("ui/_record_field_edit.html", ent=ent, record=current, c=col, value=typed,
                           loaded=input_value(col, current.get(col.name)), version=current["version"], errors={},
                           state=field_states(ent, current, current), lang=current_lang(), lookup_text={},
                           conflict={"theirs": _shown(ent, current, col)[0] or "—", "mine": typed,
                                     "message": _("Someone else changed this field since you opened the page.")})
