"""Faults of security: forged form posts carrying an ``Authorization`` header, redirects out of the
site after the login, links to records the caller may not read, ``visible_when`` values sent anyway,
creates and deletes nobody recorded, and a session cookie copied before the logout.

Each test drives the real app (Flask test client, real database) as a user of the base CRM and
checks what that user sees: the status, the problem+json or the page, and what the database holds.
"""

from __future__ import annotations

import re
from base64 import b64encode
from datetime import date, timedelta
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa

from engine.security.passwords import set_password
from engine.security.tokens import create_token
from engine.storage.records import Context

from ..ui_kit import PASSWORD, Browser

SYSTEM = Context(system=True)
MISSING = 987654321
CLOSE = (date.today() + timedelta(days=30)).isoformat()


def _user(rt, email: str, role: str, team: str | None = None, **values) -> dict:
    user = rt.records.create("user", {"name": email.split("@")[0], "email": email, "role": role, "team": team,
                                      **values}, context=SYSTEM)
    set_password(rt.records, user["id"], PASSWORD)
    return user


def _bearer(rt, user: dict) -> dict:
    return {"Authorization": f"Bearer {create_token(rt.records, user['id'], 'faults')[1]}"}


def _count(rt, entity: str) -> int:
    table = rt.records.table(entity)
    with rt.db.read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def _healthy(api) -> None:
    assert api.client.get("/health").status_code == 200


# -- CSRF is decided by how the request is authenticated ------------------------------------------

@pytest.mark.parametrize("header", ["Basic " + b64encode(b"sam@example.com:" + PASSWORD.encode()).decode(),
                                    "Bearer crm_not-a-token", "Negotiate YIIJvwYGKwYBBQUCoIIJszCCCa"])
def test_a_ui_form_post_with_an_authorization_header_and_no_csrf_token_is_refused(api, header):
    sam = _user(api.rt, "sam@example.com", "sales", "north")
    browser = Browser(api.app).login(sam["email"])
    before = _count(api.rt, "account")
    r = browser.client.post("/ui/account/new", data={"name": "Forged Ltd"}, headers={"Authorization": header})
    assert r.status_code == 403 and "CSRF token missing or invalid" in r.get_data(as_text=True)
    r = browser.client.post("/api/v1/account", json={"name": "Forged Ltd"}, headers={"Authorization": header})
    assert r.status_code in (401, 403) and r.mimetype == "application/problem+json"
    assert _count(api.rt, "account") == before
    assert browser.post("/ui/account/new", {"name": "Real Ltd"}).status_code == 302   # with the token it works
    _healthy(api)


def test_a_valid_bearer_token_exempts_an_api_call_but_never_a_screen(api):
    sam = _user(api.rt, "sam@example.com", "sales", "north")
    browser = Browser(api.app).login(sam["email"])
    auth = _bearer(api.rt, sam)
    r = browser.client.post("/api/v1/account", json={"name": "By token"}, headers=auth)
    assert r.status_code == 201
    r = browser.client.post("/ui/account/new", data={"name": "Forged by form"}, headers=auth)
    assert r.status_code == 403
    assert not api.rt.records.query("account", where={"name": "Forged by form"})


# -- redirects after the login stay on the site ---------------------------------------------------

EVIL = ["/\t/evil.example/", "/\n/evil.example/", "/\r\n/evil.example/", "/\\evil.example/", "\\\\evil.example/",
        "//evil.example/", "///evil.example/", "https://evil.example/", "javascript:alert(1)", " //evil.example/",
        "\x00//evil.example/", "/%2F/evil.example/", "%2F%2Fevil.example/", "/%09/evil.example/",
        "/%5Cevil.example/", "http:evil.example", "/ui/x\r\nSet-Cookie: a=b", "evil.example"]


def _lands_on_site(location: str) -> bool:
    read = "".join(ch for ch in location if ch >= " " and ch != "\x7f").replace("\\", "/").strip()
    parts = urlsplit(read)
    return parts.netloc in ("", "localhost") and not parts.path.startswith("//") and parts.scheme in ("", "http")


@pytest.mark.parametrize("target", EVIL)
def test_the_login_never_redirects_off_the_site_and_never_fails(api, target):
    _user(api.rt, "sam@example.com", "sales", "north")
    client = api.app.test_client()
    page = client.get("/login?next=" + quote(target, safe=""))
    assert page.status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    r = client.post("/login", data={"email": "sam@example.com", "password": PASSWORD, "csrf_token": csrf,
                                    "next": target})
    assert r.status_code == 302
    location = r.headers["Location"]
    assert _lands_on_site(location) and "evil" not in location.lower(), location
    assert "\n" not in location and "\r" not in location
    _healthy(api)


def test_a_path_of_the_site_is_kept_as_the_place_to_go_after_the_login(api):
    _user(api.rt, "sam@example.com", "sales", "north")
    client = api.app.test_client()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    r = client.post("/login", data={"email": "sam@example.com", "password": PASSWORD, "csrf_token": csrf,
                                    "next": "/ui/account?sort=-name"})
    assert r.status_code == 302 and urlsplit(r.headers["Location"])[2:4] == ("/ui/account", "sort=-name")


# -- links only to records the caller may read ----------------------------------------------------

@pytest.fixture
def linking(api):
    """Sam (sales, team north, reads no case) and Max (manager, no reports); Olga's account of team
    south, which neither may see; a case; Sam's own account and opportunity."""
    rt = api.rt
    sam = _user(rt, "sam@example.com", "sales", "north")
    max_ = _user(rt, "max@example.com", "manager", "north")
    olga = _user(rt, "olga@example.com", "sales", "south")
    theirs = rt.records.create("account", {"name": "Olga's account", "owner_id": olga["id"]}, context=SYSTEM)
    case = rt.records.create("case", {"subject": "Secret case"}, context=SYSTEM)
    mine = rt.records.create("account", {"name": "Sam's account", "owner_id": sam["id"]}, context=SYSTEM)
    deal = rt.records.create("opportunity", {"name": "Sam's deal", "account": mine["id"], "close_date": CLOSE,
                                             "owner_id": sam["id"]}, context=SYSTEM)
    return {"sam": sam, "max": max_, "theirs": theirs, "case": case, "mine": mine, "deal": deal}


def _same_answer(invisible, missing, invisible_id: int) -> None:
    """The answer for an invisible target is the answer for a missing one, the id aside."""
    assert invisible.status_code == missing.status_code == 422
    assert invisible.mimetype == missing.mimetype == "application/problem+json"
    body = invisible.get_data(as_text=True).replace(str(invisible_id), "N")
    assert body == missing.get_data(as_text=True).replace(str(MISSING), "N")


def _snapshot(rt, entity: str) -> list:
    table = rt.records.table(entity)
    with rt.db.read() as conn:
        return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def test_post_with_a_lookup_to_an_out_of_scope_record_answers_as_for_a_missing_one(api, linking):
    auth = _bearer(api.rt, linking["sam"])
    before = _count(api.rt, "opportunity")
    body = {"name": "Poke", "close_date": CLOSE}
    invisible = api.client.post("/api/v1/opportunity", json={**body, "account": linking["theirs"]["id"]}, headers=auth)
    missing = api.client.post("/api/v1/opportunity", json={**body, "account": MISSING}, headers=auth)
    _same_answer(invisible, missing, linking["theirs"]["id"])
    assert invisible.json["errors"][0]["field"] == "account"
    assert _count(api.rt, "opportunity") == before
    ok = api.client.post("/api/v1/opportunity", json={**body, "account": linking["mine"]["id"]}, headers=auth)
    assert ok.status_code == 201


def test_a_reference_to_an_entity_the_role_cannot_read_answers_as_for_a_missing_record(api, linking):
    auth = _bearer(api.rt, linking["sam"])
    cases = _snapshot(api.rt, "case")
    before = _count(api.rt, "activity")
    body = {"subject": "Probe", "type": "task", "status": "not_started"}
    invisible = api.client.post("/api/v1/activity", json={**body, "related_to": f"case:{linking['case']['id']}"},
                                headers=auth)
    missing = api.client.post("/api/v1/activity", json={**body, "related_to": f"case:{MISSING}"}, headers=auth)
    _same_answer(invisible, missing, linking["case"]["id"])
    assert invisible.json["errors"][0]["field"] == "related_to"
    assert _count(api.rt, "activity") == before and _snapshot(api.rt, "case") == cases   # nothing touched


def test_patch_to_an_out_of_scope_record_answers_as_for_a_missing_one_and_writes_nothing(api, linking):
    auth = _bearer(api.rt, linking["sam"])
    deal = linking["deal"]
    invisible = api.client.patch(f"/api/v1/opportunity/{deal['id']}", json={"account": linking["theirs"]["id"]},
                                 headers=auth)
    missing = api.client.patch(f"/api/v1/opportunity/{deal['id']}", json={"account": MISSING}, headers=auth)
    _same_answer(invisible, missing, linking["theirs"]["id"])
    stored = api.rt.records.get("opportunity", deal["id"])
    assert stored["account"] == linking["mine"]["id"] and stored["version"] == deal["version"]


def test_bulk_rows_linking_out_of_scope_records_fail_like_missing_ones(api, linking):
    auth = _bearer(api.rt, linking["max"])
    mine = api.rt.records.create("account", {"name": "Max's account", "owner_id": linking["max"]["id"]}, context=SYSTEM)
    before = _count(api.rt, "opportunity")
    rows = [{"name": "Fine", "close_date": CLOSE, "account": mine["id"]},
            {"name": "Probe", "close_date": CLOSE, "account": linking["theirs"]["id"]},
            {"name": "Missing", "close_date": CLOSE, "account": MISSING}]
    r = api.client.post("/api/v1/opportunity/_bulk", json={"mode": "create", "atomic": False, "records": rows},
                        headers=auth)
    assert r.status_code in (200, 207, 422), r.get_data(as_text=True)
    items = r.json["items"]
    assert items[0]["status"] == "created"
    assert items[1]["status"] == items[2]["status"] == "error"
    invisible = [(e["field"], e["code"], e["message"].replace(str(linking["theirs"]["id"]), "N"))
                 for e in items[1]["errors"]]
    missing = [(e["field"], e["code"], e["message"].replace(str(MISSING), "N")) for e in items[2]["errors"]]
    assert invisible == missing and invisible[0][0] == "account"
    assert _count(api.rt, "opportunity") == before + 1


def test_the_ui_form_links_only_to_readable_records(api, linking):
    browser = Browser(api.app).login(linking["sam"]["email"])
    before = _count(api.rt, "opportunity")
    form = {"name": "Form probe", "close_date": CLOSE, "stage": "prospecting"}
    invisible = browser.post("/ui/opportunity/new", {**form, "account": str(linking["theirs"]["id"])})
    missing = browser.post("/ui/opportunity/new", {**form, "account": str(MISSING)})
    assert invisible.status_code == missing.status_code == 422
    assert f"there is no account with id {linking['theirs']['id']}" in invisible.get_data(as_text=True)
    assert _count(api.rt, "opportunity") == before


def test_system_writes_still_link_freely(api, linking):
    made = api.rt.records.create("activity", {"subject": "By the engine", "related_to": f"case:{linking['case']['id']}"},
                                 context=Context(user_id=linking["sam"]["id"], system=True))
    assert made["related_to"].id == linking["case"]["id"]


# -- visible_when: a hidden field's value is not accepted ------------------------------------------

def _lost_reason(rt, record_id: int):
    return rt.records.get("opportunity", record_id)["lost_reason"]


def test_a_field_hidden_by_its_condition_is_not_stored_through_post_and_patch(api, linking):
    auth = _bearer(api.rt, linking["sam"])
    r = api.client.post("/api/v1/opportunity", headers=auth, json={
        "name": "Hidden", "close_date": CLOSE, "account": linking["mine"]["id"], "stage": "prospecting",
        "lost_reason": "price"})
    assert r.status_code == 201 and r.json.get("lost_reason") is None
    assert _lost_reason(api.rt, r.json["id"]) is None
    r = api.client.patch(f"/api/v1/opportunity/{linking['deal']['id']}", json={"lost_reason": "competitor"},
                         headers=auth)
    assert r.status_code == 200 and r.json.get("lost_reason") is None
    assert _lost_reason(api.rt, linking["deal"]["id"]) is None


def test_a_field_hidden_by_its_condition_is_not_stored_through_bulk_and_the_ui_form(api, linking):
    auth = _bearer(api.rt, linking["max"])
    mine = api.rt.records.create("account", {"name": "Max's account", "owner_id": linking["max"]["id"]}, context=SYSTEM)
    r = api.client.post("/api/v1/opportunity/_bulk", headers=auth, json={"mode": "create", "records": [
        {"name": "Bulk hidden", "close_date": CLOSE, "account": mine["id"], "lost_reason": "no_budget"}]})
    assert r.status_code in (200, 207), r.get_data(as_text=True)
    assert _lost_reason(api.rt, r.json["items"][0]["id"]) is None
    browser = Browser(api.app).login(linking["sam"]["email"])
    r = browser.post("/ui/opportunity/new", {"name": "Form hidden", "close_date": CLOSE, "stage": "prospecting",
                                             "account": str(linking["mine"]["id"]), "lost_reason": "price"})
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    made = api.rt.records.query("opportunity", where={"name": "Form hidden"})
    assert len(made) == 1 and made[0]["lost_reason"] is None


def test_a_value_is_cleared_when_its_condition_turns_false(api, linking):
    auth = _bearer(api.rt, linking["max"])
    mine = api.rt.records.create("account", {"name": "Max's account", "owner_id": linking["max"]["id"]}, context=SYSTEM)
    deal = api.client.post("/api/v1/opportunity", headers=auth, json={
        "name": "Lost one", "close_date": CLOSE, "account": mine["id"]}).json
    r = api.client.post(f"/api/v1/opportunity/{deal['id']}/transitions/lose", json={"lost_reason": "price"},
                        headers=auth)
    assert r.status_code == 200 and _lost_reason(api.rt, deal["id"]) == "price"   # shown while lost: kept
    r = api.client.post(f"/api/v1/opportunity/{deal['id']}/transitions/reopen", json={}, headers=auth)
    assert r.status_code == 200 and _lost_reason(api.rt, deal["id"]) is None


# -- creates and deletes are audited --------------------------------------------------------------

def test_a_non_admins_create_and_delete_leave_audit_rows(api, linking):
    sam = linking["sam"]
    auth = _bearer(api.rt, sam)
    lead = api.client.post("/api/v1/lead", json={"last_name": "Audited", "company": "Initech"}, headers=auth).json
    assert api.client.delete(f"/api/v1/lead/{lead['id']}", headers=auth).status_code == 204
    bulk = api.client.post("/api/v1/lead/_bulk", headers=auth, json={"mode": "create", "records": [
        {"last_name": "Bulk one", "company": "Initech"}, {"last_name": "Bulk two", "company": "Initech"}]})
    assert bulk.status_code in (200, 207), bulk.get_data(as_text=True)
    created = api.get(f"/api/v1/_audit?kind=record_created&user={sam['id']}").json["data"]
    assert {(a["entity"], a["record_id"]) for a in created} == {
        ("lead", lead["id"]), *(("lead", i["id"]) for i in bulk.json["items"])}
    deleted = api.get(f"/api/v1/_audit?kind=record_deleted&user={sam['id']}").json["data"]
    assert len(deleted) == 1 and deleted[0]["entity"] == "lead" and deleted[0]["record_id"] == lead["id"]
    assert deleted[0]["detail"]["values"]["last_name"] == "Audited" and deleted[0]["at"]


def test_a_refused_create_leaves_no_create_audit_row(api, linking):
    auth = _bearer(api.rt, linking["sam"])
    r = api.client.post("/api/v1/lead", json={"company": "No name"}, headers=auth)
    assert r.status_code == 422
    assert api.get("/api/v1/_audit?kind=record_created").json["data"] == []


# -- a copied session cookie dies with the session ------------------------------------------------

def _copy(browser: Browser, app):
    copy = app.test_client()
    copy.set_cookie("session", browser.client.get_cookie("session").value)
    return copy


def test_logout_ends_a_copied_session_cookie(api):
    sam = _user(api.rt, "sam@example.com", "sales", "north")
    browser = Browser(api.app).login(sam["email"])
    copy = _copy(browser, api.app)
    assert copy.get("/api/v1/lead").status_code == 200
    assert browser.post("/logout").status_code == 302
    assert copy.get("/api/v1/lead").status_code == 401
    assert copy.get("/ui/lead").status_code == 302
    assert Browser(api.app).login(sam["email"]).get("/api/v1/lead").status_code == 200   # a new login works


def test_a_password_change_ends_a_copied_session_cookie(api):
    sam = _user(api.rt, "sam@example.com", "sales", "north")
    copy = _copy(Browser(api.app).login(sam["email"]), api.app)
    assert copy.get("/api/v1/lead").status_code == 200
    set_password(api.rt.records, sam["id"], "a new password 2")
    assert copy.get("/api/v1/lead").status_code == 401


def test_disabling_a_user_ends_a_copied_session_cookie_for_good(api):
    sam = _user(api.rt, "sam@example.com", "sales", "north")
    copy = _copy(Browser(api.app).login(sam["email"]), api.app)
    assert copy.get("/api/v1/lead").status_code == 200
    assert api.patch(f"/api/v1/user/{sam['id']}", json={"active": False}).status_code == 200
    assert api.patch(f"/api/v1/user/{sam['id']}", json={"active": True}).status_code == 200
    assert copy.get("/api/v1/lead").status_code == 401
