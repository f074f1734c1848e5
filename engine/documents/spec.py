"""The metadata of documents: the ``document`` kind compiled into frozen ``DocumentSpec`` objects with
their parsed template, and every problem of a declaration (an unknown entity, lines that do not look
up the record, a sort or filename field that does not exist, a template that is missing or does not
parse: the last at the template file's own line).

```yaml
document: quote_pdf
of: quote
label: {en: Quote (PDF), zh: 报价单 (PDF)}
template: documents/quote.html.j2      # beside the YAML, relative to the layer's folder
lines: quote_line.quote                 # the records listed, and the lookup that ties them here
lines_sort: position
page: A4
orientation: portrait
filename: quote_number
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from engine.metadata.declared import DocProblem as Problem
from engine.metadata.errors import Location
from engine.metadata.model import AppModel, Label


@dataclass(frozen=True)
class DocumentSpec:
    name: str
    label: Label
    entity: str
    template_file: Path
    template: Any                  # jinja2.Template
    lines: tuple[str, str] | None = None    # (child entity, its lookup to the record)
    lines_sort: str | None = None
    page: str = "A4"
    orientation: str = "portrait"
    filename: str | None = None

    def file_name(self, record: dict) -> str:
        """The download's name: the ``filename`` field's value (else the id), safe for a header."""
        stem = str(record.get(self.filename) or "") if self.filename else ""
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or f"{self.entity}-{record.get('id')}"
        return f"{self.name}-{stem}.pdf"


def environment() -> SandboxedEnvironment:
    """Templates run sandboxed (no attribute access to internals), escape every value (HTML), and an
    undefined name is an error (a typo is not a blank)."""
    return SandboxedEnvironment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def compile_documents(model: AppModel, documents: list | None = None
                      ) -> tuple[dict[str, DocumentSpec], list[Problem], list[tuple[Location, str]]]:
    """Every ``document`` of the model as a ``DocumentSpec``; the problems of those that do not
    compile (``DocProblem``s of their YAML, and (location, message) of their templates). With the
    loader's ``documents`` (a check), each template is read from its own layer's folder; without
    (at startup), from the highest layer that has the file."""
    specs: dict[str, DocumentSpec] = {}
    problems: list[Problem] = []
    template_problems: list[tuple[Location, str]] = []
    layers = [(name, Path(path)) for name, path in model.layers]
    datas = [d.data for d in documents] if documents is not None else list(model.documents.get("document", ()))
    env = environment()
    for i, doc in enumerate(datas):
        found: list[Problem] = []

        def problem(path, message, i=i, found=found):
            found.append(Problem(i, tuple(path), message))

        layer = documents[i].layer if documents is not None else None
        spec = _compile(model, doc, layers, layer, env, problem, template_problems)
        if doc["document"] in specs:
            problem(("document",), f"document {doc['document']!r} is declared twice")
        problems += found
        if not found and spec is not None:
            specs[spec.name] = spec
    return specs, problems, template_problems


def _compile(model, doc: dict, layers, layer, env, problem, template_problems) -> DocumentSpec | None:
    ent = model.entities.get(doc["of"])
    if ent is None:
        problem(("of",), f"there is no entity {doc['of']!r}")
        return None
    lines = None
    if doc.get("lines"):
        child_name, _dot, link = doc["lines"].partition(".")
        child = model.entities.get(child_name)
        field = child.fields.get(link) if child is not None else None
        if field is None or field.type_name != "lookup" or field.target != ent.name:
            problem(("lines",), f"lines {doc['lines']!r} must name entity.field where the field looks up {ent.name}")
        else:
            lines = (child_name, link)
    sort = doc.get("lines_sort")
    if sort is not None:
        if lines is None:
            problem(("lines_sort",), "lines_sort needs lines")
        else:
            child = model.entities[lines[0]]
            for part in (p.strip().lstrip("-") for p in sort.split(",")):
                if part not in child.fields and part not in ("id", "created_at", "updated_at"):
                    problem(("lines_sort",), f"lines_sort: {part!r} is no field of {lines[0]}")
    if doc.get("filename") is not None and doc["filename"] not in ent.fields:
        problem(("filename",), f"filename: {doc['filename']!r} is no field of {ent.name}")
    file = _template_file(doc["template"], layers, layer)
    if file is None:
        problem(("template",), f"template {doc['template']!r}: no such file in the folder of "
                               f"{'layer ' + layer if layer else 'any layer'}")
        return None
    try:
        template = env.from_string(file.read_text(encoding="utf-8"))
    except TemplateSyntaxError as exc:
        template_problems.append((Location(layer or "", _shown(file), exc.lineno or 0),
                                  f"document {doc['document']}: template syntax error: {exc.message}"))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problem(("template",), f"template {doc['template']!r} cannot be read: {exc}")
        return None
    return DocumentSpec(doc["document"], Label.of(doc.get("label"), doc["document"]), ent.name, file, template,
                        lines, sort, doc.get("page", "A4"), doc.get("orientation", "portrait"), doc.get("filename"))


def _template_file(relative: str, layers: list[tuple[str, Path]], layer: str | None) -> Path | None:
    """The template's file: in the folder of ``layer``, else of the highest layer that has it; never
    outside the layer's folder (``..`` is refused)."""
    for name, folder in reversed(layers):
        if layer is not None and name != layer:
            continue
        path = (folder / relative).resolve()
        if path.is_relative_to(folder.resolve()) and path.is_file():
            return path
    return None


def _shown(file: Path) -> str:
    try:
        return str(file.relative_to(Path.cwd()))
    except ValueError:
        return str(file)
