"""The generated REST API on the base CRM: behaviour clients rely on."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from engine.security.tokens import create_token, revoke_token


def make_account(api, name="Acme", **values):
    r = api.post("/api/v1/account", json={"name": name, **values})
    assert r.status_code == 201, r.json
    return r.json


def make_opp(api, account, **values):
    if values.get("stage") == "lost":
        values.setdefault("lost_reason", "price")   # required when lost
    r = api.post("/api/v1/opportunity", json={"name": "Deal", "account": account["id"], "close_date": "2027-01-31",
                                              **values})
    assert r.status_code == 201, r.json
    return r.json


def test_requests_without_a_valid_token_get_401_problem_json(api):
    assert api.client.get("/api/v1/account").status_code == 401
    r = api.client.get("/api/v1/account", headers={"Authorization": "Bearer crm_nope"})
    assert r.status_code == 401 and r.mimetype == "application/problem+json"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    token_id, token = create_token(api.rt.records, api.user["id"], "short", days=1)
    assert api.client.get("/api/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    revoke_token(api.rt.records, token_id)
    assert api.client.get("/api/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    tokens = api.rt.records.metadata.tables["_crm_token"]
    with api.rt.db.write() as conn:
        conn.execute(tokens.update().values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert api.get("/api/v1/account").status_code == 401


def test_create_read_update_delete_with_location_and_etag(api):
    r = api.post("/api/v1/account", json={"name": "Acme", "annual_revenue": 1000.5})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/api/v1/account/{r.json['id']}" and r.headers["ETag"] == f'"{r.json["id"]}-1"'
    assert r.json["annual_revenue"] == "1000.50" and r.json["phone"] is None and r.json["owner_id"] == api.user["id"]
    got = api.get(r.headers["Location"])
    assert got.json == r.json and got.headers["ETag"] == r.headers["ETag"]
    patched = api.patch(r.headers["Location"], json={"phone": "+1 201 555 0100"}, headers={"If-Match": r.headers["ETag"]})
    assert patched.status_code == 200 and patched.json["version"] == 2 and patched.json["name"] == "Acme"
    assert api.delete(r.headers["Location"], headers={"If-Match": r.headers["ETag"]}).status_code == 412
    assert api.delete(r.headers["Location"], headers={"If-Match": patched.headers["ETag"]}).status_code == 204
    assert api.get(r.headers["Location"]).status_code == 404


def test_two_patches_with_the_same_etag_one_wins_one_gets_412(api):
    acc = make_account(api)
    etag = f'"{acc["id"]}-1"'
    statuses = []
    barrier = threading.Barrier(2)

    def patch(phone):
        client = api.app.test_client()
        barrier.wait()
        r = client.patch(f"/api/v1/account/{acc['id']}", json={"phone": phone}, headers={**api.headers, "If-Match": etag})
        statuses.append(r.status_code)

    threads = [threading.Thread(target=patch, args=(p,)) for p in ("+12015550001", "+12015550002")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 412]
    assert api.get(f"/api/v1/account/{acc['id']}").json["version"] == 2


def test_validation_errors_name_each_field_and_write_nothing(api):
    r = api.post("/api/v1/opportunity", json={"amount": "lots", "stage": "maybe", "close_date": "tomorrow"})
    assert r.status_code == 422 and r.mimetype == "application/problem+json"
    assert {e["field"]: e["code"] for e in r.json["errors"]} == {
        "amount": "type", "stage": "choice", "close_date": "format", "name": "required", "account": "required"}
    assert api.get("/api/v1/opportunity").json["data"] == []


@pytest.mark.parametrize("path, status, words", [
    ("/api/v1/spaceship", 404, "no entity 'spaceship'"),
    ("/api/v1/account?colour=red", 400, "no field 'colour'"),
    ("/api/v1/account?name[near]=x", 400, "unknown operator 'near'"),
    ("/api/v1/account?annual_revenue[gt]=lots", 400, "'lots' is not a number"),
    ("/api/v1/account?annual_revenue[contains]=1", 400, "contains applies to text"),
    ("/api/v1/account?sort=-colour", 400, "cannot sort by 'colour'"),
    ("/api/v1/account?limit=5000", 400, "limit must be"),
    ("/api/v1/account?cursor=garbage", 400, "cursor is not valid"),
    ("/api/v1/account?fields=name,colour", 400, "unknown field(s) in fields: colour"),
    ("/api/v1/account?expand=name", 400, "cannot expand 'name'"),
    ("/api/v1/account/99999999999999999999999", 404, "does not exist"),
    ("/api/v1/account/1/nothing/here", 404, ""),
])
def test_bad_queries_are_4xx_naming_the_cause(api, path, status, words):
    r = api.get(path)
    assert r.status_code == status and r.mimetype == "application/problem+json"
    assert words in r.json["detail"]


def test_bad_bodies_are_4xx(api):
    r = api.post("/api/v1/account", data="{bad", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json["detail"]
    r = api.post("/api/v1/account", data="name=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert api.post("/api/v1/account", json=[1, 2]).status_code == 400
    big = api.post("/api/v1/lead/_bulk", json={"records": [{}] * 10_001})
    assert big.status_code == 413 and "at most 10000" in big.json["detail"]


def test_filters_sort_fields_expand_and_count(api):
    acc = make_account(api, "Globex")
    for i, (stage, amount) in enumerate([("won", 500), ("won", 5000), ("lost", 7000), ("proposal", None)]):
        make_opp(api, acc, name=f"Deal {i} Acme" if i % 2 else f"Deal {i}", stage=stage, amount=amount)
    def names(query):
        r = api.get(f"/api/v1/opportunity?{query}")
        assert r.status_code == 200, r.json
        return [d["name"] for d in r.json["data"]]
    assert names("stage=won&amount[gte]=1000") == ["Deal 1 Acme"]
    assert names("name[contains]=acme&sort=name") == ["Deal 1 Acme", "Deal 3 Acme"]
    assert names("stage[in]=won,lost&sort=-amount") == ["Deal 2", "Deal 1 Acme", "Deal 0"]
    assert names("amount[isnull]=true") == ["Deal 3 Acme"]
    assert names("stage[ne]=won&sort=name") == ["Deal 2", "Deal 3 Acme"]
    assert names("name[startswith]=deal 2") == ["Deal 2"]
    assert names("sort=amount")[-1] == "Deal 3 Acme"          # blanks sort last
    r = api.get("/api/v1/opportunity?fields=name&expand=account,owner&count=true&limit=2&sort=name")
    first = r.json["data"][0]
    assert set(first) == {"id", "name", "account", "owner_id", "owner"}   # owner adds an object beside owner_id
    assert first["account"]["name"] == "Globex" and first["owner"]["email"] == "api@example.com"
    assert r.json["total"] == 4 and r.json["total_is_estimate"] is False and r.json["next_cursor"]


def test_keyset_pages_walk_every_row_once_in_order(api):
    rows = [{"last_name": f"L{i % 7}", "company": f"C{i}"} for i in range(53)]
    assert api.post("/api/v1/lead/_bulk", json={"records": rows}).status_code == 200
    seen, cursor = [], None
    while True:
        r = api.get(f"/api/v1/lead?sort=-last_name,company&limit=10" + (f"&cursor={cursor}" if cursor else ""))
        seen += [(d["last_name"], d["company"]) for d in r.json["data"]]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
    expected = sorted(((r["last_name"], r["company"]) for r in rows), key=lambda x: x[1])
    expected = sorted(expected, key=lambda x: x[0], reverse=True)
    assert seen == expected
    offset = api.get("/api/v1/lead?sort=-last_name,company&limit=10&offset=10").json["data"]
    assert [(d["last_name"], d["company"]) for d in offset] == expected[10:20]


@pytest.mark.parametrize("sort", ["city,company", "-city,company", "-city,-company", "employees,-company"])
def test_keyset_pages_with_blanks_in_the_sort_keys_match_the_offset_order(api, sort):
    rows = [{"last_name": "L", "company": f"C{i:02}", "city": None if i % 4 == 0 else f"T{i % 5}",
             "employees": None if i % 3 == 0 else i % 6} for i in range(41)]
    assert api.post("/api/v1/lead/_bulk", json={"records": rows}).status_code == 200
    walked, cursor = [], None
    while True:
        r = api.get(f"/api/v1/lead?sort={sort}&limit=7&fields=company" + (f"&cursor={cursor}" if cursor else ""))
        walked += [d["company"] for d in r.json["data"]]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
    by_offset = [d["company"] for d in api.get(f"/api/v1/lead?sort={sort}&limit=100&fields=company").json["data"]]
    assert walked == by_offset and len(set(walked)) == 41


def test_count_beyond_the_cap_is_marked_as_an_estimate(api, monkeypatch):
    import engine.storage.query as query
    monkeypatch.setattr(query, "COUNT_CAP", 5)
    api.post("/api/v1/lead/_bulk", json={"records": [{"last_name": "x", "company": f"c{i}"} for i in range(8)]})
    r = api.get("/api/v1/lead?count=true&limit=1")
    assert r.json["total_is_estimate"] is True and r.json["total"] >= 6
    assert api.get("/api/v1/lead?count=true&company=c1").json == {**api.get("/api/v1/lead?count=true&company=c1").json,
                                                                 "total": 1, "total_is_estimate": False}


def test_restricted_delete_is_409_naming_the_referencing_records(api):
    acc = make_account(api)
    opp = make_opp(api, acc)
    r = api.delete(f"/api/v1/account/{acc['id']}")
    assert r.status_code == 409 and r.json["references"] == [
        {"entity": "opportunity", "field": "account", "ids": [opp["id"]], "count": 1}]


def test_bulk_modes_atomic_and_per_item(api):
    ok = api.post("/api/v1/lead/_bulk", json={"records": [{"last_name": "a", "company": "x", "external_id": "E1"}]})
    assert ok.status_code == 200 and ok.json["counts"] == {"created": 1}
    bad = {"records": [{"last_name": "b", "company": "y"}, {"last_name": "c"}]}
    atomic = api.post("/api/v1/lead/_bulk", json=bad)
    assert atomic.status_code == 422 and [i["status"] for i in atomic.json["items"]] == ["skipped", "error"]
    per_item = api.post("/api/v1/lead/_bulk", json={**bad, "atomic": False})
    assert per_item.status_code == 207 and per_item.json["counts"] == {"created": 1, "error": 1}
    upsert = api.post("/api/v1/lead/_bulk", json={"mode": "upsert", "key": "external_id",
                                                  "records": [{"external_id": "E1", "last_name": "A", "company": "x"}]})
    assert upsert.json["items"][0]["status"] == "updated" and upsert.json["items"][0]["id"] == ok.json["items"][0]["id"]


def test_history_lists_changes_of_tracked_fields(api):
    acc = make_account(api)
    opp = make_opp(api, acc, stage="prospecting")
    api.patch(f"/api/v1/opportunity/{opp['id']}", json={"stage": "proposal"})
    r = api.get(f"/api/v1/opportunity/{opp['id']}/history")
    assert [(h["field"], h["old_value"], h["new_value"], h["changed_by"]) for h in r.json["data"]] == [
        ("stage", "prospecting", "proposal", api.user["id"]),
        # the stage option's sets (probability, forecast category) are changes of the same write
        ("probability", "10.00", "50.00", api.user["id"]),
        ("forecast_category", "pipeline", "best_case", api.user["id"])]
    assert api.get("/api/v1/opportunity/424242/history").status_code == 404


def test_idempotency_key_replays_the_first_answer(api):
    headers = {"Idempotency-Key": "create-acme-1"}
    first = api.post("/api/v1/account", json={"name": "Acme"}, headers=headers)
    again = api.post("/api/v1/account", json={"name": "Acme"}, headers=headers)
    assert first.status_code == again.status_code == 201 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Location"] == first.headers["Location"]
    assert len(api.get("/api/v1/account").json["data"]) == 1
    other = api.post("/api/v1/account", json={"name": "Other"}, headers=headers)
    assert other.status_code == 422 and "different request" in other.json["detail"]


def test_meta_describes_entities_fields_options_and_layouts(api):
    entities = {e["name"]: e for e in api.get("/api/v1/_meta").json["entities"]}
    assert entities["opportunity"]["label"]["zh"] == "商机"
    opp = api.get("/api/v1/_meta/opportunity").json
    stage = next(f for f in opp["fields"] if f["name"] == "stage")
    assert stage["type"] == "picklist" and {"value": "won", "label": stage["options"][-2]["label"]} in stage["options"]
    assert "form" in opp["layouts"] and "list" in opp["layouts"]
    assert api.get("/api/v1/_meta/nothing").status_code == 404


def test_a_statement_past_the_time_limit_is_stopped(crm):
    from engine.storage.database import QueryTimeout

    slow = sa.text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
                   "SELECT COUNT(*) FROM n")
    with pytest.raises(QueryTimeout):
        with crm.db.read(timeout_ms=100) as conn:
            conn.execute(slow).scalar()
    with crm.db.read(timeout_ms=5000) as conn:   # the connection is usable again afterwards
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1


def test_an_admin_cannot_lock_themselves_out(api):
    me = f"/api/v1/user/{api.user['id']}"
    r = api.patch(me, json={"active": False})
    assert r.status_code == 422 and r.json["errors"][0]["code"] == "self"
    assert api.delete(me).status_code == 422
    assert api.get(me).json["active"] is True
    other = api.post("/api/v1/user", json={"name": "Bo", "email": "bo@example.com"}).json
    assert api.patch(f"/api/v1/user/{other['id']}", json={"active": False}).json["active"] is False


def test_an_undeclared_method_is_405_with_allow(api):
    r = api.put("/api/v1/account")
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_a_deleted_record_id_is_never_given_again(api):
    acc = make_account(api, "Acme")
    api.patch(f"/api/v1/account/{acc['id']}", json={"rating": "hot"})
    assert api.delete(f"/api/v1/account/{acc['id']}").status_code == 204
    new = make_account(api, "Globex")
    assert new["id"] != acc["id"]
    assert api.get(f"/api/v1/account/{new['id']}/history").json["data"] == []
    api.delete(f"/api/v1/account/{new['id']}")           # the newest is gone too: bulk ids still move on
    bulk = api.post("/api/v1/account/_bulk", json={"records": [{"name": "A"}, {"name": "B"}]}).json
    ids = [i["id"] for i in bulk["items"]]
    assert min(ids) > new["id"] and [api.get(f"/api/v1/account/{i}").json["name"] for i in ids] == ["A", "B"]


def test_where_takes_a_formula_compiled_to_sql_with_bound_parameters(api):
    big = make_account(api, "Big Corp", annual_revenue="5000000")
    small = make_account(api, "Small Shop", annual_revenue="1000")
    for acc, name, amount, stage in ((big, "A", 90000, "won"), (big, "B", 500, "proposal"), (small, "C", 70000, "won")):
        make_opp(api, acc, name=name, amount=amount, stage=stage)
    def names(where, extra=""):
        r = api.get("/api/v1/opportunity", query_string={"where": where, "sort": "name", **dict([extra] if extra else [])})
        assert r.status_code == 200, r.json
        return [d["name"] for d in r.json["data"]]
    assert names("amount > 1000 AND stage = 'won'") == ["A", "C"]
    assert names("account.annual_revenue >= 1000000") == ["A", "B"]            # across a lookup: a join
    assert names("CONTAINS(UPPER(account.name), 'SHOP') || amount < 1000") == ["B", "C"]
    assert names("owner_id = $user.id AND ISPICKVAL(stage, 'won')") == ["A", "C"]
    assert names("stage = 'won'", ("amount[lt]", "80000")) == ["C"]
    r = api.get("/api/v1/opportunity", query_string={"where": "amount > 1000 AND stage = 'won'", "count": "true"})
    assert r.json["total"] == 2


@pytest.mark.parametrize("where, kind", [
    ("amount >", "syntax"), ("amount = 'ten'", "type"), ("colour = 'red'", "unknown_field"),
    ("amount + 1", "type"), ("REGEX(name, 'x.*')", "no_sql"),
])
def test_a_bad_where_is_a_400_naming_the_problem(api, where, kind):
    r = api.get("/api/v1/opportunity", query_string={"where": where})
    assert r.status_code == 400 and r.json["errors"][0]["field"] == "where" and r.json["errors"][0]["code"] == kind


@pytest.mark.parametrize("attack", [
    "name = 'x'' OR 1=1 --'", 'name = "x"; DROP TABLE opportunity; --"',
    "name = 'x'); DELETE FROM opportunity; --", "1=1 OR name = ''''",
])
def test_injection_in_where_never_runs(api, attack):
    acc = make_account(api)
    make_opp(api, acc, name="Safe")
    r = api.get("/api/v1/opportunity", query_string={"where": attack})
    assert r.status_code in (200, 400)
    if r.status_code == 200:
        assert r.json["data"] == []
    assert [d["name"] for d in api.get("/api/v1/opportunity").json["data"]] == ["Safe"]


def test_sparse_fields_page_with_a_cursor_like_full_records(api):
    rows = [{"last_name": f"L{i % 5}", "company": f"C{i:02d}"} for i in range(23)]
    api.post("/api/v1/lead/_bulk", json={"records": rows})
    seen, cursor = [], None
    while True:
        r = api.get("/api/v1/lead?fields=company&sort=-last_name&limit=7" + (f"&cursor={cursor}" if cursor else ""))
        assert all(set(d) == {"id", "company"} for d in r.json["data"])
        seen += [d["company"] for d in r.json["data"]]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
    full = [d["company"] for d in api.get("/api/v1/lead?sort=-last_name&limit=100").json["data"]]
    assert seen == full and len(seen) == 23
