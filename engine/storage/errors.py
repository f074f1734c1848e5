"""Errors of the record service: the one error family every caller (API, UI, import, automation) maps."""

from __future__ import annotations

from engine.messages import Msg
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    field: str | None
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class RecordError(Exception):
    """Base of the record service's errors."""


class ValidationFailed(RecordError):
    def __init__(self, errors: list[FieldError], entity: str = ""):
        self.errors = list(errors)
        self.entity = entity
        super().__init__("; ".join(str(e) for e in self.errors))


class DuplicateFound(ValidationFailed):
    """The record looks like records that exist (a duplicate rule of the entity matched).

    ``candidates``: those the writer may read, as dicts (entity, id, title, rule, score, action);
    ``hidden``: how many others matched; ``action``: ``block`` (refused whatever the writer says) or
    ``warn`` (``overridable``: the same write with ``Context(duplicates="allow")`` goes through, audited).
    A ``ValidationFailed``, so a bulk write reports it on the row like any field error."""

    def __init__(self, entity: str, candidates: list[dict], hidden: int, action: str, fields: tuple[str, ...] = ()):
        self.candidates, self.hidden, self.action = list(candidates), hidden, action
        self.overridable = action == "warn"
        names = [f"{c['title']} (#{c['id']})" if c.get("id") is not None else f"row {c.get('row')}"
                 for c in self.candidates[:3]]
        if hidden:
            names.append(f"{hidden} record{'s' if hidden != 1 else ''} you may not see")
        message = f"looks like a duplicate of {', '.join(names)}"
        if self.overridable:
            message += " (save anyway to keep both)"
        super().__init__([FieldError(fields[0] if fields else None, "duplicate", message)], entity)


class NotFound(RecordError):
    def __init__(self, entity: str, record_id):
        self.entity, self.record_id = entity, record_id
        super().__init__(Msg("{entity} {id} does not exist", entity=entity, id=record_id))


class Conflict(RecordError):
    """The record changed since the caller read it (optimistic concurrency)."""

    def __init__(self, entity: str, record_id, expected, current):
        self.entity, self.record_id, self.expected, self.current = entity, record_id, expected, current
        super().__init__(Msg("{entity} {id} was changed by someone else (you had version {expected}, it is now "
                             "{current}); reload and try again", entity=entity, id=record_id, expected=expected,
                             current=current))


class DeleteRestricted(RecordError):
    """Other records point at this one through a lookup with ``on_delete: restrict``."""

    def __init__(self, entity: str, record_id, references: list[tuple[str, str, list[int], int]]):
        self.entity, self.record_id, self.references = entity, record_id, references
        parts = [f"{count} {other} via {field} (e.g. ids {', '.join(map(str, ids))})"
                 for other, field, ids, count in references]
        super().__init__(f"{entity} {record_id} cannot be deleted: it is referenced by " + "; ".join(parts))


class PermissionDenied(RecordError):
    """The caller's role does not allow this operation on this entity (a 403)."""

    def __init__(self, entity: str, operation: str):
        self.entity, self.operation = entity, operation
        super().__init__(Msg("your role does not allow {operation} on {entity}", operation=operation, entity=entity))


class Refused(RecordError):
    """An action a capability refuses (a claim over the limit, an approval by the wrong user):
    the HTTP status it answers with, a kind, a message that names the cause, the field it is
    about and any details (``limit=..``). Capabilities subclass it (``PoolError``,
    ``ApprovalError``); the API answers every one the same way."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None, **detail):
        super().__init__(message)
        self.status, self.kind, self.message, self.field, self.detail = status, kind, message, field, detail
