"""The import wizard on the web UI: upload, mapping, then a dry run or the import (ui_jobs.py shows
its progress, result, error file and Undo, and the history of imports).

1. ``/ui/imports/new?entity=`` the file (CSV or XLSX) and the options: encoding and delimiter
   (detected unless chosen), the locale of dates and numbers, create / update / upsert and the key,
   what an unresolved lookup does, what a row that looks like a duplicate does (``error``, ``skip``,
   ``create`` or ``update``, as ``crm import --duplicates``), and for administrators skipping automations. The file is kept as
   a draft (ui_drafts.py) of this user.
2. ``/ui/imports/draft/<token>`` every column with its first values and the field it fills (the
   engine's automatic mapping by name or label in any language, or a saved mapping), constants for
   fields no column fills; the mapping can be saved under a name. Its buttons start a dry run or
   the import through ``ImportService.start``, exactly as the API and the CLI do.

Every route checks the role's ``import`` right on the entity (and create / update as the mode writes);
a draft opens only for the user who uploaded it.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from engine.storage.query import system_field
from engine.storage.values import jsonable
from engine.ui.common import entity_of, runtime, with_message
from engine.ui.extend import ui_routes
from engine.ui.i18n import current_lang
from engine.ui.i18n import translate as _

from . import ui_drafts
from .convert import CellError, Converter
from .lookups import UNRESOLVED
from .mapping import Mapping, MappingError, complete, importable
from .plugin import imports_of
from .readers import ImportFileError, Table
from .service import DUPLICATES, MODES, ImportError_, Options

SAMPLES = 3          # first values shown per column
CONSTANT_ROWS = 2    # empty constant rows offered below the ones already set
ENCODINGS = ("utf-8", "utf-8-sig", "gb18030", "big5", "shift_jis", "cp1252", "latin-1")
DELIMITERS = {",": ",", ";": ";", "tab": "\t", "|": "|"}
#: The locales of dates and numbers offered, with how they write them (convert.py reads them).
LOCALES = {"en-US": "12/31/2026 · 1,234.56", "en-GB": "31/12/2026 · 1,234.56", "zh-CN": "2026/12/31 · 1,234.56",
           "ja": "2026/12/31 · 1,234.56", "de": "31.12.2026 · 1.234,56", "fr": "31/12/2026 · 1 234,56",
           "es": "31/12/2026 · 1.234,56", "it": "31/12/2026 · 1.234,56"}


def blueprint() -> Blueprint:
    from . import ui_jobs

    bp = ui_routes("imports_ui", __name__)
    bp.static_folder, bp.static_url_path = "static", "/ui/imports/static"
    bp.add_url_rule("/ui/imports/begin/<entity>", "begin", begin, methods=["POST"])
    bp.add_url_rule("/ui/imports/new", "new", upload, methods=["GET", "POST"])
    bp.add_url_rule("/ui/imports/draft/<token>", "draft", draft_page, methods=["GET", "POST"])
    bp.url_value_preprocessor(_upload_limit)
    bp.register_error_handler(413, _too_large)
    ui_jobs.routes(bp)
    return bp


def _upload_limit(endpoint, values) -> None:
    """The upload takes files up to ``CRM_IMPORT_MAX_MB``, beyond the app's limit on a request body
    (set here, before the CSRF check reads the form; werkzeug spools a large file to disk)."""
    if endpoint == "imports_ui.new":
        request.max_content_length = (_max_mb() + 1) * 1024 * 1024


def _too_large(exc):
    """The upload page again, saying how large a file may be (the body was refused unread, before
    the screens' own sign-in check: done here)."""
    from engine.ui.views import sign_in

    if "access" not in g and (answer := sign_in()) is not None:
        return answer
    entity = request.args.get("entity") or ""
    if entity not in runtime().model.entities:
        abort(404)
    error = ImportError_(_("The file is larger than %(n)s MB: split it, or import it with the command line.")
                         % {"n": _max_mb()}, status=413, field="file")
    return _upload_page(rights(entity), {}, error), 413


# -- shared by the wizard's screens --------------------------------------------------------------------
def service():
    found = imports_of(runtime())
    if found is None:
        abort(404)
    return found


def writes(mode: str) -> tuple[str, ...]:
    """The rights an import of ``mode`` needs besides ``import``."""
    return {"create": ("create",), "update": ("update",)}.get(mode, ("create", "update"))


def rights(entity: str, mode: str | None = None):
    """The entity, after checking the role may import into it (in ``mode``: create / update rights
    too); 403 (audited) if not, 404 for an unknown entity."""
    ent = entity_of(entity, "import")
    for op in writes(mode) if mode else ():
        entity_of(entity, op)
    return ent


def importable_entities() -> list:
    """The entities this user may import into, by their plural label."""
    model, lang = runtime().model, current_lang()
    return sorted((e for e in model.entities.values() if g.access.can(e.name, "import") and importable(e)),
                  key=lambda e: e.plural.get(lang))


def writable_fields(ent) -> dict:
    """The fields a column may fill for this user: importable, neither hidden nor read-only for the role."""
    fields = importable(ent)
    refused = {e.field for e in g.access.write_errors(ent.name, dict.fromkeys(fields))}
    return {n: f for n, f in fields.items() if n not in refused}


# -- 0. the Import button of a list -------------------------------------------------------------------
def begin(entity: str):
    """The list's "Import" button (a post from the list's form): on to the upload step."""
    rights(entity)
    return redirect(url_for("imports_ui.new", entity=entity))


# -- 1. upload -------------------------------------------------------------------------------------------
def upload():
    entity = request.values.get("entity") or ""
    if not entity or entity not in runtime().model.entities:
        return render_template("imports/choose.html", entities=importable_entities())
    ent = rights(entity)
    form = request.form if request.method == "POST" else {}
    if request.method == "GET":
        return _upload_page(ent, form, None)
    try:
        options = _options(ent, form)
        rights(entity, options["mode"])
        file = request.files.get("file")
        if file is None or not file.filename:
            raise ImportError_(_("Choose a CSV or XLSX file."), field="file")
        draft = ui_drafts.create(service(), file, user_id=g.access.user_id, entity=ent.name, options=options)
    except ImportError_ as exc:
        return _upload_page(ent, form, exc), exc.status
    try:
        _open(draft)
    except ImportFileError as exc:
        ui_drafts.discard(service(), draft)
        return _upload_page(ent, form, ImportError_(str(exc), field="file")), 422
    return redirect(url_for("imports_ui.draft", token=draft.token))


def _upload_page(ent, form, error):
    keys = [(n, f.label.get(current_lang())) for n, f in ent.fields.items() if f.unique and f.stored]
    locale = form.get("locale") or ("zh-CN" if current_lang() == "zh" else "en-US")
    return render_template("imports/upload.html", ent=ent, form=form, error=error, keys=keys, modes=MODES,
                           unresolved=UNRESOLVED, duplicates=DUPLICATES, encodings=ENCODINGS, delimiters=DELIMITERS, locales=LOCALES,
                           locale=locale, admin=g.access.admin, max_mb=_max_mb())


def _max_mb() -> int:
    from .service import MAX_MB

    return MAX_MB


def _options(ent, form) -> dict:
    """The upload form's options, checked (``ImportError_`` naming the option)."""
    mode = form.get("mode") or "create"
    if mode not in MODES:
        raise ImportError_(_("Choose create, update or upsert."), field="mode")
    key = form.get("key") or None
    if key is not None and (key not in ent.fields or not ent.fields[key].unique):
        raise ImportError_(_("The key must be a unique field."), field="key")
    if mode == "upsert" and key is None:
        raise ImportError_(_("An upsert needs a key: a unique field that finds the existing record."), field="key")
    unresolved = form.get("unresolved") or "error"
    if unresolved not in UNRESOLVED:
        raise ImportError_(_("Choose what happens to a lookup that finds nothing."), field="unresolved")
    duplicates = form.get("duplicates") or "error"
    if duplicates not in DUPLICATES:
        raise ImportError_(_("Choose what happens to a row that looks like a duplicate."), field="duplicates")
    skip = form.get("skip_automations") == "1"
    if skip and not g.access.admin:
        raise ImportError_(_("Only an administrator may import without automations."), status=403,
                           field="skip_automations")
    return {"mode": mode, "key": key, "unresolved": unresolved, "duplicates": duplicates, "automations": not skip,
            **_reading(form)}


def _reading(form) -> dict:
    """How to read the file: encoding, delimiter and sheet (None: detected), locale of its values."""
    encoding = form.get("encoding") or None
    if encoding is not None and encoding not in ENCODINGS:
        raise ImportError_(_("Choose an encoding from the list."), field="encoding")
    delimiter = form.get("delimiter") or None
    if delimiter is not None and delimiter not in DELIMITERS:
        raise ImportError_(_("Choose a delimiter from the list."), field="delimiter")
    locale = form.get("locale") or None
    if locale is not None and locale not in LOCALES:
        raise ImportError_(_("Choose a locale from the list."), field="locale")
    return {"encoding": encoding, "delimiter": DELIMITERS.get(delimiter) if delimiter else None,
            "sheet": (form.get("sheet") or "").strip() or None, "locale": locale}


def _open(draft):
    o = draft.options
    return service().open(draft.path, Options(encoding=o.get("encoding"), delimiter=o.get("delimiter"),
                                              sheet=o.get("sheet")), draft.file_name)


# -- 2. mapping, then a dry run or the import -------------------------------------------------------------
def _draft(token: str):
    draft = ui_drafts.load(service(), token, g.access.user_id)
    if draft is None:
        abort(404)
    return draft, rights(draft.entity, draft.options.get("mode") or "create")


def draft_page(token: str):
    draft, ent = _draft(token)
    if request.method == "GET":
        return _mapping_page(draft, ent, request.args.get("mapping") or None, None)
    action = request.form.get("action") or ""
    try:
        if action == "reread":   # keeps the mapping as edited when the file can be read as it was
            try:
                draft.mapping = _posted_mapping(draft, ent)
            except ImportFileError:
                pass
            draft.options.update(_reading(request.form))
            ui_drafts.save(service(), draft)
            return redirect(url_for("imports_ui.draft", token=token))
        draft.mapping = _posted_mapping(draft, ent)
        ui_drafts.save(service(), draft)
        if action == "save":
            return _save_mapping(draft, ent)
        if action not in ("dry_run", "run"):
            raise ImportError_(_("Choose what to do: dry run, import or save the mapping."), field="action")
        job_id = service().start(draft.path, ent.name, Options(**{**draft.options, "mapping": draft.mapping}),
                                 user_id=g.access.user_id, access=g.access, dry_run=action == "dry_run",
                                 name=draft.file_name)
    except (ImportError_, ImportFileError) as exc:
        error = exc if isinstance(exc, ImportError_) else ImportError_(str(exc), field="file")
        return _mapping_page(draft, ent, None, error), error.status
    return redirect(url_for("imports_ui.job", job_id=job_id, draft=token))


def _posted_mapping(draft, ent) -> dict:
    """The mapping of the posted form: ``map-<i>`` per column, ``cf-<k>`` / ``cv-<k>`` per constant
    (converted like a cell of the file, so ``正式客户`` is the option ``customer``)."""
    headers = _open(draft).headers
    allowed = {*writable_fields(ent), "id", "owner_id"}
    columns = {}
    for i, header in enumerate(headers):
        if not header:
            continue
        name = request.form.get(f"map-{i}") or None
        if name is not None and name not in allowed:
            raise ImportError_(_("Column %(column)s: choose a field from the list.") % {"column": header},
                               field=header)
        columns[header] = name
    constants = {}
    fields = constant_fields(ent)
    converter = Converter(dict(ent.fields), draft.options.get("locale"))
    for k in range(int(request.form.get("constants") or 0)):
        name, raw = request.form.get(f"cf-{k}") or "", (request.form.get(f"cv-{k}") or "").strip()
        if not name or not raw:
            continue
        if name not in fields:
            raise ImportError_(_("A constant needs a field from the list."), field=name)
        if name in fields and (name == "owner_id" or fields[name].target):
            constants[name] = raw   # a record named as a cell names it: resolved like a mapped lookup
            continue
        try:
            value = converter.value(name, name, raw, 0)
        except CellError as exc:
            raise ImportError_(f"{fields[name].label.get(current_lang())}: {exc}", field=name) from None
        constants[name] = jsonable(fields[name], value)
    return {"columns": columns, "constants": constants}


def constant_fields(ent) -> dict:
    """Fields a constant may fill: every writable one and the owner. A lookup's (and the owner's)
    constant names its record as a cell would (title, unique field, ``#id``; a user by name or
    e-mail) and is resolved like a mapped lookup, with the import's choice for one that finds nothing."""
    return {**writable_fields(ent), "owner_id": system_field("owner_id")}


def _save_mapping(draft, ent):
    from .store import save_mapping

    name = (request.form.get("mapping_name") or "").strip()
    if not name:
        raise ImportError_(_("Give the mapping a name."), field="mapping_name")
    save_mapping(service(), ent.name, name, draft.mapping, user_id=g.access.user_id, access=g.access)
    return with_message(url_for("imports_ui.draft", token=draft.token, mapping=name),
                        _("Mapping %(name)s saved.") % {"name": name}, "success")


def _mapping_page(draft, ent, saved: str | None, error):
    from .store import load_mapping

    try:
        table = _open(draft)
    except ImportFileError as exc:   # read with the wrong encoding, sheet...: the page says so, to choose again
        o = draft.options
        table = Table(draft.file_name, "xlsx" if draft.path.endswith((".xlsx", ".xlsm")) else "csv", [],
                      encoding=o.get("encoding"), delimiter=o.get("delimiter"), sheet=o.get("sheet"), _open=lambda: iter(()))
        error = error or ImportError_(str(exc), field="file")
    given = draft.mapping
    if saved:
        try:
            given = load_mapping(service(), ent.name, saved)
        except ImportError_ as exc:
            error = error or exc
    try:
        mapping = complete(ent, table.headers, Mapping.from_json(given) if given else None)
    except MappingError:
        mapping = complete(ent, table.headers, None)
    try:
        samples = _samples(table)
    except ImportFileError as exc:   # e.g. a row not readable in the encoding chosen
        samples, error = [[] for _h in table.headers], error or ImportError_(str(exc), field="file")
    lang = current_lang()
    fields = [(n, f.label.get(lang)) for n, f in writable_fields(ent).items()]
    fields += [("owner_id", _("Owner")), ("id", _("Record ID"))]
    mapped = {v for v in mapping.columns.values() if v}
    missing = [f.label.get(lang) for n, f in importable(ent).items()
               if f.required and n not in mapped and n not in mapping.constants and f.default is None]
    consts = constant_fields(ent)
    constants = [(n, "" if v is None else str(v)) for n, v in mapping.constants.items()]
    constants += [("", "")] * CONSTANT_ROWS
    return render_template(
        "imports/mapping.html", draft=draft, ent=ent, table=table, samples=samples, mapping=mapping,
        fields=fields, constant_fields=[(n, _("Owner") if n == "owner_id" else f.label.get(lang)) for n, f in consts.items()],
        constants=constants,
        missing=missing, saved_names=_saved_names(ent.name), saved=saved, error=error, encodings=ENCODINGS,
        delimiters=DELIMITERS, delimiter_name={v: k for k, v in DELIMITERS.items()}, locales=LOCALES)


def _samples(table) -> list[list[str]]:
    """The first ``SAMPLES`` non-empty values of each column (from the first 50 rows at most)."""
    samples: list[list[str]] = [[] for _h in table.headers]
    for n, (_row, values) in enumerate(table.rows()):
        for i, value in enumerate(values):
            if value not in (None, "") and len(samples[i]) < SAMPLES:
                samples[i].append(str(value)[:80])
        if n >= 50 or all(len(s) >= SAMPLES for s in samples):
            break
    return samples


def _saved_names(entity: str) -> list[str]:
    m = service().mappings
    with service().db.read() as conn:
        return list(conn.execute(sa.select(m.c.name).where(m.c.entity == entity).order_by(m.c.name)).scalars())
