"""A record pending approval is locked: for writes made for users, only its current approvers and
admins change it, except the process's ``editable`` fields; nobody else deletes it, nor creates,
changes or deletes its declared ``lines`` (a quote's lines: its totals are what was submitted). System writes
(the approval's own status, automations) pass. Enforced in the record service's one door, so the API,
the UI's forms and inline edits and bulk updates all meet it. Registered per runtime at startup."""

from __future__ import annotations

from engine.plugins import hookimpl
from engine.storage.errors import FieldError, ValidationFailed


class ApprovalLock:
    def __init__(self, service):
        self.service = service

    @hookimpl
    def crm_watches_writes(self, entity) -> bool:
        return entity.name in self.service.entities or entity.name in self.service.lines

    @hookimpl
    def crm_before_write(self, event, entity, record, old, context, conn, errors, state) -> None:
        if context.system:
            return
        admin = context.access is not None and context.access.admin
        for lookup, parent in sorted(self.service.lines.get(entity.name, ())):
            for parent_id in sorted({r.get(lookup) for r in (record, old) if r is not None} - {None}):
                approval = self.service.lock_of(conn, parent, parent_id, context.user_id, admin)
                if approval is not None:
                    raise ValidationFailed([FieldError(lookup, "locked", f"the {parent} it belongs to is pending "
                                                       f"approval ({approval.label}): only its current approvers "
                                                       f"and admins may change its {entity.name} records")],
                                           entity.name)
        if event == "create" or entity.name not in self.service.entities:
            return
        approval = self.service.lock_of(conn, entity.name, old["id"], context.user_id, admin)
        if approval is None:
            return
        if event == "update":
            changed = [k for k, v in record.items() if (k in entity.fields or k == "owner_id") and old.get(k) != v]
            blocked = [k for k in changed if k not in approval.editable]
            if not blocked:
                return
        else:
            blocked = [None]
        editable = ", ".join(sorted(approval.editable)) or "none"
        raise ValidationFailed([FieldError(blocked[0], "locked", f"this {entity.name} is pending approval "
                                           f"({approval.label}): only its current approvers and admins may "
                                           f"{'delete' if event == 'delete' else 'change'} it (fields still "
                                           f"editable: {editable})")], entity.name)
