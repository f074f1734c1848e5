"""Reading an import file row by row, never whole: CSV (any delimiter, the encodings people send)
and XLSX (openpyxl in read-only mode, cells typed).

``open_table(path, ...)`` checks the file (size, not empty, not binary, headers given once) and
returns a ``Table``: its ``headers`` and ``rows(skip=n)``, an iterator of ``(row_number, values)``
where ``row_number`` is the row as a spreadsheet shows it (the header is row 1). Every problem is an
``ImportFileError`` naming the file and, where there is one, the row.

Encodings: a UTF-8 byte order mark wins; else the first bytes are tried as UTF-8; else
charset-normalizer guesses from them (GB2312/GBK are read as their superset GB18030, and a guess it
cannot stand behind falls back to Latin-1, which decodes any byte). Both can be overridden.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Bytes read to detect the encoding and sniff the delimiter.
SAMPLE = 64 * 1024
DELIMITERS = (",", ";", "\t", "|")
#: What charset-normalizer calls the Chinese encodings: all read as GB18030, their superset.
CHINESE = {"gb2312", "gbk", "gb18030", "hz", "cp936"}


class ImportFileError(ValueError):
    """A file that cannot be imported as it is; ``str()`` names the file and the row."""

    def __init__(self, file: str, message: str, row: int | None = None, code: str = "file"):
        self.file, self.row, self.message, self.code = file, row, message, code
        where = f"{file}, row {row}" if row is not None else file
        super().__init__(f"{where}: {message}")


@dataclass
class Table:
    """An opened import file: its headers and a way to read its data rows again from any point."""

    name: str
    kind: str                      # csv | xlsx
    headers: list[str]
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    _open: Any = field(default=None, repr=False)

    def rows(self, skip: int = 0) -> Iterator[tuple[int, list[Any]]]:
        """``(row_number, values)`` of each non-empty data row after the first ``skip`` data rows."""
        seen = 0
        for number, values in self._open():
            if not any(v not in (None, "") for v in values):
                continue
            seen += 1
            if seen <= skip:
                continue
            width = len(self.headers)
            if len(values) > width and any(v not in (None, "") for v in values[width:]):
                raise ImportFileError(self.name, f"{len(values)} values but only {width} headers", number, "shape")
            yield number, (list(values) + [None] * width)[:width]


def open_table(path: str | Path, *, name: str | None = None, encoding: str | None = None,
               delimiter: str | None = None, sheet: str | None = None, max_bytes: int | None = None) -> Table:
    """Check and open ``path`` (CSV, or XLSX by its extension or its zip signature)."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise ImportFileError(name, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise ImportFileError(name, "the file is empty", code="empty")
    if max_bytes is not None and size > max_bytes:
        raise ImportFileError(name, f"the file has {size:,} bytes, more than the {max_bytes:,} allowed "
                                    "(CRM_IMPORT_MAX_MB)", code="too_large")
    with path.open("rb") as f:
        head = f.read(SAMPLE)
    if path.suffix.lower() in (".xlsx", ".xlsm") or head[:4] == b"PK\x03\x04":
        table = _xlsx(path, name, sheet)
    else:
        table = _csv(path, name, head, encoding, delimiter)
    _check_headers(table)
    if next(table.rows(), None) is None:
        raise ImportFileError(name, "the file has headers but no data rows", code="no_rows")
    return table


def _check_headers(table: Table) -> None:
    if not any(table.headers):
        raise ImportFileError(table.name, "the first row (the headers) is empty", 1, "headers")
    seen: dict[str, int] = {}
    for i, header in enumerate(table.headers):
        if not header:
            continue
        key = header.strip().casefold()
        if key in seen:
            raise ImportFileError(table.name, f"the header {header!r} is given twice (columns {seen[key] + 1} "
                                              f"and {i + 1})", 1, "headers")
        seen[key] = i


# -- CSV ------------------------------------------------------------------------------------------
def detect_encoding(name: str, head: bytes) -> str:
    """The encoding of a CSV file from its first bytes (see the module's docstring)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if b"\x00" in head:   # binary data (or UTF-16: asked to be saved as UTF-8 CSV)
        raise ImportFileError(name, "this is not a text file (it holds binary data): save it as CSV or XLSX",
                              code="binary")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    if _looks_chinese(head):
        return "gb18030"
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        return "latin-1"
    guess = best.encoding.lower().replace("-", "").replace("_", "")
    if guess in CHINESE:
        return "gb18030"
    return "latin-1" if best.chaos > 0.3 else best.encoding


def _looks_chinese(head: bytes) -> bool:
    """Whether ``head`` reads as GB18030 text whose non-ASCII characters are nearly all in GB2312 (the
    common characters of Chinese files): short files give charset-normalizer too little to go on,
    and Latin-1 text fails this (its accented letters are followed by ASCII bytes, not GB2312 ones)."""
    try:
        text = codecs.getincrementaldecoder("gb18030")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    wide = [c for c in text if ord(c) > 127]
    if not wide:
        return False
    common = 0
    for c in wide:
        try:
            c.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return common >= 0.9 * len(wide)


def _csv(path: Path, name: str, head: bytes, encoding: str | None, delimiter: str | None) -> Table:
    if encoding:
        try:
            known = codecs.lookup(encoding)._is_text_encoding
        except (LookupError, TypeError, ValueError):
            known = False
        if not known or "16" in encoding or "32" in encoding:
            raise ImportFileError(name, f"unknown encoding {encoding!r} (e.g. utf-8, gb18030, latin-1)",
                                  code="encoding")
    else:
        encoding = detect_encoding(name, head)
    text = head.decode(encoding, errors="replace")
    if delimiter is None:
        delimiter = sniff_delimiter(text)
    elif len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum():
        raise ImportFileError(name, f"the delimiter must be one character other than a letter, a digit, a "
                                    f"quote or a line break, not {delimiter!r}", code="delimiter")

    def read() -> Iterator[tuple[int, list[str]]]:
        with path.open("rb") as f:
            lines = _Lines(f, encoding)
            reader = csv.reader(lines, delimiter=delimiter)
            try:
                first = True
                for values in reader:
                    if first:
                        first = False
                        continue
                    yield lines.number, values
            except UnicodeDecodeError as exc:
                raise ImportFileError(name, f"not readable as {encoding} ({exc.reason}): give the file's "
                                            "encoding", lines.number, "encoding") from None
            except csv.Error as exc:
                raise ImportFileError(name, str(exc), lines.number, "csv") from None

    try:
        with path.open("rb") as f:
            headers = next(csv.reader(_Lines(f, encoding), delimiter=delimiter), [])
    except UnicodeDecodeError:
        raise ImportFileError(name, f"the headers are not readable as {encoding}: give the file's encoding",
                              1, "encoding") from None
    headers = [h.strip() for h in headers]
    while headers and not headers[-1]:
        headers.pop()
    return Table(name, "csv", headers, encoding=encoding, delimiter=delimiter, _open=read)


class _Lines:
    """The decoded lines of a binary file, counting them (so an error names the file's own line).
    Lines split on the byte ``\\n``, which every accepted encoding keeps as itself (UTF-16 is not one)."""

    def __init__(self, f, encoding: str):
        self.f, self.number = f, 0
        self.decoder = codecs.getincrementaldecoder(encoding)()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.f.readline()
        if not raw:
            tail = self.decoder.decode(b"", final=True)
            if tail:
                return tail
            raise StopIteration
        self.number += 1
        return self.decoder.decode(raw)


def sniff_delimiter(text: str) -> str:
    """The delimiter of the header line: the candidate found most often outside quotes in it that
    also splits the next lines the same way (a comma by default)."""
    lines = [line for line in io.StringIO(text).read().splitlines()[:20] if line.strip()]
    if not lines:
        return ","
    best, best_score = ",", 0
    for candidate in DELIMITERS:
        counts = [len(next(csv.reader([line], delimiter=candidate), [])) for line in lines[:-1] or lines]
        width = counts[0]
        if width < 2:
            continue
        score = width * sum(1 for c in counts if c == width)
        if score > best_score:
            best, best_score = candidate, score
    return best


# -- XLSX -----------------------------------------------------------------------------------------
def _xlsx(path: Path, name: str, sheet: str | None) -> Table:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ImportFileError(name, f"not a readable XLSX workbook ({exc})", code="binary") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise ImportFileError(name, f"no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})", code="sheet")
        chosen = sheet or book.sheetnames[0]
        first = next(book[chosen].iter_rows(max_row=1, values_only=True), None)
    finally:
        book.close()
    if first is None:
        raise ImportFileError(name, "the file is empty", code="empty")
    headers = ["" if v is None else str(v).strip() for v in first]
    while headers and not headers[-1]:
        headers.pop()

    def read() -> Iterator[tuple[int, list[Any]]]:
        book = load_workbook(path, read_only=True, data_only=True)
        try:
            for number, values in enumerate(book[chosen].iter_rows(min_row=2, values_only=True), start=2):
                yield number, list(values)
        finally:
            book.close()

    return Table(name, "xlsx", headers, sheet=chosen, _open=read)
