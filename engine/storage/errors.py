"""Errors of the record service: the one error family every caller (API, UI, import, automation) maps."""

from __future__ import annotations

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


class NotFound(RecordError):
    def __init__(self, entity: str, record_id):
        self.entity, self.record_id = entity, record_id
        super().__init__(f"{entity} {record_id} does not exist")


class Conflict(RecordError):
    """The record changed since the caller read it (optimistic concurrency)."""

    def __init__(self, entity: str, record_id, expected, current):
        self.entity, self.record_id, self.expected, self.current = entity, record_id, expected, current
        super().__init__(f"{entity} {record_id} was changed by someone else "
                         f"(you had version {expected}, it is now {current}); reload and try again")


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
        super().__init__(f"your role does not allow {operation} on {entity}")


class Refused(RecordError):
    """An action a capability refuses (a claim over the limit, an approval by the wrong user):
    the HTTP status it answers with, a kind, a message that names the cause, the field it is
    about and any details (``limit=..``). Capabilities subclass it (``PoolError``,
    ``ApprovalError``); the API answers every one the same way."""

    def __init__(self, status: int, kind: str, message: str, *, field: str | None = None, **detail):
        super().__init__(message)
        self.status, self.kind, self.message, self.field, self.detail = status, kind, message, field, detail
