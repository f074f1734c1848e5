"""The model as API clients need it: entities, fields, types, options, labels, layouts."""

from __future__ import annotations

from engine.metadata.model import AppModel, Entity, Field

_FIELD_PROPS = ("required", "unique", "readonly", "max_length", "min", "max", "precision", "scale", "to",
                "on_delete", "pattern", "track_history", "searchable", "default", "required_when", "visible_when",
                "readonly_when", "returns", "expr")


def model_meta(model: AppModel) -> dict:
    return {"model": model.digest,
            "entities": [{"name": e.name, "label": dict(e.label.texts), "plural": dict(e.plural.texts),
                          "module": e.module, "title": e.title, "layer": e.origin.layer}
                         for e in model.entities.values()]}


def entity_meta(model: AppModel, entity: Entity) -> dict:
    return {"name": entity.name, "label": dict(entity.label.texts), "plural": dict(entity.plural.texts),
            "module": entity.module, "title": entity.title, "layer": entity.origin.layer,
            "fields": [field_meta(f) for f in entity.fields.values()],
            "layouts": dict(entity.layouts), "model": model.digest}


def field_meta(field: Field) -> dict:
    out = {"name": field.name, "type": field.type_name, "label": dict(field.label.texts),
           "widget": field.type.widget, "layer": field.origin.layer}
    help_text = field.prop("help")
    if help_text:
        out["help"] = help_text if isinstance(help_text, dict) else {"en": help_text}
    for key in _FIELD_PROPS:
        if field.prop(key) is not None:
            out[key] = field.prop(key)
    if field.type.computed:
        out["readonly"] = True
    if field.target:
        out["to"] = field.target
    if field.options:
        out["options"] = [{"value": o.value, "label": dict(o.label.texts)} for o in field.options]
    return out
