"""Converting a lead (the base CRM's ``conversions.yaml``): through the API as a sales user, with
match candidates, in one transaction (nothing written when a target fails), permissions, the lock
afterwards, children moved, the ``converted`` trigger, bulk conversion, the matching normalisers and
the declaration's check at file:line. Runs on SQLite and, with DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from engine import matching
from engine.metadata import MetadataError
from engine.security.audit import query_audit
from engine.security.tokens import create_token
from engine.storage.records import Context

SYSTEM = Context(system=True)


def _user(rt, role="sales", name="Sam", team="north"):
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role,
                                      "team": team}, context=SYSTEM)


def _client(rt, user):
    from engine.app import create_app

    _, token = create_token(rt.records, user["id"], "t")
    return create_app(runtime=rt).test_client(), {"Authorization": f"Bearer {token}"}


def _lead(rt, owner, **values):
    data = {"last_name": "Doe", "first_name": "Jane", "company": "Globex", "email": "jane@globex.example",
            "phone": "+1 201 555 0100", "status": "qualified", "lead_source": "web", "city": "Springfield",
            **values}
    return rt.records.create("lead", data, context=Context(user_id=owner["id"], system=True))


def _count(rt, entity):
    return len(rt.records.query(entity, limit=10_000))


@pytest.fixture
def sales(crm):
    sam = _user(crm)
    client, headers = _client(crm, sam)
    return crm, sam, client, headers


def test_converting_a_lead_creates_an_account_a_contact_and_an_opportunity(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    proposal = client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=headers)
    assert proposal.status_code == 200, proposal.json
    assert proposal.json["convertible"] is True
    targets = proposal.json["targets"]
    assert targets["account"]["values"]["name"] == "Globex"
    assert targets["account"]["values"]["billing_city"] == "Springfield"
    assert targets["contact"]["values"]["email"] == "jane@globex.example"
    assert targets["opportunity"]["values"]["name"] == "Globex - Doe"
    assert targets["opportunity"]["values"]["close_date"] == (date.today() + timedelta(days=30)).isoformat()

    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={"targets": {
        "opportunity": {"action": "create", "values": {"amount": "25000"}}}})
    assert answer.status_code == 200, answer.json
    done = answer.json["targets"]
    assert {n: d["action"] for n, d in done.items()} == {"account": "created", "contact": "created",
                                                          "opportunity": "created"}
    account = rt.records.get("account", done["account"]["id"])
    contact = rt.records.get("contact", done["contact"]["id"])
    deal = rt.records.get("opportunity", done["opportunity"]["id"])
    assert (account["name"], account["owner_id"]) == ("Globex", sam["id"])
    assert (contact["last_name"], contact["account"], contact["email"]) == ("Doe", account["id"], "jane@globex.example")
    assert (deal["account"], deal["contact"], str(deal["amount"])) == (account["id"], contact["id"], "25000.00")
    stamped = rt.records.get("lead", lead["id"])
    assert stamped["status"] == "converted" and stamped["converted_at"] is not None
    assert (stamped["converted_account"], stamped["converted_contact"], stamped["converted_opportunity"]) == (
        account["id"], contact["id"], deal["id"])
    history = client.get(f"/api/v1/lead/{lead['id']}/history", headers=headers).json["data"]
    assert any(h["field"] == "status" and h["new_value"] == "converted" for h in history)
    created = {(a["entity"], a["record_id"]) for a in query_audit(rt.records, kind="record_created", user_id=sam["id"])}
    assert {("account", account["id"]), ("contact", contact["id"]), ("opportunity", deal["id"])} <= created


def test_the_account_can_be_an_existing_one_the_matching_proposes(sales):
    rt, sam, client, headers = sales
    acme = rt.records.create("account", {"name": "GLOBEX, Inc.", "phone": "(201) 555-0100"},
                             context=Context(user_id=sam["id"], system=True))
    rt.records.create("account", {"name": "Initech"}, context=Context(user_id=sam["id"], system=True))
    lead = _lead(rt, sam)
    proposal = client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=headers).json
    [candidate] = proposal["targets"]["account"]["candidates"]
    assert candidate["id"] == acme["id"] and candidate["title"] == "GLOBEX, Inc."
    assert {r["field"] for r in candidate["reasons"]} == {"name", "phone"}
    before = _count(rt, "account")
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={"targets": {
        "account": {"action": "existing", "id": acme["id"]}, "opportunity": {"action": "skip"}}})
    assert answer.status_code == 200, answer.json
    assert answer.json["targets"]["account"] == {"entity": "account", "id": acme["id"], "action": "attached"}
    assert answer.json["targets"]["opportunity"]["action"] == "skipped"
    assert _count(rt, "account") == before and _count(rt, "opportunity") == 0
    contact = rt.records.get("contact", answer.json["targets"]["contact"]["id"])
    assert contact["account"] == acme["id"]
    assert rt.records.get("lead", lead["id"])["converted_opportunity"] is None


def test_candidates_are_only_records_the_user_may_read(crm):
    sam, other = _user(crm), _user(crm, name="Olga", team="south")
    crm.records.create("account", {"name": "Globex Ltd"}, context=Context(user_id=other["id"], system=True))
    lead = _lead(crm, sam)
    client, headers = _client(crm, sam)
    proposal = client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=headers).json
    assert proposal["targets"]["account"]["candidates"] == []      # another team's account
    admin_client, admin_headers = _client(crm, _user(crm, role="admin", name="Ada"))
    seen = admin_client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=admin_headers).json
    assert len(seen["targets"]["account"]["candidates"]) == 1


def test_a_target_that_fails_writes_nothing_and_every_error_comes_back(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    counts = {e: _count(rt, e) for e in ("account", "contact", "opportunity")}
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={"targets": {
        "contact": {"values": {"email": "not an e-mail"}},
        "opportunity": {"values": {"close_date": (date.today() - timedelta(days=3)).isoformat()}}}})
    assert answer.status_code == 422
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    errors = {(e["target"], e["field"]) for e in answer.json["errors"]}
    assert errors == {("contact", "email"), ("opportunity", "close_date")}
    assert {e: _count(rt, e) for e in counts} == counts            # the account made first was rolled back
    assert rt.records.get("lead", lead["id"])["status"] == "qualified"


def test_bad_choices_are_refused_each_named(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={"targets": {
        "account": {"action": "skip"}, "opportunity": {"action": "existing", "id": 1}, "invoice": {}}})
    assert answer.status_code == 422
    assert {(e["target"], e["field"]) for e in answer.json["errors"]} == {
        ("account", "action"), ("opportunity", "action"), ("invoice", None)}
    assert client.get("/api/v1/account/1/_convert", headers=headers).status_code == 404   # no declaration


def test_a_user_who_may_read_leads_but_not_create_accounts_cannot_convert(crm):
    mia = _user(crm, role="marketing", name="Mia")                 # leads: yes; accounts, contacts: read only
    lead = _lead(crm, mia)
    client, headers = _client(crm, mia)
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={})
    assert answer.status_code == 403
    assert "create account" in answer.json["detail"] and "create contact" in answer.json["detail"]
    assert _count(crm, "account") == _count(crm, "contact") == 0
    assert crm.records.get("lead", lead["id"])["status"] == "qualified"
    [denied] = query_audit(crm.records, kind="permission_denied", user_id=mia["id"])
    assert denied["detail"]["operation"] == "convert"


def test_a_converted_lead_is_read_only_and_cannot_be_converted_again(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    # no body at all (the document says it is optional): every target as proposed
    assert client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers).status_code == 200
    counts = {e: _count(rt, e) for e in ("account", "contact", "opportunity")}
    again = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={})
    assert again.status_code == 409 and "already converted" in again.json["detail"]
    assert {e: _count(rt, e) for e in counts} == counts
    assert client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=headers).json["convertible"] is False
    edit = client.patch(f"/api/v1/lead/{lead['id']}", headers=headers, json={"first_name": "Janet"})
    assert edit.status_code == 422 and "read-only" in edit.json["detail"]
    assert rt.records.get("lead", lead["id"])["first_name"] == "Jane"
    rt.records.update("lead", lead["id"], {"description": "kept by the engine"}, context=SYSTEM)   # system writes pass


def test_a_user_cannot_mark_a_lead_converted_by_hand_only_import_one(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    edit = client.patch(f"/api/v1/lead/{lead['id']}", headers=headers, json={"status": "converted"})
    assert edit.status_code == 422
    assert edit.json["errors"][0]["field"] == "status" and "Convert lead" in edit.json["errors"][0]["message"]
    imported = client.post("/api/v1/lead", headers=headers, json={"last_name": "X", "company": "Y", "status": "converted"})
    assert imported.status_code == 201                             # history from another system may be imported
    assert rt.records.get("lead", lead["id"])["status"] == "qualified"


def test_an_unqualified_lead_is_not_convertible(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam, status="unqualified")
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={})
    assert answer.status_code == 422 and "may not be converted" in answer.json["detail"]


def test_activities_and_campaign_memberships_move_to_the_new_contact(sales):
    rt, sam, client, headers = sales
    lead = _lead(rt, sam)
    ctx = Context(user_id=sam["id"], system=True)
    call = rt.records.create("activity", {"subject": "First call", "related_to": f"lead:{lead['id']}"}, context=ctx)
    other = rt.records.create("activity", {"subject": "Unrelated"}, context=ctx)
    campaign = rt.records.create("campaign", {"name": "Spring fair"}, context=ctx)
    member = rt.records.create("campaign_member", {"campaign": campaign["id"], "lead": lead["id"]}, context=ctx)
    answer = client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={})
    assert answer.status_code == 200, answer.json
    contact_id = answer.json["targets"]["contact"]["id"]
    assert answer.json["moved"] == {"activity.related_to": 1, "campaign_member.contact": 1}
    moved = rt.records.get("activity", call["id"])["related_to"]
    assert (moved.entity, moved.id) == ("contact", contact_id)
    assert rt.records.get("activity", other["id"])["related_to"] is None
    membership = rt.records.get("campaign_member", member["id"])
    assert (membership["contact"], membership["lead"]) == (contact_id, lead["id"])


def test_automations_follow_the_converted_trigger(make_runtime, write_tree):
    site = write_tree("site", {"on_convert.yaml": """
        automation: tell_the_owner
        on: {entity: lead, events: [converted]}
        actions:
          - {do: notify, to: owner, message: "'Converted: ' & company"}
        """})
    rt = make_runtime(site_dir=site)
    sam = _user(rt)
    lead = _lead(rt, sam)
    client, headers = _client(rt, sam)
    assert client.post(f"/api/v1/lead/{lead['id']}/_convert", headers=headers, json={}).status_code == 200
    rt.workflow.runner.drain()
    [note] = rt.records.query("notification", where={"automation": "tell_the_owner"})
    assert (note["message"], note["user"]) == ("Converted: Globex", sam["id"])
    import sqlalchemy as sa

    with rt.db.read() as conn:
        runs = conn.execute(sa.select(rt.workflow.runs).where(rt.workflow.runs.c.automation == "tell_the_owner")).all()
    assert [(r._mapping["trigger"], r._mapping["record_id"], r._mapping["status"]) for r in runs] == [
        ("converted", lead["id"], "done")]


def test_bulk_conversion_creates_new_targets_and_skips_leads_with_matches(sales):
    rt, sam, client, headers = sales
    rt.records.create("account", {"name": "Initech LLC"}, context=Context(user_id=sam["id"], system=True))
    fresh = _lead(rt, sam)
    matched = _lead(rt, sam, company="INITECH", last_name="Roe", email="roe@initech.example", phone=None)
    done = _lead(rt, sam, company="Hooli", email="h@hooli.example", phone=None, status="converted")
    answer = client.post("/api/v1/lead/_convert", headers=headers, json={"ids": [fresh["id"], matched["id"], done["id"]]})
    assert answer.status_code == 200, answer.json
    results = {r["id"]: r for r in answer.json["results"]}
    assert results[fresh["id"]]["status"] == "converted"
    assert results[matched["id"]]["status"] == "matches" and "account" in results[matched["id"]]["candidates"]
    assert results[done["id"]]["status"] == "error" and "already converted" in results[done["id"]]["detail"]
    assert answer.json["counts"] == {"converted": 1, "matches": 1, "error": 1}
    assert rt.records.get("lead", matched["id"])["status"] == "qualified"
    assert client.post("/api/v1/lead/_convert", headers=headers, json={"ids": "all"}).status_code == 422


@pytest.mark.parametrize("by, a, b", [
    ("company_name", "ACME, Inc.", "Acme"),
    ("company_name", "Ａｃｍｅ　GmbH", "acme"),
    ("company_name", "华为技术有限公司", "华为技术"),
    ("company_name", "Globex Co., Ltd.", "GLOBEX"),
    ("email", "  Jane@Example.COM ", "jane@example.com"),
    ("phone", "+1 (555) 010-0200", "555.010.0200"),
    ("name", "Doe, Jane", "jane doe"),
    ("name", "José Núñez", "jose nunez"),
])
def test_normalisers_make_the_same_company_or_person_equal(by, a, b):
    assert matching.NORMALISERS[by](a) == matching.NORMALISERS[by](b) or by == "phone"
    assert matching.similarity(by, a, b) == 1.0


def test_normalisers_keep_different_ones_apart():
    assert matching.company_name("Co") == "co"                     # a suffix alone is the name
    assert matching.similarity("company_name", "Acme", "Apex Systems") < matching.THRESHOLD
    assert matching.similarity("email", "jane@example.com", "jan@example.com") == 0.0
    assert matching.similarity("phone", "555 0100", "555 0199") == 0.0
    assert matching.similarity("phone", "12", "12") == 0.0          # too short to say anything


def test_a_declaration_naming_a_missing_field_or_a_formula_of_the_wrong_type_is_refused_at_its_line(
        make_runtime, write_tree):
    site = write_tree("site", {"convert_contact.yaml": """
        conversion: contact_to_deal
        source: contact
        converted_when: "do_not_call"
        targets:
          deal:
            entity: opportunity
            map:
              name: last_nme
              amount: "first_name & '!'"
              account: "@nowhere"
        move:
          - {entity: activity, field: related_to, to: deal}
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "convert_contact.yaml:8" in text and "last_nme" in text
    assert "convert_contact.yaml:9" in text and "must give currency, but gives text" in text
    assert "convert_contact.yaml:10" in text and "'@nowhere' names no target" in text
