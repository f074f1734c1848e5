"""What the loader knows while it merges layers: each element's properties and where each was written.

``Declared`` is an entity or field as the layers declare it (before it is built into the model);
``Problems`` collects what is wrong, each with its ``Location``. The loader fills both; the checks
it runs (its own and those plugins give it) read them to report at the right file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Location, Problem
from .model import Change
from .source import Document


@dataclass
class Declared:
    """An element while layers are merged: its properties and where each one was written."""

    name: str
    origin: Location
    props: dict[str, Any] = field(default_factory=dict)
    where: dict[str, tuple[Document, tuple]] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    fields: dict[str, "Declared"] = field(default_factory=dict)

    def loc(self, *path: Any) -> Location:
        """Location of ``path`` (starting with a property name) inside this element."""
        doc, base = self.where.get(str(path[0]), (None, ())) if path else (None, ())
        if doc is None:
            return self.origin
        full = (*base, *path[1:])
        return Location(doc.layer, doc.file, doc.line(full), "/".join(str(p) for p in full))

    def text_loc(self, *path: Any) -> Location:
        """Like ``loc``, at the first line of the text (a ``|`` block starts below its key)."""
        loc = self.loc(*path)
        doc, base = self.where.get(str(path[0]), (None, ())) if path else (None, ())
        if doc is None:
            return loc
        return Location(loc.layer, loc.file, doc.text_line((*base, *path[1:])), loc.path)


class Problems(list):
    """Every problem found so far; ``add(location, message)``."""

    def add(self, location: Location, message: str) -> None:
        self.append(Problem(location, message))


def doc_location(doc: Document, path: tuple) -> Location:
    """Location of ``path`` inside a document of any kind."""
    return Location(doc.layer, doc.file, doc.line(path), "/".join(map(str, path)))


@dataclass(frozen=True)
class DocProblem:
    """A problem a capability's compiler found in document number ``doc`` of its kind, at ``path``."""

    doc: int
    path: tuple
    message: str


def report_documents(kind: str, documents: list, problems, found) -> None:
    """Each ``DocProblem`` of ``found`` at the file:line of its document, as ``<kind> <name>: message``
    (the check of a document kind whose compiler collects ``DocProblem``s)."""
    for p in found:
        doc = documents[p.doc]
        problems.add(doc_location(doc, p.path), f"{kind} {doc.data[kind]}: {p.message}")


def compile_documents(kind: str, model, compile_one) -> tuple[dict, list[DocProblem]]:
    """Every document of ``kind`` compiled by ``compile_one(doc, problem)`` (``problem(path, message)``
    reports at a path inside the document), by its name; a document with problems is left out, and a
    name declared again is a problem of the later one (the compilers of pools and approvals)."""
    compiled: dict = {}
    problems: list[DocProblem] = []
    for i, doc in enumerate(model.documents.get(kind, ())):
        found: list[DocProblem] = []

        def problem(path, message, i=i, found=found):
            found.append(DocProblem(i, tuple(path), message))

        item = compile_one(doc, problem)
        if doc[kind] in compiled:
            problem((kind,), f"{kind} {doc[kind]!r} is declared twice")
        problems += found
        if not found and item is not None:
            compiled[doc[kind]] = item
    return compiled, problems
