"""Records to JSON through marshmallow schemas generated from the model, one per entity."""

from __future__ import annotations

from typing import Any, Iterable

import marshmallow as ma

from engine.metadata.model import AppModel, Entity
from engine.storage.query import SYSTEM_TYPES, system_field

#: Lookups that ``expand=`` accepts beside the declared ones: system columns pointing at users.
SYSTEM_LOOKUPS = {"owner": "owner_id", "owner_id": "owner_id", "created_by": "created_by", "updated_by": "updated_by"}


class Serializers:
    """The marshmallow schema of every entity of one model version, built once."""

    def __init__(self, model: AppModel):
        self.model = model
        self.schemas = {name: _schema(entity) for name, entity in model.entities.items()}
        self._only: dict[tuple[str, tuple[str, ...]], ma.Schema] = {}

    def dump(self, entity: str, record: dict, only: tuple[str, ...] | None = None) -> dict:
        return self.schema(entity, only).dump(record)

    def dump_many(self, entity: str, records: Iterable[dict], only: tuple[str, ...] | None = None) -> list[dict]:
        return self.schema(entity, only).dump(list(records), many=True)

    def schema(self, entity: str, only: tuple[str, ...] | None = None) -> ma.Schema:
        if not only:
            return self.schemas[entity]
        key = (entity, only)
        if key not in self._only:
            self._only[key] = type(self.schemas[entity])(only=only)
        return self._only[key]

    def columns(self, entity: Entity) -> list[str]:
        """Every name a record of ``entity`` has in JSON, system columns first."""
        return [*SYSTEM_TYPES, *(f.name for f in entity.fields.values() if f.stored)]


def _schema(entity: Entity) -> ma.Schema:
    fields: dict[str, Any] = {}
    for name in SYSTEM_TYPES:
        probe = system_field(name)
        fields[name] = probe.type.marshmallow_field(probe)
    for field in entity.fields.values():
        if field.stored:
            fields[field.name] = field.type.marshmallow_field(field)
    return ma.Schema.from_dict(fields, name=entity.name.title().replace("_", ""))()
