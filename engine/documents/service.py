"""Rendering a document: the record and its lines read with the caller's rights (a field the user may
not read is blank), shown as the UI shows them (amounts in the record's currency), given to the
template with the company and the language, and drawn to PDF."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from jinja2 import TemplateError

from engine.storage.query import Filter, ListQuery, check_sort
from engine.storage.records import Context
from engine.ui.present import column, display, lookup_titles

from .pdf import FontMissing, find_font, html_to_pdf
from .spec import DocumentSpec

MAX_LINES = 2_000
PAGE = 500


class DocumentError(RuntimeError):
    """A document that cannot be made: ``status`` 404 (no such document for the entity) or 422 (its
    template failed: an undefined name, a filter error), with a message naming the document."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Rendered:
    filename: str
    content: bytes
    content_type: str = "application/pdf"


class DocumentService:
    def __init__(self, runtime, specs: dict[str, DocumentSpec]):
        self.runtime = runtime
        self.specs = specs

    def of(self, entity: str) -> list[DocumentSpec]:
        return [s for s in self.specs.values() if s.entity == entity]

    def spec(self, entity: str, name: str) -> DocumentSpec:
        spec = self.specs.get(name)
        if spec is None or spec.entity != entity:
            known = ", ".join(s.name for s in self.of(entity)) or "none"
            raise DocumentError(404, f"{entity} has no document {name!r} (documents: {known})")
        return spec

    def render(self, entity: str, record_id: int, name: str, *, context, lang: str = "en") -> Rendered:
        """The PDF of document ``name`` for a record, read with ``context`` (the caller's rights: a
        record they may not read is a not-found error of the record service)."""
        spec = self.spec(entity, name)
        records = self.runtime.records
        record = records.get(entity, record_id, context=context)
        html = self.html(spec, record, context=context, lang=lang)
        settings = self.runtime.settings
        try:
            font = find_font(settings.pdf_font)
        except FontMissing as exc:
            raise DocumentError(422, f"document {spec.name}: {exc}") from None
        try:
            content = html_to_pdf(html, font=font, page=spec.page, orientation=spec.orientation,
                                  title=spec.label.get(lang), author=settings.company_name)
        except (ValueError, RuntimeError, KeyError) as exc:   # fpdf2's errors on HTML it cannot draw
            raise DocumentError(422, f"document {spec.name}: the template's HTML cannot be drawn as PDF: {exc}") from None
        return Rendered(spec.file_name(record), content)

    def html(self, spec: DocumentSpec, record: dict, *, context, lang: str) -> str:
        model = self.runtime.model
        ent = model.entity(spec.entity)
        access = getattr(context, "access", None)
        shown, raw = self._shown(ent, [record], context, lang, access)
        lines, lines_raw, line_labels = [], [], {}
        if spec.lines is not None:
            child = model.entity(spec.lines[0])
            line_labels = {n: f.label.get(lang) for n, f in child.fields.items()}
            if access is None or access.can(child.name, "read"):   # else the document lists no lines
                rows = self._lines(spec, child, record["id"], context)
                lines, lines_raw = self._shown(child, rows, context, lang, access)
        settings = self.runtime.settings
        values = {
            "record": shown[0], "raw": raw[0], "lines": lines, "lines_raw": lines_raw,
            "labels": {n: f.label.get(lang) for n, f in ent.fields.items()}, "line_labels": line_labels,
            "company": {"name": settings.company_name, "address": settings.company_address},
            "lang": lang, "document": {"name": spec.name, "label": spec.label.get(lang)},
            "entity": {"name": ent.name, "label": ent.label.get(lang)}, "today": date.today().isoformat(),
            "tr": lambda **texts: texts.get(lang, texts.get("en", "")),
        }
        try:
            return spec.template.render(values)
        except TemplateError as exc:
            raise DocumentError(422, f"document {spec.name}: template {spec.template_file.name} "
                                     f"{_line_of(exc)}failed: {exc}") from None

    def _lines(self, spec: DocumentSpec, child, record_id: int, context) -> list[dict]:
        records = self.runtime.records
        q = ListQuery(child.name, limit=PAGE, filters=[Filter(spec.lines[1], "eq", record_id)])
        q.sort = check_sort(child, spec.lines_sort or "id")
        rows: list[dict] = []
        while True:
            page = records.list(q, context=context)
            rows += page.records
            if page.next_cursor is None or len(rows) >= MAX_LINES:
                return rows[:MAX_LINES]
            q.cursor = page.next_cursor

    def _shown(self, ent, rows: list[dict], context, lang: str, access) -> tuple[list[dict], list[dict]]:
        """Each row as display texts and as raw values, by field name; hidden fields blank in both."""
        hidden = access.hidden(ent.name) if access is not None and not getattr(access, "admin", False) else frozenset()
        cols = [c for n in ent.fields if n not in hidden and (c := column(ent, n)) is not None]
        titles = lookup_titles(self.runtime.records, ent, cols, rows, context)
        shown, raw = [], []
        for r in rows:
            text: dict[str, Any] = {n: "" for n in ent.fields}
            value: dict[str, Any] = {n: None for n in ent.fields}
            text.update({c.name: display(c, r.get(c.name), lang, titles, r) for c in cols})
            value.update({c.name: r.get(c.name) for c in cols})
            text["id"] = value["id"] = r.get("id")
            shown.append(text)
            raw.append(value)
        return shown, raw


def _line_of(exc: TemplateError) -> str:
    line = getattr(exc, "lineno", None)
    return f"line {line} " if line else ""


def render_attachment(service: DocumentService, entity, record: dict, name: str, lang: str):
    """``(filename, content type, bytes)`` of document ``name`` for an e-mail of an automation (read
    with the system's rights, as the automation runs), or None when ``name`` is no document of the
    entity. Rendered in a request context of its own, in ``lang``, as the record page shows values."""
    if name not in service.specs or service.specs[name].entity != entity.name:
        return None
    from flask import g

    with _app(service).test_request_context():
        g.lang = lang if lang in ("en", "zh") else "en"
        rendered = service.render(entity.name, record["id"], name, context=Context(), lang=g.lang)
    return rendered.filename, rendered.content_type, rendered.content


def _app(service: DocumentService):
    app = getattr(service, "_app", None)
    if app is None:
        from flask import Flask

        from engine.ui.i18n import install_i18n

        app = Flask(__name__)
        install_i18n(app)
        app.extensions["crm"] = service.runtime
        service._app = app
    return app
