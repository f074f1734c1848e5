"""Rules about users that every write obeys, attached to the record service through its hooks."""

from __future__ import annotations

from engine.plugins import hookimpl
from engine.storage.errors import FieldError, ValidationFailed
from engine.storage.tables import USER_ENTITY


@hookimpl
def crm_watches_writes(entity):
    """Only writes of users: bulk writes of other entities keep their fast path."""
    return entity.name == USER_ENTITY


@hookimpl
def crm_before_write(event, entity, record, old, context):
    """Nobody locks themselves out: a user cannot deactivate or delete their own account, nor
    change their own role (which would also be a way to raise one's own rights)."""
    if entity.name != USER_ENTITY or context is None or context.user_id is None or old is None:
        return
    if old.get("id") != context.user_id:
        return
    if event == "delete":
        raise ValidationFailed([FieldError(None, "self", "you cannot delete your own user; ask another admin")],
                               entity.name)
    if record.get("active") is False and old.get("active") is not False:
        raise ValidationFailed([FieldError("active", "self", "you cannot deactivate your own user")], entity.name)
    if record.get("role") != old.get("role"):
        raise ValidationFailed([FieldError("role", "self", "you cannot change your own role; ask another admin")],
                               entity.name)


@hookimpl
def crm_after_commit(event, entity, record, old, context):
    """Audit changes of users (role, active, team, manager, e-mail) made by someone acting with an
    ``Access`` (the API, the UI); the CLI audits its own user commands."""
    access = getattr(context, "access", None)
    if entity.name != USER_ENTITY or access is None:
        return
    from .audit import USER_FIELDS, audit

    if event == "update":
        changed = {f: [_plain(old.get(f)), _plain(record.get(f))] for f in USER_FIELDS if old.get(f) != record.get(f)}
        if not changed:
            return
        if record.get("active") is False and old.get("active") is not False:
            from .web import end_sessions

            end_sessions(access.records, record["id"])   # enabling the user again must not revive them
        detail = {"event": "update", "changed": changed}
    else:
        detail = {"event": event, **{f: _plain(record.get(f)) for f in ("role", "team", "manager", "active")}}
    audit(access.records, "user_change", user_id=context.user_id, entity=USER_ENTITY, record_id=record.get("id"),
          detail=detail)


def _plain(value):
    return value if value is None or isinstance(value, (str, int, bool)) else str(value)
