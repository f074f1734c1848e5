"""The rating plugin, used the way a site uses it: a `satisfaction` field on account, declared in the
site's metadata, written and read through the record service, the API, CSV export, the formula
language (Python and SQL) and the web form."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from engine.storage.errors import ValidationFailed
from engine.storage.records import Context
from tests.conftest import ApiClient

PLUGINS = Path(__file__).resolve().parents[2]      # the plugins/ folder: this plugin and its neighbours
SITE = """
entity: account
fields:
  satisfaction: {type: rating, stars: 4, label: {en: Satisfaction}}
  happy: {type: formula, returns: boolean, expr: "satisfaction >= 3"}
layouts:
  form: [{section: Overview, fields: [name, satisfaction]}]
"""


@pytest.fixture
def rt(make_runtime, write_tree):
    return make_runtime(plugin_dirs=(PLUGINS,), site_dir=write_tree("site", {"account.yaml": SITE}))


@pytest.fixture
def admin(rt):
    from engine.app import create_app
    from engine.security.passwords import set_password
    from engine.security.tokens import create_token

    user = rt.records.create("user", {"name": "Ad", "email": "ad@example.com", "role": "admin"},
                             context=Context(system=True))
    set_password(rt.records, user["id"], "a-long-password")
    _, token = create_token(rt.records, user["id"], "tests")
    app = create_app(runtime=rt)
    return ApiClient(app.test_client(), {"Authorization": f"Bearer {token}"}, rt, user, token, app)


def test_the_type_is_registered_and_the_base_crm_is_unchanged(make_runtime):
    """Loaded from plugins/ the plugin adds a type and no field: the base model is the same."""
    plain, with_plugin = make_runtime(migrate=False), make_runtime(migrate=False, plugin_dirs=(PLUGINS,))
    assert "rating" in with_plugin.registry and "rating" not in plain.registry
    assert with_plugin.model.digest == plain.model.digest


def test_values_are_stars_from_one_to_the_fields_top(rt):
    make = rt.records.create
    assert make("account", {"name": "A", "satisfaction": 4})["satisfaction"] == 4
    assert make("account", {"name": "B", "satisfaction": " 2 "})["satisfaction"] == 2
    assert make("account", {"name": "C", "satisfaction": "★★★"})["satisfaction"] == 3
    assert make("account", {"name": "D"})["satisfaction"] is None
    for bad, code in ((5, "max"), (0, "min"), ("lots", "type"), (True, "type"), (2.5, "type"), ("99999", "max")):
        with pytest.raises(ValidationFailed) as info:
            make("account", {"name": "Bad", "satisfaction": bad})
        [error] = info.value.errors
        assert (error.field, error.code) == ("satisfaction", code), bad
    assert "between 1 and 4 stars" in error.message


def test_a_misdeclared_field_is_a_metadata_error(make_runtime, write_tree):
    from engine.metadata.errors import MetadataError

    site = write_tree("bad", {"account.yaml": "entity: account\nfields:\n  satisfaction: {type: rating, stars: 11}\n"})
    with pytest.raises(MetadataError, match="stars"):
        make_runtime(plugin_dirs=(PLUGINS,), site_dir=site)


def test_the_formula_language_sees_a_number_in_python_and_in_sql(rt, admin):
    for name, stars in (("Glad", 4), ("Meh", 2), ("Unrated", None)):
        rt.records.create("account", {"name": name, "satisfaction": stars})
    happy = {r["name"]: r["happy"] for r in rt.records.query("account", order_by=("name",))}
    assert happy == {"Glad": True, "Meh": False, "Unrated": False}
    found = admin.get("/api/v1/account", query_string={"where": "satisfaction >= 3", "fields": "name"})
    assert found.status_code == 200, found.json
    assert [r["name"] for r in found.json["data"]] == ["Glad"]


def test_the_api_documents_checks_and_exports_it(rt, admin):
    schema = admin.get("/api/v1/openapi.json").json["components"]["schemas"]
    props = next(s["properties"] for name, s in schema.items() if name.lower().startswith("account")
                 and "satisfaction" in s.get("properties", {}))
    [documented] = [s for s in props["satisfaction"]["anyOf"] if s["type"] != "null"]   # optional: or null
    assert (documented["type"], documented["minimum"], documented["maximum"]) == ("integer", 1, 4)
    made = admin.post("/api/v1/account", json={"name": "Acme", "satisfaction": "4"})
    assert made.status_code == 201 and made.json["satisfaction"] == 4
    refused = admin.post("/api/v1/account", json={"name": "Acme", "satisfaction": 7})
    assert refused.status_code == 422
    assert [(e["field"], e["code"]) for e in refused.json["errors"]] == [("satisfaction", "max")]
    export = admin.get("/api/v1/account/_export", query_string={"fields": "name,satisfaction"})
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert [(r["name"], r["satisfaction"]) for r in rows] == [("Acme", "4")]
    field = rt.model.entity("account").fields["satisfaction"]
    assert field.type.parse_csv(field, " ★★ ") == 2 and field.type.parse_csv(field, "") is None
    assert field.type.format_csv(field, 3) == "3"


def test_the_form_draws_stars_and_what_it_posts_is_checked(admin):
    client = admin.client
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    client.post("/login", data={"email": "ad@example.com", "password": "a-long-password", "csrf_token": token})
    form = client.get("/ui/account/new").get_data(as_text=True)
    assert 'data-widget="rating"' in form
    assert re.findall(r'<input type="radio" class="btn-check" name="satisfaction" id="f-satisfaction-\d" value="(\d?)"',
                      form) == ["", "1", "2", "3", "4"]
    assert ">★★★★</label>" in form
    token = re.search(r'name="csrf-token" content="([^"]+)"', form).group(1)
    made = client.post("/ui/account/new", data={"csrf_token": token, "name": "Starred", "satisfaction": "3"})
    assert made.status_code == 302
    [record] = admin.rt.records.query("account", where={"name": "Starred"})
    assert record["satisfaction"] == 3
    edit = client.get(f"/ui/account/{record['id']}/edit").get_data(as_text=True)
    assert re.search(r'value="3" autocomplete="off"\s+checked', edit)
    bad = client.post("/ui/account/new", data={"csrf_token": token, "name": "Too many", "satisfaction": "9"})
    assert bad.status_code in (200, 422) and "between 1 and 4 stars" in bad.get_data(as_text=True)
