"""Errors found in metadata: each names the file, the line and the path inside the document."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where an element of metadata was written: layer, file, line and path inside the document."""

    layer: str
    file: str
    line: int
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where} [{self.path}]" if self.path else where


@dataclass(frozen=True)
class Problem:
    """One error in the metadata."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class MetadataError(Exception):
    """Raised when metadata does not load; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.location.file, p.location.line, p.location.path))
        super().__init__("\n".join(str(p) for p in self.problems))
