"""Duplicate rules through the API and the web UI: a 409 with the candidates, the override of a
warning (audited) and a block that holds, bulk rows, the form that shows the candidates with links
and "Save anyway", and the scan's API and page limited to the records the user may read."""

from __future__ import annotations

import pytest

from engine.security.audit import query_audit
from engine.storage.records import Context

pytest.register_assert_rewrite("tests.ui_kit")
from tests.ui_kit import make_site

SYSTEM = Context(system=True, automations=False)
BLOCK = """
duplicate_rule: lead_email_block
of: lead
label: {en: Same e-mail, zh: 相同邮箱}
conditions: [{field: email, by: email}]
action: block
"""


# -- API -----------------------------------------------------------------------------------------
def test_a_warning_answers_409_with_the_candidates_and_the_override_is_audited(api):
    first = api.post("/api/v1/account", json={"name": "ACME Trading Ltd"}).get_json()
    r = api.post("/api/v1/account", json={"name": "Acme Trading"})
    assert r.status_code == 409, r.get_json()
    body = r.get_json()
    assert body["type"].endswith("duplicate") and body["action"] == "warn" and body["overridable"] is True
    assert body["candidates"] == [{"entity": "account", "id": first["id"], "title": "ACME Trading Ltd",
                                   "rule": "account_name", "score": 1.0, "action": "warn",
                                   "rule_label": {"en": "Similar account name", "zh": "相似的客户名称"}}]
    assert "X-CRM-Duplicates: allow" in body["detail"]
    assert body["errors"][0]["code"] == "duplicate" and body["errors"][0]["field"] == "name"
    assert len(api.get("/api/v1/account").get_json()["data"]) == 1          # nothing written

    saved = api.post("/api/v1/account", json={"name": "Acme Trading"}, headers={"X-CRM-Duplicates": "allow"})
    assert saved.status_code == 201, saved.get_json()
    again = api.post("/api/v1/account?duplicates=allow", json={"name": "ACME trading co."})
    assert again.status_code == 201
    rows = query_audit(api.rt.records, kind="duplicate_override")
    assert {r["record_id"] for r in rows} == {saved.get_json()["id"], again.get_json()["id"]}
    assert rows[-1]["actor_id"] == api.user["id"] and rows[-1]["detail"]["candidates"][0]["id"] == first["id"]

    assert api.post("/api/v1/account", json={"name": "x"}, headers={"X-CRM-Duplicates": "sure"}).status_code == 400
    # an update that makes a record like another is checked too
    other = api.post("/api/v1/account", json={"name": "Globex"}).get_json()
    r = api.patch(f"/api/v1/account/{other['id']}", json={"name": "ACME Trading"})
    assert r.status_code == 409 and {c["id"] for c in r.get_json()["candidates"]} >= {first["id"]}


def test_a_block_holds_through_the_api_even_with_the_override(make_runtime, write_tree):
    from engine.app import create_app
    from engine.security.tokens import create_token

    rt = make_runtime(site_dir=write_tree("site", {"block.yaml": BLOCK}))
    user = rt.records.create("user", {"name": "Api", "email": "api@example.com", "role": "admin"}, context=SYSTEM)
    _, token = create_token(rt.records, user["id"], "tests")
    client = create_app(runtime=rt).test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/lead", json={"last_name": "A", "company": "A", "email": "a@x.com"}, headers=auth).status_code == 201
    for headers in (auth, {**auth, "X-CRM-Duplicates": "allow"}):
        r = client.post("/api/v1/lead", json={"last_name": "B", "company": "B", "email": " A@X.com"}, headers=headers)
        assert r.status_code == 409 and r.get_json()["action"] == "block" and r.get_json()["overridable"] is False
    # bulk: the duplicate row fails on its own, with the same message
    r = client.post("/api/v1/lead/_bulk", headers=auth, json={"mode": "create", "atomic": False, "records": [
        {"last_name": "C", "company": "C", "email": "c@x.com"}, {"last_name": "D", "company": "D", "email": "a@x.com"}]})
    items = r.get_json()["items"]
    assert items[0]["status"] == "created" and items[1]["status"] == "error"
    assert items[1]["errors"][0]["code"] == "duplicate" and "looks like a duplicate of A" in items[1]["errors"][0]["message"]


def test_scan_api_lists_groups_in_the_callers_scope(api):
    a = [api.post("/api/v1/lead?duplicates=allow", json={"last_name": f"L{i}", "company": "Co", "email": "same@x.com"})
         .get_json()["id"] for i in range(3)]
    api.post("/api/v1/lead", json={"last_name": "Solo", "company": "Co", "email": "solo@x.com"})
    body = api.get("/api/v1/_duplicates/lead").get_json()
    assert body["total"] == 1, body
    assert body["data"][0]["rule"] == "lead_email" and [r["id"] for r in body["data"][0]["records"]] == a
    assert body["data"][0]["records"][0]["title"] == "L0"
    assert api.get("/api/v1/_duplicates/lead?rule=nope").status_code == 400
    assert api.get("/api/v1/_duplicates/nope").status_code == 404
    assert api.get("/api/v1/_duplicates/lead?limit=0").status_code == 400


# -- UI ------------------------------------------------------------------------------------------
@pytest.fixture
def site(crm):
    return make_site(crm, seeded=False)


def test_the_form_shows_the_candidates_and_saves_anyway(site):
    rep = site.sales
    mine = site.records.create("lead", {"last_name": "Zhang", "company": "华为技术有限公司", "email": "zhang@hw.cn",
                                        "owner_id": rep["id"]}, context=SYSTEM)
    far = site.user("far@example.com", "sales", team="far-away")
    site.records.create("lead", {"last_name": "Hidden", "company": "X", "email": "zhang@hw.cn", "owner_id": far["id"]},
                        context=SYSTEM)
    b = site.browser(rep)
    form = {"last_name": "Zhang San", "company": "华为技术", "email": "ZHANG@hw.cn", "owner_id": str(rep["id"])}
    r = b.post("/ui/lead/new", form)
    page = r.get_data(as_text=True)
    assert r.status_code == 409
    assert 'id="duplicates"' in page and f'href="/ui/lead/{mine["id"]}"' in page and ">Zhang</a>" in page
    assert "Hidden" not in page and "1 more you may not see" in page and "Same lead e-mail" in page
    assert 'id="save-anyway"' in page and 'value="ZHANG@hw.cn"' in page     # typed values kept
    r = b.post("/ui/lead/new", {**form, "_duplicates": "allow"})
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    new_id = int(r.headers["Location"].rstrip("/").split("/")[-1])
    assert [a["record_id"] for a in query_audit(site.records, kind="duplicate_override")] == [new_id]


def test_the_edit_form_shows_a_block_without_save_anyway(make_runtime, write_tree):
    rt = make_runtime(site_dir=write_tree("site", {"block.yaml": BLOCK}))
    site = make_site(rt, seeded=False)
    a = site.records.create("lead", {"last_name": "A", "company": "A", "email": "a@x.com"}, context=SYSTEM)
    b = site.records.create("lead", {"last_name": "B", "company": "B", "email": "b@x.com"}, context=SYSTEM)
    admin = site.browser(site.admin)
    page = admin.get(f"/ui/lead/{b['id']}/edit").get_data(as_text=True)
    import re
    loaded = re.search(r'name="_loaded" value="([^"]*)"', page).group(1)
    import html
    r = admin.post(f"/ui/lead/{b['id']}/edit", {"last_name": "B", "company": "B", "email": "A@x.com", "version": "1",
                                                "_loaded": html.unescape(loaded), "_duplicates": "allow"})
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and "cannot be saved" in page and f'/ui/lead/{a["id"]}' in page
    assert 'id="save-anyway"' not in page
    assert site.records.get("lead", b["id"])["email"] == "b@x.com"


def test_the_scan_page_lists_groups_with_merge_links_in_scope(site):
    rep = site.sales
    far = site.user("far@example.com", "sales", team="far-away")
    ids = [site.records.create("account", {"name": n, "owner_id": rep["id"]}, context=SYSTEM)["id"]
           for n in ("Initech GmbH", "INITECH", "Umbrella")]
    hidden = site.records.create("account", {"name": "Initech Ltd", "owner_id": far["id"]}, context=SYSTEM)["id"]
    page = site.browser(site.admin).get("/ui/duplicates/account").get_data(as_text=True)
    assert f'data-ids="{ids[0]},{ids[1]},{hidden}"' in page
    assert f'href="/ui/account/merge?ids={ids[0]},{ids[1]},{hidden}"' in page and "Similar account name" in page
    b = site.browser(rep)
    r = b.get("/ui/duplicates/account")
    page = r.get_data(as_text=True)
    assert r.status_code == 200 and f'data-ids="{ids[0]},{ids[1]}"' in page and "Initech Ltd" not in page
    assert "Duplicate accounts" in b.get("/").get_data(as_text=True)            # the navigation entry
    assert b.get("/ui/duplicates/opportunity").status_code == 404               # no rules there
