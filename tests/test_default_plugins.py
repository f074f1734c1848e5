"""The platform's features are default plugins, and the web hooks work for any plugin.

1. With the ``dashboards`` default plugin disabled (``CRM_DISABLED_PLUGINS``, the operator's switch),
   the app boots and serves records, the API and the UI; the dashboards' routes, screens, OpenAPI
   paths, navigation entries and home panel are gone with it.
2. A test plugin implements every web and runtime hook (``crm_startup``, ``crm_shutdown``,
   ``crm_blueprints``, ``crm_openapi``, ``crm_nav_entries``, ``crm_home_panels``,
   ``crm_record_actions``, ``crm_list_actions``, ``crm_record_lock``, ``crm_record_panels``) and each
   one's effect is seen through the app.
"""

from __future__ import annotations

import re

import pytest
from flask import g, render_template_string
from markupsafe import Markup, escape

from engine.app import create_app
from engine.plugins import NavEntry, Panel, RecordAction, hookimpl
from engine.runtime import Runtime
from engine.security.tokens import create_token
from engine.settings import Settings

from .ui_kit import SYSTEM, Browser, make_site, text


def _api_token(rt, user) -> dict:
    _, token = create_token(rt.records, user["id"], "tests")
    return {"Authorization": f"Bearer {token}"}


# -- 1. without the dashboards --------------------------------------------------------------------

def test_without_the_dashboards_plugin_the_app_serves_everything_else(make_runtime):
    rt = make_runtime(disabled_plugins=("dashboards",))
    assert rt.pm.get_plugin("dashboards") is None and "dashboards" not in rt.extensions
    assert rt.workflow is not None                     # the other default plugins run as before
    site = make_site(rt, seeded=False)
    account = rt.records.create("account", {"name": "Acme"}, context=SYSTEM)
    browser = site.browser(site.admin)
    home = text(browser.get("/"))
    assert "/ui/dashboards/" not in home and ">Dashboards<" not in home
    assert "/ui/account" in home                       # the entities' navigation stays
    assert browser.get("/ui/dashboards/sales").status_code == 404
    assert browser.get("/ui/account").status_code == 200
    page = browser.get(f"/ui/account/{account['id']}")
    assert page.status_code == 200 and "Acme" in text(page)
    client, headers = site.app.test_client(), _api_token(rt, site.admin)
    for url in ("/api/v1/_dashboards", "/api/v1/_dashboards/sales", "/api/v1/_dashboards/sales/pipeline.svg"):
        r = client.get(url, headers=headers)
        assert r.status_code == 404 and r.mimetype == "application/problem+json", url
    assert client.get(f"/api/v1/account/{account['id']}", headers=headers).get_json()["name"] == "Acme"
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert not [p for p in paths if "_dashboards" in p]
    assert "/api/v1/account" in paths and "/api/v1/_automation_runs" in paths

    # the same database with the default plugins: the dashboards are back, nothing else differs
    with_all = make_runtime(migrate=False)
    app = create_app(runtime=with_all)
    browser = Browser(app).login("admin@example.com")
    assert "/ui/dashboards/sales" in text(browser.get("/"))
    assert browser.get("/ui/dashboards/sales").status_code == 200
    assert app.test_client().get("/api/v1/_dashboards", headers=headers).status_code == 200
    paths = app.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/_dashboards/{name}" in paths


def test_disabled_plugins_come_from_the_environment_and_an_unknown_name_is_refused(monkeypatch, settings):
    monkeypatch.setenv("CRM_DISABLED_PLUGINS", "dashboards, workflow")
    assert Settings.from_env().disabled_plugins == ("dashboards", "workflow")
    with pytest.raises(ValueError, match="'dashbords', which is no plugin here"):
        Runtime.boot(settings.with_(disabled_plugins=("dashbords",)))


# -- 2. a plugin on every web hook ------------------------------------------------------------------

PROBE_PAGE = '{% extends "base.html" %}{% block content %}<p id="probe">user {{ g.identity.user_id }}</p>{% endblock %}'


class Probe:
    """A plugin that uses each web and runtime hook once, visibly."""

    def __init__(self):
        self.events: list[str] = []

    @hookimpl
    def crm_startup(self, runtime):
        runtime.extensions["probe"] = {"greeting": "started"}
        self.events.append("startup")

    @hookimpl
    def crm_shutdown(self, runtime):
        self.events.append(f"shutdown:{runtime.extensions.pop('probe')['greeting']}")

    @hookimpl
    def crm_blueprints(self, runtime):
        from engine.api.extend import api_routes, json_response
        from engine.ui.extend import ui_routes

        api = api_routes("probe_api", __name__)
        api.add_url_rule("/_probe", "probe", lambda: json_response(
            {"greeting": runtime.extensions["probe"]["greeting"], "user": g.identity.user_id}))
        ui = ui_routes("probe_ui", __name__, template_folder=None)
        ui.add_url_rule("/ui/_probe", "probe", lambda: render_template_string(PROBE_PAGE), methods=["GET", "POST"])
        return [api, ui]

    @hookimpl
    def crm_openapi(self, runtime):
        return {"paths": {"/api/v1/_probe": {"get": {"tags": ["probe"], "operationId": "probe", "responses": {
                    "200": {"description": "The probe", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Probe"}}}}}}}},
                "components": {"schemas": {"Probe": {"type": "object", "required": ["greeting", "user"], "properties": {
                    "greeting": {"type": "string"}, "user": {"type": "integer"}}}}},
                "tags": [{"name": "probe", "description": "A test plugin"}]}

    @hookimpl
    def crm_nav_entries(self, runtime, access):
        entries = [NavEntry("probe", {"en": "Probe <b>", "zh": "探针"}, "/ui/_probe", order=1)]
        if access.admin:
            entries.append(NavEntry("probe-admin", {"en": "Probe tools"}, "/ui/_probe?tools=1", group="Tools"))
        return entries

    @hookimpl
    def crm_home_panels(self, runtime, access):
        return [Panel("probe", "Probe <panel>", Markup('<p id="probe-panel">') + escape(access.user.get("name"))
                      + Markup("</p>"))]

    @hookimpl
    def crm_record_actions(self, runtime, entity, record, access):
        if entity.name != "account":
            return []
        return [RecordAction("ping", "Ping <it>", f"/ui/_probe?id={record['id']}", method="get", kind="probe"),
                RecordAction("poke", "Poke", "/ui/_probe", kind="probe", style="outline-danger", order=5),
                RecordAction("odd", "Odd", "/ui/_probe", kind='x" onclick="alert(1)')]

    @hookimpl
    def crm_record_lock(self, runtime, entity, record, access):
        if entity.name == "account" and record.get("name") == "Frozen <Co>":
            return "Frozen <by the probe>"
        return None

    @hookimpl
    def crm_list_actions(self, runtime, entity, access):
        if entity.name != "account" or not access.can("account", "update"):
            return []
        return [RecordAction("tag", "Tag <them>", "/ui/_probe", kind="probe", style="outline-primary")]

    @hookimpl
    def crm_record_panels(self, runtime, entity, record, access):
        return [Panel("probe", f"About this {entity.name}", Markup("<p id=\"probe-about\">") + escape(record.get("name"))
                      + Markup("</p>"))]


@pytest.fixture
def probed(settings):
    probe = Probe()
    rt = Runtime.boot(settings, extra_plugins=(probe,))
    rt.migrate()
    yield probe, rt
    if "probe" in rt.extensions:
        rt.close()


def test_crm_startup_and_crm_shutdown_keep_what_a_plugin_builds(probed):
    probe, rt = probed
    assert probe.events == ["startup"] and rt.extensions["probe"] == {"greeting": "started"}
    rt.close()
    assert probe.events == ["startup", "shutdown:started"] and "probe" not in rt.extensions
    assert rt.workflow is None             # the default plugins released theirs too


def test_crm_blueprints_mounts_api_routes_with_the_apis_authentication_and_screens_in_the_uis_frame(probed):
    _, rt = probed
    site = make_site(rt, seeded=False)
    client = site.app.test_client()
    r = client.get("/api/v1/_probe")
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    r = client.get("/api/v1/_probe", headers=_api_token(rt, site.sales))
    assert r.get_json() == {"greeting": "started", "user": site.sales["id"]}
    assert client.get("/ui/_probe").status_code == 302                 # to the login form
    page = text(site.browser(site.sales).get("/ui/_probe"))
    assert f'<p id="probe">user {site.sales["id"]}</p>' in page and 'class="navbar' in page
    assert site.browser(site.sales).post("/ui/_probe", {}, csrf=False).status_code == 403   # the CSRF guard holds


def test_crm_openapi_fragments_are_merged_into_the_document(probed):
    _, rt = probed
    doc = make_site(rt, seeded=False).app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["paths"]["/api/v1/_probe"]["get"]["operationId"] == "probe"
    assert doc["components"]["schemas"]["Probe"]["required"] == ["greeting", "user"]
    assert "Problem" in doc["components"]["schemas"]             # the API's own components stay
    assert {"name": "probe", "description": "A test plugin"} in doc["tags"]


def test_crm_nav_entries_and_crm_home_panels_are_drawn_for_the_signed_in_user(probed):
    _, rt = probed
    site = make_site(rt, seeded=False)
    home = text(site.browser(site.sales).get("/"))
    assert '<a class="nav-link" href="/ui/_probe" data-nav="probe">Probe &lt;b&gt;</a>' in home
    assert "Probe tools" not in home                                     # for admins only
    # the sales role's `home:` list names the panels it shows; the probe's is not among them
    assert "Probe &lt;panel&gt;" not in home
    admin = site.browser(site.admin)
    page = text(admin.get("/"))                                          # admin declares no `home:`: every panel
    assert '<h2 class="h6 mb-0" id="panel-probe">Probe &lt;panel&gt;</h2>' in page
    assert '<p id="probe-panel">Ada Admin</p>' in page
    assert re.search(r'>Tools</a>\s*<ul class="dropdown-menu">\s*<li><a class="dropdown-item" '
                     r'href="/ui/_probe\?tools=1" data-nav="probe-admin">Probe tools</a>', page)
    admin.lang("zh")
    assert 'data-nav="probe">探针</a>' in text(admin.get("/"))


def test_crm_record_actions_and_crm_record_panels_are_drawn_on_the_record_page(probed):
    _, rt = probed
    site = make_site(rt, seeded=False)
    acme = rt.records.create("account", {"name": "Acme <Ltd>"}, context=SYSTEM)
    page = text(site.browser(site.admin).get(f"/ui/account/{acme['id']}"))
    poke = page.index('data-probe="poke"')
    ping = page.index(f'<a class="btn btn-secondary btn-sm probe" href="/ui/_probe?id={acme["id"]}" '
                      'data-probe="ping">Ping &lt;it&gt;</a>')
    assert poke < ping                                                   # in their order
    assert re.search(r'<form method="post" action="/ui/_probe">\s*<input type="hidden" name="csrf_token" value="[^"]+">'
                     r'<input type="hidden" name="version" value="1">\s*<button class="btn btn-outline-danger btn-sm '
                     r'probe" type="submit" data-probe="poke">Poke</button>', page)
    assert 'data-action="odd">Odd</button>' in page and "onclick" not in page   # a kind that is no name: "action"
    assert '<h2 class="h6">About this account</h2>' in page
    assert '<p id="probe-about">Acme &lt;Ltd&gt;</p>' in page
    contact = rt.records.create("contact", {"last_name": "Lovelace", "account": acme["id"]}, context=SYSTEM)
    other = text(site.browser(site.admin).get(f"/ui/contact/{contact['id']}"))
    assert "data-probe=" not in other and "About this contact" in other


def test_crm_record_lock_makes_a_record_read_only_on_its_screens(probed):
    _, rt = probed
    site = make_site(rt, seeded=False)
    frozen = rt.records.create("account", {"name": "Frozen <Co>"}, context=SYSTEM)
    other = rt.records.create("account", {"name": "Thawed"}, context=SYSTEM)
    admin = site.browser(site.admin)
    page = text(admin.get(f"/ui/account/{frozen['id']}"))
    assert 'id="edit"' not in page
    assert '<span class="badge text-bg-secondary align-self-center" id="locked" title="Frozen &lt;by the probe&gt;">' in page
    r = admin.get(f"/ui/account/{frozen['id']}/edit")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/ui/account/{frozen['id']}")
    assert "Frozen &lt;by the probe&gt;" in text(admin.get(r.headers["Location"]))    # the reason, as a message
    assert 'id="edit"' in text(admin.get(f"/ui/account/{other['id']}"))              # other records: as before
    assert admin.get(f"/ui/account/{other['id']}/edit").status_code == 200


def test_crm_list_actions_post_the_selected_records_of_a_list(probed):
    _, rt = probed
    site = make_site(rt, seeded=False)
    acme = rt.records.create("account", {"name": "Acme"}, context=SYSTEM)
    page = text(site.browser(site.admin).get("/ui/account"))
    form = page[page.index('<form method="post" action="/ui/account/_bulk" id="bulk-form">'):page.index("</form>",
                                                                                                        page.index('id="bulk-form"'))]
    # a submit button of the list's selection form: the ticked ids and the CSRF token go to the plugin's route
    assert ('<button class="btn btn-sm btn-outline-primary probe" type="submit" formaction="/ui/_probe" '
            'data-probe="tag">Tag &lt;them&gt;</button>') in form
    assert f'name="ids" value="{acme["id"]}"' in form
    assert "data-probe=" not in text(site.browser(site.admin).get("/ui/contact"))     # other entities: none
    viewer = site.user("viewer@example.com", "standard", name="Vi Viewer")
    assert "data-probe=" not in text(site.browser(viewer).get("/ui/account"))         # the plugin said no


def test_the_workflows_transition_buttons_are_its_record_actions(crm):
    """A transition with no required fields is a form that takes it; one that requires fields is a
    link to the screen asking for them (tests/test_ui_pages.py takes both)."""
    from datetime import date, timedelta

    site = make_site(crm, seeded=False)
    account = crm.records.create("account", {"name": "Acme"}, context=SYSTEM)
    opp = crm.records.create("opportunity", {"name": "Deal", "account": account["id"],
                                             "close_date": date.today() + timedelta(days=30)}, context=SYSTEM)
    page = text(site.browser(site.admin).get(f"/ui/opportunity/{opp['id']}"))
    assert re.search(rf'<form method="post" action="/ui/opportunity/{opp["id"]}/transition/qualify">\s*'
                     r'<input type="hidden" name="csrf_token" value="[^"]+"><input type="hidden" name="version" '
                     r'value="1">\s*<button class="btn btn-outline-primary btn-sm transition" type="submit" '
                     r'data-transition="qualify">Qualify</button>', page)
    assert (f'<a class="btn btn-outline-primary btn-sm transition" href="/ui/opportunity/{opp["id"]}/transition/lose" '
            'data-transition="lose">Close as lost</a>') in page
