"""Records to JSON through marshmallow schemas generated from the model, one per entity."""

from __future__ import annotations

from typing import Any, Iterable

import marshmallow as ma

from engine.metadata.model import AppModel, Entity
from engine.storage.query import SYSTEM_TYPES, system_field

#: Lookups that ``expand=`` accepts beside the declared ones: system columns pointing at users.
SYSTEM_LOOKUPS = {"owner": "owner_id", "owner_id": "owner_id", "created_by": "created_by", "updated_by": "updated_by"}


class Serializers:
    """The marshmallow schema of every entity of one model version, built once.

    Dumping goes through a plan compiled from each schema's fields (name and the field's own
    serializer, or nothing where the value is already JSON), so the hot path skips marshmallow's
    per-value dispatch while the schema stays the one definition of the JSON form.
    """

    def __init__(self, model: AppModel):
        self.model = model
        self.schemas = {name: _schema(entity) for name, entity in model.entities.items()}
        self._only: dict[tuple[str, tuple[str, ...]], ma.Schema] = {}
        self._plans: dict[tuple[str, tuple[str, ...] | None], list] = {}

    def dump(self, entity: str, record: dict, only: tuple[str, ...] | None = None) -> dict:
        return {name: value if convert is None or value is None else convert(value)
                for name, convert in self._plan(entity, only) for value in (record.get(name),)}

    def dump_many(self, entity: str, records: Iterable[dict], only: tuple[str, ...] | None = None) -> list[dict]:
        plan = self._plan(entity, only)
        return [{name: value if convert is None or value is None else convert(value)
                 for name, convert in plan for value in (record.get(name),)} for record in records]

    def _plan(self, entity: str, only: tuple[str, ...] | None) -> list:
        key = (entity, only)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = [(name, _converter(name, field))
                                       for name, field in self.schema(entity, only).dump_fields.items()]
        return plan

    def schema(self, entity: str, only: tuple[str, ...] | None = None) -> ma.Schema:
        if not only:
            return self.schemas[entity]
        key = (entity, only)
        if key not in self._only:
            self._only[key] = type(self.schemas[entity])(only=only)
        return self._only[key]

    def columns(self, entity: Entity) -> list[str]:
        """Every name a record of ``entity`` has in JSON, system columns first."""
        return [*SYSTEM_TYPES, *(f.name for f in entity.fields.values() if f.stored or f.computed_on_read)]


def _converter(name: str, field: ma.fields.Field):
    """The function that turns a stored value into its JSON form (None: it already is JSON)."""
    from engine.fields.base import FieldType, TypedField

    if isinstance(field, TypedField):
        model_field = field.model_field
        to_json = model_field.type.to_json
        if type(model_field.type).to_json is FieldType.to_json:
            return None
        return lambda value: to_json(model_field, value)
    return lambda value: field.serialize(name, {name: value})


def _schema(entity: Entity) -> ma.Schema:
    fields: dict[str, Any] = {}
    for name in SYSTEM_TYPES:
        probe = system_field(name)
        fields[name] = probe.type.marshmallow_field(probe)
    for field in entity.fields.values():
        if field.stored or field.computed_on_read:   # the record service fills computed ones in on read
            fields[field.name] = field.type.marshmallow_field(field)
    return ma.Schema.from_dict(fields, name=entity.name.title().replace("_", ""))()
