"""The import wizard's drafts: an uploaded file waiting for its mapping, between the wizard's steps.

A draft is the uploaded file plus a JSON sidecar (who uploaded it, into which entity, the options
chosen so far, the mapping last edited) under ``<var dir>/imports/drafts/``, named by a random token.
Only the user who uploaded it may open it (``load`` returns None to anyone else, as for a draft
that does not exist). Drafts older than ``KEEP`` are deleted when a new one is made. The job that
a dry run or an import starts keeps its own copy of the file (``ImportService.start``), so a draft
may go without harming its jobs.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Seconds a draft is kept (a day: time to fix a mapping, not a store of files).
KEEP = 24 * 3600
TOKEN = re.compile(r"^[0-9a-f]{32}$")
EXTENSIONS = (".csv", ".txt", ".tsv", ".xlsx", ".xlsm")


@dataclass
class Draft:
    token: str
    user_id: int
    entity: str
    file_name: str
    path: str
    options: dict = field(default_factory=dict)    # mode, key, encoding, delimiter, sheet, locale, unresolved, automations
    mapping: dict | None = None                     # {"columns": {...}, "constants": {...}} last posted
    created: float = 0.0


def folder_of(service) -> Path:
    return Path(service.folder) / "drafts"


def create(service, upload, *, user_id: int, entity: str, options: dict) -> Draft:
    """Keep ``upload`` (a werkzeug ``FileStorage``) as a new draft of ``user_id``."""
    folder = folder_of(service)
    folder.mkdir(parents=True, exist_ok=True)
    _sweep(folder)
    name = Path(upload.filename or "import.csv").name[:200]
    suffix = Path(name).suffix.lower()
    token = secrets.token_hex(16)
    path = folder / f"{token}{suffix if suffix in EXTENSIONS else '.csv'}"
    upload.save(str(path))
    draft = Draft(token, user_id, entity, name, str(path), dict(options), None, time.time())
    save(service, draft)
    return draft


def load(service, token: str, user_id: int) -> Draft | None:
    """The draft ``token`` of ``user_id``; None when there is none (or it is someone else's)."""
    if not TOKEN.match(token or ""):
        return None
    sidecar = folder_of(service) / f"{token}.json"
    try:
        data = json.loads(sidecar.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    draft = Draft(**data)
    if draft.user_id != user_id or not Path(draft.path).is_file():
        return None
    return draft


def save(service, draft: Draft) -> None:
    sidecar = folder_of(service) / f"{draft.token}.json"
    sidecar.write_text(json.dumps(asdict(draft), ensure_ascii=False), "utf-8")


def discard(service, draft: Draft) -> None:
    Path(draft.path).unlink(missing_ok=True)
    (folder_of(service) / f"{draft.token}.json").unlink(missing_ok=True)


def _sweep(folder: Path) -> None:
    """Delete drafts (files and sidecars) older than ``KEEP``."""
    cutoff = time.time() - KEEP
    for path in folder.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
        except OSError:
            continue
