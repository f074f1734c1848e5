"""A converted record is converted only by its conversion, and stays as it was converted.

For writes made for users (system writes, such as the conversion's own stamp, automations and the
follow-up signals, pass): an update that would make ``converted_when`` hold is refused (convert the
record instead: a hand-set status would create nothing; a create may, so that converted records
can be imported from another system); with ``lock: true``, once ``converted_when`` holds, every
update is refused. Registered per runtime by the plugin at startup.
"""

from __future__ import annotations

from datetime import datetime, timezone

from engine.plugins import hookimpl
from engine.storage.errors import FieldError, ValidationFailed


class ConversionGuard:
    def __init__(self, conversions: dict):
        # {source entity: [Conversion]}: only those that say when a record is converted
        self.conversions = {source: [c for c in by_name.values() if c.converted_when is not None]
                            for source, by_name in conversions.items()}
        self.conversions = {k: v for k, v in self.conversions.items() if v}

    @hookimpl
    def crm_watches_writes(self, entity) -> bool:
        return entity.name in self.conversions

    @hookimpl
    def crm_before_write(self, event, entity, record, old, context, conn, errors, state) -> None:
        if event == "delete" or context.system:
            return
        for conv in self.conversions.get(entity.name, ()):
            self._check(conv, entity, record, old)

    @staticmethod
    def _check(conv, entity, record: dict, old: dict | None) -> None:
        now = datetime.now(timezone.utc)
        if old is not None and conv.lock and _converted(conv, old, now):
            raise ValidationFailed([FieldError(None, "locked", f"this {entity.name} has been converted and is "
                                                               "read-only; change the records it was converted to")],
                                   entity.name)
        if old is not None and _converted(conv, record, now) and not _converted(conv, old, now):
            field = next(iter(sorted(conv.converted_when.fields)), None)
            raise ValidationFailed([FieldError(field, "convert", f"a {entity.name} is converted with "
                                                                 f"'{conv.label.get('en')}', which creates its records")],
                                   entity.name)


def locked(conv, record: dict) -> bool:
    """Whether ``record`` is read-only for users: its conversion says ``lock: true`` and it is converted."""
    return conv.lock and _converted(conv, record, datetime.now(timezone.utc))


def _converted(conv, record: dict, now: datetime) -> bool:
    return conv.converted_when is not None and conv.converted_when.evaluate(record, prior=record, now=now) is True
