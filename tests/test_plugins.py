"""Plugins extend the engine through pluggy hooks; the core uses the same hooks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.plugins import Hooks, make_plugin_manager
from engine.storage.errors import ValidationFailed

PLUGINS = Path(__file__).parent / "plugins"
ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "plugins"      # the example plugins every runtime of this project loads


@pytest.fixture
def with_colour(make_runtime):
    return make_runtime(plugin_dirs=(PLUGINS,))


def test_a_folder_plugin_adds_a_field_type_and_a_field_on_account(with_colour):
    """crm_field_types and crm_metadata_dirs: the plugin's type is registered, its layer loaded."""
    rt = with_colour
    assert "colour" in rt.registry
    field = rt.model.entity("account").fields["brand_colour"]
    assert field.type_name == "colour" and field.origin.layer == "plugin:colour"
    assert any(c.location.layer == "plugin:colour" for c in rt.model.entity("account").changes)
    acc = rt.records.create("account", {"name": "Acme", "brand_colour": " #AABBCC "})
    assert rt.records.get("account", acc["id"])["brand_colour"] == "#aabbcc"
    assert rt.records.create("account", {"name": "Plain"})["brand_colour"] == "#000000"
    with pytest.raises(ValidationFailed) as info:
        rt.records.create("account", {"name": "Bad", "brand_colour": "blue"})
    assert info.value.errors[0].field == "brand_colour" and "colour like" in info.value.errors[0].message


def test_a_plugin_widget_draws_its_field_types_input_in_the_web_ui(make_runtime, write_tree):
    """crm_template_dirs: the form includes ui/widgets/<widget>.html from the plugin's folder; what it
    posts is checked by the field type like any value."""
    import re as re_

    from engine.app import create_app
    from engine.security.passwords import set_password
    from engine.storage.records import Context

    site = write_tree("site", {"account.yaml": """
        entity: account
        layouts:
          form: [{section: Brand, columns: 2, fields: [name, brand_colour]}]
    """})
    rt = make_runtime(plugin_dirs=(PLUGINS,), site_dir=site)
    user = rt.records.create("user", {"name": "Ad", "email": "ad@example.com", "role": "admin"},
                             context=Context(system=True))
    set_password(rt.records, user["id"], "a-long-password")
    client = create_app(runtime=rt).test_client()
    token = re_.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"email": "ad@example.com", "password": "a-long-password", "csrf_token": token})
    form = client.get("/ui/account/new").get_data(as_text=True)
    assert re_.search(r'<input type="color"[^>]*name="brand_colour" value="#000000"[^>]*data-widget="colour">', form)
    assert '<input type="text" class="form-control" id="f-name" name="name"' in form   # built-in widgets stay
    token = re_.search(r'name="csrf-token" content="([^"]+)"', form).group(1)
    made = client.post("/ui/account/new", data={"csrf_token": token, "name": "Painted", "brand_colour": "#A1B2C3"})
    assert made.status_code == 302
    assert rt.records.query("account", where={"name": "Painted"})[0]["brand_colour"] == "#a1b2c3"


def test_builtin_types_are_registered_by_the_core_plugin_through_the_same_hook():
    pm = make_plugin_manager(entry_point_plugins=False)
    [core_impl] = [i for i in pm.hook.crm_field_types.get_hookimpls() if i.plugin_name == "core"]
    names = {t.name for t in core_impl.function()}
    assert {"text", "currency", "lookup", "autonumber", "json"} <= names


def test_a_type_registered_twice_is_an_error():
    from engine.fields import FieldTypeRegistry
    from engine.fields.text import TextType

    registry = FieldTypeRegistry()
    registry.register(TextType())
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(TextType())


def hook_names() -> list[str]:
    return sorted(name for name in vars(Hooks) if name.startswith("crm_"))


def test_every_hook_has_a_test_and_a_section_in_the_plugin_guide():
    """Adding a hook without a test (calling it by name) or without docs fails here."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    tests = "\n".join(p.read_text(encoding="utf-8") for p in Path(__file__).parent.glob("test_*.py")
                      if p.name != Path(__file__).name)
    tests += "\n".join(p.read_text(encoding="utf-8") for p in PLUGINS.glob("*/__init__.py"))
    tests += "\n".join(p.read_text(encoding="utf-8") for p in EXAMPLES.glob("*/*/__init__.py"))
    missing_tests = [h for h in hook_names() if not re.search(rf"\bdef {h}\b", tests)]
    missing_docs = [h for h in hook_names() if f"### `{h}`" not in guide]
    assert hook_names(), "no hook specifications found"
    assert missing_tests == [], f"hooks with no implementation in a test: {missing_tests}"
    assert missing_docs == [], f"hooks with no '### `name`' section in docs/plugins.md: {missing_docs}"


def test_an_installed_package_is_found_by_its_crm_engine_entry_point(tmp_path, monkeypatch, make_runtime):
    """A plugin published as a distribution with an entry point in the crm_engine group."""
    package = tmp_path / "site"
    (package / "shipping_plugin").mkdir(parents=True)
    (package / "shipping_plugin" / "__init__.py").write_text(
        "from engine.fields.text import TextType\n"
        "from engine.plugins import hookimpl\n\n"
        "class Incoterm(TextType):\n    name = 'incoterm'\n    props = {}\n\n"
        "@hookimpl\ndef crm_field_types():\n    return [Incoterm()]\n")
    info = package / "shipping_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shipping-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[crm_engine]\nshipping = shipping_plugin\n")
    monkeypatch.syspath_prepend(str(package))
    pm = make_plugin_manager(entry_point_plugins=True)
    assert pm.get_plugin("shipping") is not None
    assert "incoterm" in {t.name for types in pm.hook.crm_field_types() for t in types}
    assert make_plugin_manager(entry_point_plugins=False).get_plugin("shipping") is None


# -- the example plugins under plugins/ ---------------------------------------------------------------

def example_plugins() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def test_the_project_ships_example_plugins():
    assert len(example_plugins()) >= 2, "plugins/ ships a field type and an automation action to start from"


@pytest.mark.parametrize("folder", example_plugins(), ids=lambda p: p.name)
def test_every_example_plugin_loads_is_installable_and_has_tests(folder):
    """Registered by a fresh plugin manager without error; an installable package whose entry point
    has the folder's name (so an installed copy replaces the folder, never doubles it); tests beside it."""
    import tomllib

    pm = make_plugin_manager((EXAMPLES,), entry_point_plugins=False)
    plugin = pm.get_plugin(folder.name)
    assert plugin is not None, f"plugins/{folder.name} is not registered"
    hooks = [name for name in hook_names() if hasattr(plugin, name)]
    assert hooks, f"plugins/{folder.name} implements no hook"
    for name in ("crm_field_types", "crm_formula_functions", "crm_actions", "crm_action_functions",
                 "crm_metadata_dirs", "crm_document_kinds", "crm_template_dirs"):
        if name in hooks:
            getattr(plugin, name)()   # the registries' hooks run once per boot: they must not fail
    project = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = project["project"]["entry-points"]["crm_engine"]
    assert list(entry_points) == [folder.name] and entry_points[folder.name] == folder.name
    assert (folder / folder.name / "__init__.py").is_file()
    tests = list((folder / "tests").glob("test_*.py"))
    assert tests and any("def test_" in t.read_text(encoding="utf-8") for t in tests), \
        f"plugins/{folder.name} has no tests in plugins/{folder.name}/tests/test_*.py"


def test_the_example_plugins_do_not_change_the_base_crm(make_runtime):
    """Every runtime started from this project loads plugins/: they may register types and actions,
    never add fields or documents to the base CRM."""
    plain = make_runtime(migrate=False)
    with_examples = make_runtime(migrate=False, plugin_dirs=(EXAMPLES,))
    assert with_examples.model.digest == plain.model.digest
    assert with_examples.model.layers == plain.model.layers


# -- every document kind has a JSON Schema and an example in docs/metadata.md ---------------------------

def document_kinds() -> dict[str, Path]:
    """Kind -> its JSON Schema: the loader's own (entity, role), every schema in engine/metadata/schemas,
    and every DocumentKind the default plugins contribute (crm_document_kinds)."""
    schemas = ROOT / "engine" / "metadata" / "schemas"
    kinds = {p.name.removesuffix(".schema.json"): p for p in schemas.glob("*.schema.json")}
    for kind in ("entity", "role"):
        kinds.setdefault(kind, schemas / f"{kind}.schema.json")
    for contributed in make_plugin_manager(entry_point_plugins=False).hook.crm_document_kinds():
        for kind in contributed or ():
            kinds[kind.name] = Path(kind.schema)
    return kinds


@pytest.mark.parametrize("kind", sorted(document_kinds()))
def test_every_document_kind_has_a_schema_and_an_example_in_the_metadata_reference(kind):
    import json

    schema = document_kinds()[kind]
    assert schema.is_file(), f"the document kind {kind!r} has no JSON Schema ({schema})"
    assert json.loads(schema.read_text(encoding="utf-8")).get("type") == "object"
    guide = (ROOT / "docs" / "metadata.md").read_text(encoding="utf-8")
    examples = re.findall(r"^```yaml\n(?:#[^\n]*\n)*(\w+):", guide, flags=re.M)
    assert kind in examples, f"docs/metadata.md has no ```yaml example starting with '{kind}:'"
