"""The loader: schema and cross-reference errors with file:line, all at once; layering and origins."""

from __future__ import annotations

import dataclasses
import json

import pytest

from engine.metadata import MetadataError
from engine.metadata.declared import doc_location
from engine.plugins import DocumentKind, hookimpl, make_plugin_manager
from engine.runtime import load_model_from
from engine.settings import SYSTEM_LAYER, Settings

from .conftest import BASE_CONFIG


def load(*layers):
    return load_model_from(make_plugin_manager(entry_point_plugins=False), [("system", SYSTEM_LAYER), *layers])


def problems_of(*layers) -> list[str]:
    with pytest.raises(MetadataError) as info:
        load(*layers)
    return [f"{p.location.file.rsplit('/', 1)[-1]}:{p.location.line} {p.location.path} {p.message}"
            for p in info.value.problems]


BROKEN = {
    "deal.yaml": """
        entity: deal
        title: nmae
        fields:
          name: {type: text, max_length: 80}
          Amount: {type: currency}
          stage: {type: picklist, options: [open, won], default: closed}
          account: {type: lookup, to: acount}
          size: {type: text, options: [a, b]}
          created_at: {type: datetime}
          kind: {type: colour}
        layouts:
          list: {columns: [name, stgae]}
          form:
            - {section: Main, fields: [name, amount]}
        """,
    "bad.yaml": "entity: [unclosed\n",
    "two.yaml": """
        entity: thing
        fields:
          name: {type: text}
        ---
        automation_rule: x
        """,
}


def test_every_error_is_reported_at_once_with_file_and_line(write_tree):
    tree = write_tree("broken", BROKEN)
    found = problems_of(("base", tree))
    expected = [
        ("deal.yaml:5", "'Amount' must be snake_case"),
        ("bad.yaml:2", "not valid YAML"),
        ("two.yaml:5", "exactly one of the keys"),
    ]
    for where, what in expected:
        assert any(p.startswith(where) and what in p for p in found), (where, what, found)
    # The schema error stops deal.yaml before cross-reference checks; fix it and see those.
    fixed = dict(BROKEN, **{"deal.yaml": BROKEN["deal.yaml"].replace("Amount", "amount")})
    found = problems_of(("base", write_tree("broken2", fixed)))
    expected = [
        ("deal.yaml:2", "title 'nmae' is not a field"),
        ("deal.yaml:6", "default 'closed' is not valid"),
        ("deal.yaml:7", "points to entity 'acount', which is not declared"),
        ("deal.yaml:8", "property 'options' does not apply to a text field"),
        ("deal.yaml:9", "field name 'created_at' is reserved"),
        ("deal.yaml:10", "unknown field type 'colour'"),
        ("deal.yaml:12", "layout names unknown field 'stgae'"),
    ]
    for where, what in expected:
        assert any(p.startswith(where) and what in p for p in found), (where, what, found)
    assert len(found) >= len(expected) + 2


def test_error_names_the_path_inside_the_document(write_tree):
    tree = write_tree("t", {"x.yaml": """
        entity: x
        fields:
          name: {type: text}
        layouts:
          form:
            - {section: A, fields: [name, nope]}
        """})
    [problem] = problems_of(("base", tree))
    assert "layouts/form/0/fields/1" in problem and "'nope'" in problem


def test_duplicate_keys_and_duplicate_entities_are_errors(write_tree):
    tree = write_tree("t", {
        "a.yaml": "entity: a\nfields:\n  name: {type: text}\n  name: {type: integer}\n",
        "b1.yaml": "entity: b\nfields:\n  name: {type: text}\n",
        "b2.yaml": "entity: b\nfields:\n  other: {type: text}\n",
    })
    found = problems_of(("base", tree))
    assert any("a.yaml:4" in p and "duplicate key 'name'" in p for p in found), found
    assert any("b2.yaml:1" in p and "declared twice in layer base" in p for p in found), found


def test_base_crm_loads_and_every_field_knows_its_origin():
    model = load(("base", BASE_CONFIG / "base"))
    assert {"account", "contact", "lead", "opportunity", "activity", "product", "price_book_entry", "quote",
            "quote_line", "order", "order_line", "contract", "case", "campaign", "campaign_member"} <= set(model.entities)
    name = model.entity("account").fields["name"]
    assert name.origin.layer == "base" and name.origin.file.endswith("account.yaml") and name.origin.line > 1
    assert model.entity("user").origin.layer == "system"


def test_industry_layer_adds_entities_and_fields_and_overrides_properties(write_tree):
    base = write_tree("base", {"deal.yaml": """
        entity: deal
        label: {en: Deal, zh: 交易}
        fields:
          name: {type: text, required: true, label: Name}
          stage: {type: picklist, options: [open, won]}
        """})
    industry = write_tree("ind", {"deal.yaml": """
        entity: deal
        label: {en: Project, zh: 项目}
        fields:
          stage: {options: [open, won, lost]}
          budget: {type: currency}
        """, "site.yaml": """
        entity: site
        fields:
          deal: {type: lookup, to: deal}
        """})
    model = load(("base", base), ("industry:x", industry))
    deal = model.entity("deal")
    assert deal.label.get("en") == "Project" and deal.label.get("zh") == "项目"
    assert deal.origin.layer == "base"
    assert [c.location.layer for c in deal.changes] == ["industry:x"]
    assert set(deal.changes[0].properties) >= {"label", "fields/budget", "fields/stage"}
    stage = deal.fields["stage"]
    assert [o.value for o in stage.options] == ["open", "won", "lost"]
    assert stage.origin.layer == "base" and stage.changes[0].location.layer == "industry:x"
    assert stage.changes[0].properties == ("options",)
    assert deal.fields["budget"].origin.layer == "industry:x"
    assert deal.fields["name"].required  # untouched properties survive
    assert model.entity("site").origin.layer == "industry:x"


def test_a_later_layer_cannot_change_a_field_type_or_forget_one(write_tree):
    base = write_tree("base", {"deal.yaml": "entity: deal\nfields:\n  name: {type: text}\n  amount: {type: currency}\n"})
    industry = write_tree("ind", {"deal.yaml": "entity: deal\nfields:\n  amount: {type: integer}\n  extra: {label: X}\n"})
    found = problems_of(("base", base), ("industry:x", industry))
    assert any("deal.yaml:3" in p and "cannot change its type" in p for p in found), found
    assert any("has no type" in p and "extra" in p for p in found), found
    # And a later layer that only adds leaves every earlier field in place.
    ok = write_tree("ok", {"deal.yaml": "entity: deal\nfields:\n  extra: {type: text}\n"})
    assert set(load(("base", base), ("industry:x", ok)).entity("deal").fields) == {"name", "amount", "extra"}


def test_model_is_immutable_and_its_digest_follows_the_metadata(write_tree):
    one = write_tree("one", {"d.yaml": "entity: d\nfields:\n  name: {type: text}\n"})
    two = write_tree("two", {"d.yaml": "entity: d\nfields:\n  name: {type: text, max_length: 90}\n"})
    a, b, a2 = load(("base", one)), load(("base", two)), load(("base", one))
    assert a.digest == a2.digest != b.digest
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.entity("d").name = "e"
    with pytest.raises(TypeError):
        a.entities["e"] = a.entity("d")  # type: ignore[index]


def test_settings_order_the_layers(tmp_path):
    settings = Settings(config_root=tmp_path, industry="real_estate", site_dir=tmp_path / "site")
    names = [name for name, _ in settings.layers([("plugin:p", tmp_path / "p")])]
    assert names == ["system", "base", "industry:real_estate", "plugin:p", "site"]


def test_index_names_are_one_namespace_and_required_pointers_cannot_be_set_null(write_tree):
    tree = write_tree("t", {"a.yaml": """
        entity: a
        fields:
          name: {type: text}
        indexes:
          - {name: by_name, fields: [name]}
        """, "b.yaml": """
        entity: b
        fields:
          name: {type: text}
          about: {type: reference, required: true, on_delete: set_null}
        indexes:
          - {name: by_name, fields: [name]}
        """})
    found = problems_of(("base", tree))
    assert any("b.yaml:6" in p and "already used by an index of a" in p for p in found), found
    assert any("b.yaml:4" in p and "set_null cannot apply to a required reference" in p for p in found), found


# -- what plugins give the loader: document kinds and model checks ------------------------------------

class _PlaybookKind:
    """A plugin's document kind: ``playbook:`` documents with their own JSON Schema and check."""

    def __init__(self, schema, seen: list):
        self.schema, self.seen = schema, seen

    @hookimpl
    def crm_document_kinds(self):
        return [DocumentKind("playbook", self.schema, self.check)]

    def check(self, *, model, documents, problems):   # a subset of the keywords is enough
        for doc in documents:
            self.seen.append(doc.data["playbook"])
            if doc.data["of"] not in model.entities:
                problems.add(doc_location(doc, ("of",)), f"playbook {doc.data['playbook']}: "
                                                             f"there is no entity {doc.data['of']!r}")


PLAYBOOK_SCHEMA = {
    "type": "object", "required": ["playbook", "of", "steps"], "additionalProperties": False,
    "properties": {"playbook": {"type": "string"}, "of": {"type": "string"},
                   "steps": {"type": "array", "items": {"type": "string"}}},
}


def test_a_plugin_adds_a_document_kind_with_its_schema_and_check(write_tree, tmp_path):
    schema = tmp_path / "playbook.schema.json"
    schema.write_text(json.dumps(PLAYBOOK_SCHEMA), encoding="utf-8")
    tree = write_tree("t", {"a.yaml": """
        entity: deal
        fields:
          name: {type: text}
        """, "playbooks.yaml": """
        playbook: onboarding
        of: deal
        steps: [call, email]
        ---
        playbook: broken
        of: deal
        steps: 5
        ---
        playbook: stray
        of: dael
        steps: []
        """})
    layers = [("system", SYSTEM_LAYER), ("base", tree)]
    without = make_plugin_manager(entry_point_plugins=False)
    with pytest.raises(MetadataError, match="exactly one of the keys"):
        load_model_from(without, layers)
    seen: list = []
    pm = make_plugin_manager(entry_point_plugins=False, extra=(_PlaybookKind(schema, seen),))
    with pytest.raises(MetadataError) as info:
        load_model_from(pm, layers)
    found = [f"{p.location.file.rsplit('/', 1)[-1]}:{p.location.line} {p.location.path} {p.message}"
             for p in info.value.problems]
    assert found == ["playbooks.yaml:7 steps 5 is not of type 'array'",
                     "playbooks.yaml:10 of playbook stray: there is no entity 'dael'"]
    assert seen == ["onboarding", "stray"]   # the bad document stops at its schema; the others reach the check
    fixed = tree / "playbooks.yaml"
    fixed.write_text(fixed.read_text().replace("steps: 5", "steps: []").replace("dael", "deal"))
    model = load_model_from(pm, layers)
    assert [d["playbook"] for d in model.documents["playbook"]] == ["onboarding", "broken", "stray"]


class _HouseRules:
    """A plugin's model check: a house rule on entities, reported at the file:line of the field."""

    @hookimpl
    def crm_model_checks(self):
        return [self.check]

    @staticmethod
    def check(*, model, declared, problems, **_):
        for name, entity in model.entities.items():
            for field in entity.fields.values():
                if field.name.endswith("_email") and field.type_name != "email":
                    problems.add(declared[name].fields[field.name].loc("type"),
                                 f"{name}.{field.name}: an e-mail address is an email field, not {field.type_name}")


def test_a_plugin_adds_a_model_check(write_tree):
    tree = write_tree("t", {"a.yaml": """
        entity: deal
        fields:
          name: {type: text}
          contact_email: {type: text}
          owner_email: {type: email}
        """})
    layers = [("system", SYSTEM_LAYER), ("base", tree)]
    assert "deal" in load_model_from(make_plugin_manager(entry_point_plugins=False), layers).entities
    pm = make_plugin_manager(entry_point_plugins=False, extra=(_HouseRules(),))
    with pytest.raises(MetadataError) as info:
        load_model_from(pm, layers)
    [problem] = info.value.problems
    assert (problem.location.file.rsplit("/", 1)[-1], problem.location.line, problem.location.path) == \
        ("a.yaml", 4, "fields/contact_email/type")
    assert problem.message == "deal.contact_email: an e-mail address is an email field, not text"
