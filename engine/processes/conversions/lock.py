"""A converted record stays as it was converted: with ``lock: true``, once the conversion's
``converted_when`` holds, updates made for users are refused (system writes, such as automations
and the follow-up signals, still pass). Registered per runtime by the plugin at startup."""

from __future__ import annotations

from datetime import datetime, timezone

from engine.plugins import hookimpl
from engine.storage.errors import FieldError, ValidationFailed


class ConversionLock:
    def __init__(self, conversions: dict):
        self.conversions = conversions          # {source entity: Conversion} with lock

    @hookimpl
    def crm_watches_writes(self, entity) -> bool:
        return entity.name in self.conversions

    @hookimpl
    def crm_before_write(self, event, entity, record, old, context, conn, errors, state) -> None:
        conv = self.conversions.get(entity.name)
        if conv is None or event != "update" or context.system or old is None:
            return
        if conv.converted_when.evaluate(old, prior=old, now=datetime.now(timezone.utc)) is True:
            raise ValidationFailed([FieldError(None, "locked", f"this {entity.name} has been converted and is "
                                                               "read-only; change the records it was converted to")],
                                   entity.name)
