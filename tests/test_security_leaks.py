"""A hidden field, and a record out of scope, looked for through every path: never found.

A site layer adds ``opportunity.secret_note`` (searchable, tracked) and a role ``spy`` that may
not read it and sees only its own opportunities. The value of the field, and the name of the other
user's opportunity, are unique strings that must not appear in any answer the spy gets.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.security.tokens import create_token
from engine.storage.records import Context

SECRET = "ZQXJ-SECRET-7781"
OUTSIDE = "OUTSIDE-DEAL-9931"
SYSTEM = Context(system=True)

SITE = {
    "opportunity.yaml": """
        entity: opportunity
        fields:
          secret_note: {type: text, max_length: 80, searchable: true, track_history: true}
          secret_double: {type: formula, returns: text, expr: "secret_note & secret_note"}
    """,
    "roles.yaml": """
        role: spy
        entities:
          opportunity:
            allow: [read, create, update, export, import]
            scope: own
            fields: {secret_note: none, probability: read}
          account: {allow: [read]}
          contract: {allow: [read]}
          user: {allow: [read]}
    """,
}


@pytest.fixture
def spy(make_runtime, write_tree):
    from engine.app import create_app

    rt = make_runtime(site_dir=write_tree("site", SITE))
    me = rt.records.create("user", {"name": "Spy", "email": "spy@example.com", "role": "spy"}, context=SYSTEM)
    other = rt.records.create("user", {"name": "Other", "email": "other@example.com", "role": "sales"}, context=SYSTEM)
    acc = rt.records.create("account", {"name": "Acme"}, context=SYSTEM)
    mine = rt.records.create("opportunity", {"name": "My deal", "account": acc["id"], "close_date": "2027-01-31",
                                             "secret_note": "first", "owner_id": me["id"]}, context=SYSTEM)
    rt.records.update("opportunity", mine["id"], {"secret_note": SECRET}, context=SYSTEM)   # history of it
    theirs = rt.records.create("opportunity", {"name": OUTSIDE, "account": acc["id"], "close_date": "2027-01-31",
                                               "owner_id": other["id"], "secret_note": SECRET}, context=SYSTEM)
    rt.records.update("opportunity", theirs["id"], {"next_step": OUTSIDE}, context=SYSTEM)
    contract = rt.records.create("contract", {"name": "C", "account": acc["id"], "opportunity": theirs["id"],
                                              "start_date": "2027-01-01"},
                                 context=SYSTEM)
    _, token = create_token(rt.records, me["id"], "spy")
    client = create_app(runtime=rt).test_client()
    return rt, client, {"Authorization": f"Bearer {token}"}, mine, theirs, contract


def test_the_hidden_field_and_the_other_record_never_appear(spy):
    rt, client, auth, mine, theirs, contract = spy
    seen = []

    def get(url):
        r = client.get(url, headers=auth)
        seen.append((url, r.status_code, r.get_data(as_text=True)))
        return r

    assert get(f"/api/v1/opportunity/{mine['id']}").status_code == 200
    assert "secret_note" not in get(f"/api/v1/opportunity/{mine['id']}").json
    assert "secret_double" not in get(f"/api/v1/opportunity/{mine['id']}").json   # derived from it: hidden too
    assert [r["id"] for r in get("/api/v1/opportunity?count=true").json["data"]] == [mine["id"]]
    assert get("/api/v1/opportunity?count=true").json["total"] == 1
    assert get(f"/api/v1/opportunity/{mine['id']}/history").status_code == 200
    assert get(f"/api/v1/opportunity/{theirs['id']}").status_code == 404
    assert get(f"/api/v1/opportunity/{theirs['id']}/history").status_code == 404
    assert get(f"/api/v1/opportunity/{theirs['id'] + 1000}").status_code == 404   # the same as one that exists
    assert get("/api/v1/opportunity/_export").status_code == 200
    assert get(f"/api/v1/_search?q={SECRET[:8]}").json["data"] == []
    assert get(f"/api/v1/_search?q={OUTSIDE[:10]}").json["data"] == []
    assert get("/api/v1/_search?q=My deal").json["data"][0]["id"] == mine["id"]
    expanded = get("/api/v1/contract?expand=opportunity").json["data"]
    assert expanded[0]["opportunity"] == theirs["id"]           # a bare id: no more than the lookup says
    assert get("/api/v1/_meta/opportunity").status_code == 200
    for url in ("/api/v1/opportunity?secret_note=x", f"/api/v1/opportunity?secret_note={SECRET}",
                "/api/v1/opportunity?secret_note[contains]=Z", "/api/v1/opportunity?secret_note[gt]=a",
                "/api/v1/opportunity?secret_note[isnull]=true", "/api/v1/opportunity?sort=secret_note",
                "/api/v1/opportunity?sort=-secret_note", "/api/v1/opportunity?fields=name,secret_note",
                "/api/v1/opportunity?fields=secret_double", f"/api/v1/opportunity?where=secret_note = '{SECRET}'",
                "/api/v1/opportunity?where=LEN(secret_note) > 3", "/api/v1/opportunity?where=secret_double = 'x'",
                "/api/v1/contract?where=opportunity.secret_note = 'x'", "/api/v1/contract?where=opportunity.name = 'x'",
                "/api/v1/opportunity/_export?secret_note=x", "/api/v1/opportunity/_export?sort=secret_note"):
        r = get(url)
        assert r.status_code == 400, (url, r.status_code)
        assert "not permitted" in r.json["detail"] or "unknown" in r.json["detail"], r.json
    # the refusal is the same whether the hidden value matches or not: nothing to learn from it
    assert get("/api/v1/opportunity?where=secret_note = 'nope'").json == \
        get(f"/api/v1/opportunity?where=secret_note = '{SECRET}'").json
    for url, status, body in seen:
        assert SECRET not in body and OUTSIDE not in body, (url, status, body[:300])
        assert status != 200 or "secret_" not in body, (url, body[:300])   # not even the name, where it is not asked


def test_writes_to_hidden_and_out_of_scope_records_are_refused(spy):
    rt, client, auth, mine, theirs, _ = spy
    r = client.patch(f"/api/v1/opportunity/{mine['id']}", json={"secret_note": "overwrite"}, headers=auth)
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "secret_note"
    r = client.patch(f"/api/v1/opportunity/{mine['id']}", json={"probability": 90}, headers=auth)
    assert r.status_code == 422 and r.json["errors"][0]["code"] == "forbidden"
    assert client.patch(f"/api/v1/opportunity/{theirs['id']}", json={"name": "x"}, headers=auth).status_code == 404
    assert client.delete(f"/api/v1/opportunity/{mine['id']}", headers=auth).status_code == 403
    bulk = client.post("/api/v1/opportunity/_bulk", headers=auth, json={
        "mode": "update", "atomic": False, "records": [{"id": theirs["id"], "name": "hijacked"},
                                                       {"id": mine["id"], "secret_note": "x"}]})
    assert [i["status"] for i in bulk.json["items"]] == ["error", "error"]
    assert bulk.json["items"][0]["errors"][0]["code"] == "not_found"
    assert OUTSIDE not in bulk.get_data(as_text=True) and SECRET not in bulk.get_data(as_text=True)
    stored = rt.records.get("opportunity", theirs["id"])
    assert stored["name"] == OUTSIDE and stored["secret_note"] == SECRET
    assert rt.records.get("opportunity", mine["id"])["secret_note"] == SECRET


ATTACKS = ["' OR 1=1 --", "x'; DROP TABLE account; --", "1) OR (1=1", "\"; DELETE FROM account; --",
           "%' OR '%'='", "1 UNION SELECT password_hash FROM _crm_credential"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_sql_injection_in_every_filter_and_sort_parameter_does_nothing(api, attack):
    from urllib.parse import quote

    for name in ("Acme", "Globex"):
        assert api.post("/api/v1/account", json={"name": name}).status_code == 201
    a = quote(attack)
    urls = [f"/api/v1/account?name={a}", f"/api/v1/account?name[ne]={a}", f"/api/v1/account?name[contains]={a}",
            f"/api/v1/account?name[startswith]={a}", f"/api/v1/account?name[in]={a}", f"/api/v1/account?name[gt]={a}",
            f"/api/v1/account?employees={a}", f"/api/v1/account?employees[in]={a}", f"/api/v1/account?type={a}",
            f"/api/v1/account?created_at[gte]={a}", f"/api/v1/account?id={a}", f"/api/v1/account?{a}=1",
            f"/api/v1/account?name[{a}]=1", f"/api/v1/account?sort={a}", f"/api/v1/account?sort=-{a}",
            f"/api/v1/account?sort=name,{a}", f"/api/v1/account?fields={a}", f"/api/v1/account?expand={a}",
            f"/api/v1/account?where={a}", f"/api/v1/account?where=name = '{a}'", f"/api/v1/account?cursor={a}",
            f"/api/v1/account/_export?name={a}", f"/api/v1/account/_export?sort={a}", f"/api/v1/_search?q={a}",
            f"/api/v1/_audit?kind={a}"]
    for url in urls:
        r = api.get(url)
        assert r.status_code in (200, 400), (url, r.status_code)
        if r.status_code == 200 and r.is_json and "data" in r.json and "?q=" not in url and "_audit" not in url:
            assert all(row.get("name") in (None, attack) for row in r.json["data"] if "name" in row) or \
                "[ne]" in url or "[gt]" in url, (url, r.json)
    with api.rt.db.read() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM account")).scalar() == 2
        assert conn.execute(sa.text("SELECT COUNT(*) FROM _crm_credential")).scalar() >= 0


def _ui_login(rt, client, email):
    import re

    from engine.security.passwords import set_password

    user_id = rt.records.query("user", where={"email": email})[0]["id"]
    set_password(rt.records, user_id, "a-long-test-password")
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"email": email, "password": "a-long-test-password",
                                       "csrf_token": token}).status_code == 302
    # the login starts a new session with a new CSRF token: every page carries it
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def test_the_web_ui_never_shows_the_hidden_field_or_the_other_record(spy):
    rt, client, _auth, mine, theirs, contract = spy
    csrf = _ui_login(rt, client, "spy@example.com")
    account = mine["account"]
    seen = []

    def fetch(url, method="get", **kwargs):
        r = getattr(client, method)(url, **kwargs)
        seen.append((url, r.status_code, r.get_data(as_text=True)))
        return r

    for url in ("/", "/ui/opportunity", f"/ui/opportunity/{mine['id']}", f"/ui/opportunity/{mine['id']}/edit",
                "/ui/opportunity/new", "/ui/opportunity/kanban", f"/ui/account/{account}", f"/ui/contract/{contract['id']}",
                "/ui/contract", "/ui/dashboards/sales", "/ui/search?q=My deal"):
        assert fetch(url).status_code == 200, url
    assert "My deal" in seen[1][2]
    for url in (f"/ui/opportunity/{theirs['id']}", f"/ui/opportunity/{theirs['id']}/edit"):
        assert fetch(url).status_code == 404, url
    # looking for them through search, filters, sorts, the filter builder and the type-ahead: these
    # pages echo what the user typed, so they are checked for what they found, not for the words
    probes = {f"/ui/search?q={SECRET[:8]}": "Nothing found", f"/ui/search?q={OUTSIDE[:10]}": "Nothing found",
              f"/ui/opportunity?where=secret_note = '{SECRET}'": "not permitted",
              "/ui/opportunity?where=LEN(secret_note) > 3": "not permitted",
              "/ui/opportunity?sort=secret_note": "not permitted",
              f"/ui/opportunity?where=name = '{OUTSIDE}'": "No records."}
    for url, expected in probes.items():
        r = client.get(url)
        body = r.get_data(as_text=True)
        assert r.status_code == 200 and expected in body, (url, body[-2000:])
        assert "My deal" not in body and f"/ui/opportunity/{theirs['id']}" not in body, url
    built = client.get("/ui/opportunity?ff=secret_note&fo=eq&fv=x")
    assert built.status_code == 302 and "secret_note" not in built.location.split("problem=")[0], built.location
    assert fetch(f"/ui/opportunity/_lookup?q={OUTSIDE[:10]}").json == []
    state = fetch("/ui/opportunity/_form_state", "post", json={"id": mine["id"], "values": {"secret_note": SECRET}},
                  headers={"X-CSRF-Token": csrf})
    assert state.status_code == 200
    # a hidden field sent in a form is not written; the other user's record cannot be changed
    fetch(f"/ui/opportunity/{mine['id']}/edit", "post",
          data={"csrf_token": csrf, "version": "2", "name": "My deal", "secret_note": "overwritten"})
    assert rt.records.get("opportunity", mine["id"])["secret_note"] == SECRET
    fetch("/ui/opportunity/_bulk", "post", data={"csrf_token": csrf, "action": "update", "field": "next_step",
                                                  "value": "hijacked", "ids": [str(theirs["id"])]})
    assert rt.records.get("opportunity", theirs["id"])["next_step"] == OUTSIDE
    assert fetch(f"/ui/opportunity/{theirs['id']}/_move", "post", json={"to": "qualification"},
                 headers={"X-CSRF-Token": csrf}).status_code == 404
    for url, status, body in seen:
        assert SECRET not in body and OUTSIDE not in body, (url, status, body[:300])
        assert "secret_note" not in body and "Secret note" not in body, (url, body[:300])
