"""Rules about users that every write obeys, attached to the record service through its hooks."""

from __future__ import annotations

from engine.plugins import hookimpl
from engine.storage.errors import FieldError, ValidationFailed
from engine.storage.tables import USER_ENTITY


@hookimpl
def crm_before_write(event, entity, record, old, context):
    """Nobody locks themselves out: a user cannot deactivate or delete their own account."""
    if entity.name != USER_ENTITY or context is None or context.user_id is None or old is None:
        return
    if old.get("id") != context.user_id:
        return
    if event == "delete":
        raise ValidationFailed([FieldError(None, "self", "you cannot delete your own user; ask another admin")],
                               entity.name)
    if record.get("active") is False and old.get("active") is not False:
        raise ValidationFailed([FieldError("active", "self", "you cannot deactivate your own user")], entity.name)
