"""Merging records (engine/dataio/merge): children of several entities move to the survivor (lookups
and polymorphic references, with field history), rollups follow, unique values and exclusive flags
are handled, the audit names the merge, permissions and record scope refuse, and undo puts
everything back (and is refused when too late or when something changed). On SQLite and, with
DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.dataio.merge import store
from engine.dataio.merge.service import MergeError, merge
from engine.dataio.merge.undo import undo
from engine.fields.relation import Ref
from engine.security.tokens import create_token
from engine.storage.errors import NotFound
from engine.storage.records import Context

SYSTEM = Context(system=True, automations=False)


def _user(rt, name: str, role: str, **values) -> dict:
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role, **values},
                             context=Context(system=True))


def _make(rt, entity: str, **values) -> dict:
    return rt.records.create(entity, values, context=SYSTEM)


def _history(rt, entity: str, record_id: int, field: str) -> list[tuple]:
    return [(h["old_value"], h["new_value"]) for h in rt.records.history_of(entity, record_id)
            if h["field"] == field]


@pytest.fixture
def world(crm):
    """Three duplicate accounts with contacts, deals (a quote and its line under one), activities
    pointing at them through ``related_to``, and an admin who merges."""
    rt = crm
    admin = _user(rt, "Admin", "admin")
    a = _make(rt, "account", name="Acme Ltd", account_number="N-1", phone="+1 201 555 0100")
    b = _make(rt, "account", name="ACME Limited", account_number="N-2", website="https://acme.example",
              annual_revenue="1250000.50", employees=40)
    c = _make(rt, "account", name="Acme", account_number="N-3", parent_account=b["id"])
    contacts = [_make(rt, "contact", last_name=n, account=acc["id"]) for n, acc in (("Ann", a), ("Bob", b), ("Cy", c))]
    close = (datetime.now(timezone.utc) + timedelta(days=30)).date()
    deals = [_make(rt, "opportunity", name=f"Deal {i}", account=acc["id"], close_date=close, amount=1000 * (i + 1))
             for i, acc in enumerate((a, b, b, c))]
    product = _make(rt, "product", name="Widget", code="W-1")
    quote = _make(rt, "quote", name="Q1", opportunity=deals[1]["id"], account=b["id"])
    line = _make(rt, "quote_line", quote=quote["id"], product=product["id"], quantity=2, unit_price=10)
    acts = [_make(rt, "activity", subject=f"Call {n}", related_to=f"{e}:{i}")
            for n, (e, i) in enumerate((("account", b["id"]), ("account", c["id"]), ("contact", contacts[1]["id"]),
                                        ("account", a["id"])))]
    ctx = Context(user_id=admin["id"], access=_access(rt, admin))
    return {"rt": rt, "admin": admin, "a": a, "b": b, "c": c, "contacts": contacts, "deals": deals, "quote": quote,
            "line": line, "acts": acts, "ctx": ctx}


def _access(rt, user):
    from engine.security.permissions import access_for

    return access_for(rt.records, user["id"], user["role"])


def _get(rt, entity, rid):
    return rt.records.get(entity, rid)


def test_merge_moves_every_reference_with_history_rollups_and_audit(world):
    rt, a, b, c = world["rt"], world["a"], world["b"], world["c"]
    assert _get(rt, "account", a["id"])["open_opportunities"] == 1
    done = merge(rt, "account", a["id"], [b["id"], c["id"]],
                 {"account_number": b["id"], "website": b["id"], "name": b["id"], "annual_revenue": b["id"],
                  "employees": b["id"], "parent_account": c["id"]}, world["ctx"])
    for gone in (b, c):
        with pytest.raises(NotFound):
            _get(rt, "account", gone["id"])
    survivor = _get(rt, "account", a["id"])
    assert survivor["account_number"] == "N-2"            # a unique value freed on B before A took it
    assert survivor["website"] == "https://acme.example" and survivor["phone"] == "+12015550100"
    assert survivor["name"] == "ACME Limited"
    assert (survivor["annual_revenue"], survivor["employees"]) == (Decimal("1250000.50"), 40)
    assert survivor["parent_account"] is None      # C's parent was B, merged into A: A would be its own parent
    assert survivor["open_opportunities"] == 4            # the rollup follows the moved deals at once
    assert done.survivor["id"] == a["id"]
    # every entity pointing at the merged accounts now points at the survivor
    assert [_get(rt, "contact", x["id"])["account"] for x in world["contacts"]] == [a["id"]] * 3
    assert {_get(rt, "opportunity", d["id"])["account"] for d in world["deals"]} == {a["id"]}
    assert _get(rt, "quote", world["quote"]["id"])["account"] == a["id"]
    assert _get(rt, "quote_line", world["line"]["id"])["quote"] == world["quote"]["id"]   # grandchildren stay put
    related = [_get(rt, "activity", x["id"])["related_to"] for x in world["acts"]]
    assert related == [Ref("account", a["id"]), Ref("account", a["id"]), Ref("contact", world["contacts"][1]["id"]),
                       Ref("account", a["id"])]
    # field history on the children and on the survivor
    assert _history(rt, "contact", world["contacts"][1]["id"], "account") == [(b["id"], a["id"])]
    assert _history(rt, "opportunity", world["deals"][3]["id"], "account") == [(c["id"], a["id"])]
    assert _history(rt, "account", a["id"], "name") == [("Acme Ltd", "ACME Limited")]
    moved = {(m["entity"], m["field"]): m["count"] for m in done.moved}
    assert moved == {("contact", "account"): 2, ("opportunity", "account"): 3, ("quote", "account"): 1,
                     ("activity", "related_to"): 2}
    with rt.db.read() as conn:
        audit = rt.records.metadata.tables["_crm_audit"]
        row = conn.execute(sa.select(audit).where(audit.c.kind == "record_merged")).one()
        deleted = conn.execute(sa.select(audit.c.record_id).where(audit.c.kind == "record_deleted")).scalars().all()
    assert row.record_id == a["id"] and row.detail["merged"] == [b["id"], c["id"]]
    assert row.detail["merge"] == done.merge_id and {"entity": "contact", "field": "account", "count": 2} in row.detail["moved"]
    assert sorted(deleted) == sorted([b["id"], c["id"]])


def test_undo_restores_records_ids_references_and_the_survivor(world):
    rt, a, b, c = world["rt"], world["a"], world["b"], world["c"]
    before = {x["id"]: _get(rt, "account", x["id"]) for x in (a, b, c)}
    done = merge(rt, "account", a["id"], [b["id"], c["id"]], {"account_number": b["id"], "name": c["id"]}, world["ctx"])
    result = undo(rt, done.merge_id, world["ctx"])
    assert sorted(result["restored"]) == sorted([b["id"], c["id"]])
    for rid, old in before.items():
        now = _get(rt, "account", rid)
        for name in ("name", "account_number", "website", "phone", "parent_account", "owner_id", "created_at"):
            assert now[name] == old[name], (rid, name)
        assert now["open_opportunities"] == old["open_opportunities"]
    assert [_get(rt, "contact", x["id"])["account"] for x in world["contacts"]] == [a["id"], b["id"], c["id"]]
    assert [_get(rt, "opportunity", d["id"])["account"] for d in world["deals"]] == [a["id"], b["id"], b["id"], c["id"]]
    assert _get(rt, "quote", world["quote"]["id"])["account"] == b["id"]
    assert [_get(rt, "activity", x["id"])["related_to"] for x in world["acts"]] == [
        Ref("account", b["id"]), Ref("account", c["id"]), Ref("contact", world["contacts"][1]["id"]), Ref("account", a["id"])]
    assert _history(rt, "contact", world["contacts"][1]["id"], "account") == [(b["id"], a["id"]), (a["id"], b["id"])]
    with pytest.raises(MergeError) as again:
        undo(rt, done.merge_id, world["ctx"])
    assert again.value.status == 409 and "undone already" in again.value.message
    with rt.db.read() as conn:
        audit = rt.records.metadata.tables["_crm_audit"]
        assert conn.execute(sa.select(audit.c.record_id).where(audit.c.kind == "merge_undone")).scalars().all() == [a["id"]]


def test_undo_refused_when_too_late_or_changed_since(world):
    rt, a, b, c = world["rt"], world["a"], world["b"], world["c"]
    first = merge(rt, "account", a["id"], [b["id"]], {}, world["ctx"])
    rt.records.update("contact", world["contacts"][1]["id"], {"job_title": "CEO"}, context=SYSTEM)
    with pytest.raises(MergeError) as changed:
        undo(rt, first.merge_id, world["ctx"])
    assert changed.value.status == 409
    assert f"contact {world['contacts'][1]['id']} changed (version 2, now 3)" in changed.value.message
    assert _get(rt, "contact", world["contacts"][1]["id"])["account"] == a["id"]   # nothing half-undone
    second = merge(rt, "account", a["id"], [c["id"]], {}, world["ctx"])
    table = rt.records.metadata.tables[store.TABLE]
    with rt.db.write() as conn:
        conn.execute(table.update().where(table.c.id == second.merge_id)
                     .values(undo_until=datetime.now(timezone.utc) - timedelta(minutes=1)))
    with pytest.raises(MergeError) as late:
        undo(rt, second.merge_id, world["ctx"])
    assert late.value.status == 409 and "can no longer be undone" in late.value.message


def test_exclusive_flags_keep_the_survivors_primary_and_undo_gives_it_back(crm):
    rt = crm
    acc = _make(rt, "account", name="Acme")
    close = (datetime.now(timezone.utc) + timedelta(days=30)).date()
    o1, o2 = (_make(rt, "opportunity", name=f"Deal {i}", account=acc["id"], close_date=close) for i in (1, 2))
    q1 = _make(rt, "quote", name="Q1", opportunity=o1["id"], is_primary=True)
    q2 = _make(rt, "quote", name="Q2", opportunity=o2["id"], is_primary=True)
    done = merge(rt, "opportunity", o1["id"], [o2["id"]], {}, Context(system=True))
    assert _get(rt, "quote", q1["id"])["is_primary"] is True
    moved = _get(rt, "quote", q2["id"])
    assert moved["opportunity"] == o1["id"] and moved["is_primary"] is False
    undo(rt, done.merge_id, Context(system=True))
    assert _get(rt, "quote", q2["id"])["opportunity"] == o2["id"] and _get(rt, "quote", q2["id"])["is_primary"] is True
    assert _get(rt, "quote", q1["id"])["is_primary"] is True


def test_a_child_that_would_repeat_a_unique_key_is_dropped_and_comes_back_on_undo(crm):
    rt = crm
    camp = _make(rt, "campaign", name="Spring")
    c1, c2 = (_make(rt, "contact", last_name=n) for n in ("Ann", "Ann B"))
    m1 = _make(rt, "campaign_member", campaign=camp["id"], contact=c1["id"])
    m2 = _make(rt, "campaign_member", campaign=camp["id"], contact=c2["id"])
    done = merge(rt, "contact", c1["id"], [c2["id"]], {}, Context(system=True))
    assert done.dropped == [{"entity": "campaign_member", "id": m2["id"]}]
    with pytest.raises(NotFound):
        _get(rt, "campaign_member", m2["id"])
    assert _get(rt, "campaign_member", m1["id"])["contact"] == c1["id"]
    undo(rt, done.merge_id, Context(system=True))
    assert _get(rt, "campaign_member", m2["id"])["contact"] == c2["id"]
    assert _get(rt, "contact", c2["id"])["last_name"] == "Ann B"


def test_bad_requests_are_refused_with_reasons(world):
    rt, a, b, c, ctx = world["rt"], world["a"], world["b"], world["c"], world["ctx"]
    cases = [
        ((a["id"], [a["id"]], {}), 422, "cannot be merged into itself"),
        ((a["id"], [b["id"], b["id"]], {}), 422, "twice"),
        ((a["id"], [b["id"], c["id"], 91, 92, 93], {}), 422, "at most 5 records"),
        ((a["id"], [], {}), 422, "merged must be a list"),
        ((a["id"], [b["id"]], {"open_opportunities": b["id"]}), 422, "cannot be chosen"),
        ((a["id"], [b["id"]], {"nope": b["id"]}), 422, "has no field 'nope'"),
        ((a["id"], [b["id"]], {"name": 999}), 422, "must be the id of one of the merged records"),
    ]
    for args, status, words in cases:
        with pytest.raises(MergeError) as refused:
            merge(rt, "account", *args, ctx)
        assert refused.value.status == status and words in refused.value.message, args
    with pytest.raises(NotFound):
        merge(rt, "account", a["id"], [987654], {}, ctx)
    assert _get(rt, "account", b["id"])["name"] == "ACME Limited"   # nothing written


def test_api_merge_preview_permissions_scope_and_undo(world, api):
    rt, a, b, c = world["rt"], world["a"], world["b"], world["c"]
    got = api.client.get(f"/api/v1/account/_merge/preview?ids={a['id']},{b['id']}", headers=api.headers)
    assert got.status_code == 200, got.json
    fields = {f["name"]: f for f in got.json["fields"]}
    assert fields["name"]["differs"] and fields["name"]["choosable"] and not fields["open_opportunities"]["choosable"]
    assert not fields["industry"]["differs"]
    assert {"entity": "contact", "field": "account", "count": 1} in got.json["references"][str(b["id"])]
    # a sales rep may not delete accounts; a manager only sees their subordinates' accounts
    sales = _user(rt, "Sal", "sales")
    _, token = create_token(rt.records, sales["id"], "t")
    refused = api.client.post("/api/v1/account/_merge", json={"survivor": a["id"], "merged": [b["id"]]},
                              headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403 and "delete on account" in refused.json["detail"]
    boss = _user(rt, "Boss", "manager")
    _, token = create_token(rt.records, boss["id"], "t")
    mine = _make(rt, "account", name="Mine", owner_id=boss["id"])
    hidden = api.client.post("/api/v1/account/_merge", json={"survivor": mine["id"], "merged": [b["id"]]},
                             headers={"Authorization": f"Bearer {token}"})
    assert hidden.status_code == 404 and f"account {b['id']}" in hidden.json["detail"]
    bad = api.client.post("/api/v1/account/_merge", json={"survivor": a["id"], "merged": [a["id"]]}, headers=api.headers)
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "merged"
    done = api.client.post("/api/v1/account/_merge", headers=api.headers, json={
        "survivor": a["id"], "merged": [b["id"], c["id"]], "choices": {"website": b["id"]}})
    assert done.status_code == 200, done.json
    assert done.json["data"]["website"] == "https://acme.example" and done.json["data"]["open_opportunities"] == 4
    merge_id = done.json["merge"]["id"]
    other = api.client.post(f"/api/v1/_merges/{merge_id}/undo", headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 403
    back = api.client.post(f"/api/v1/_merges/{merge_id}/undo", headers=api.headers)
    assert back.status_code == 200, back.json
    assert sorted(back.json["restored"]) == sorted([b["id"], c["id"]])
    assert _get(rt, "account", b["id"])["website"] == "https://acme.example"
    doc = api.client.get("/api/v1/openapi.json", headers=api.headers).json
    assert "/api/v1/account/_merge" in doc["paths"] and "/api/v1/_merges/{merge_id}/undo" in doc["paths"]


def test_a_record_pending_approval_cannot_be_merged(crm, api):
    rt = crm
    from engine.processes.approvals.plugin import approvals_of

    top = _user(rt, "Top", "manager")
    boss = _user(rt, "Boss", "manager", manager=top["id"])
    acc = _make(rt, "account", name="Acme", owner_id=boss["id"])
    close = (datetime.now(timezone.utc) + timedelta(days=30)).date()
    deal = _make(rt, "opportunity", name="Deal", account=acc["id"], close_date=close, owner_id=boss["id"])
    product = _make(rt, "product", name="Widget", code="W-1")
    quotes = [_make(rt, "quote", name=f"Q{i}", opportunity=deal["id"], owner_id=boss["id"]) for i in (1, 2)]
    for q in quotes:
        _make(rt, "quote_line", quote=q["id"], product=product["id"], quantity=1, unit_price=100, discount=20,
              owner_id=boss["id"])
    approvals_of(rt).submit("quote", quotes[1]["id"], user_id=boss["id"], access=_access(rt, boss))
    _, token = create_token(rt.records, boss["id"], "t")
    headers = {"Authorization": f"Bearer {token}"}
    preview = api.client.get(f"/api/v1/quote/_merge/preview?ids={quotes[0]['id']},{quotes[1]['id']}", headers=headers)
    assert preview.json["locks"][str(quotes[1]["id"])].startswith("Pending approval")
    refused = api.client.post("/api/v1/quote/_merge", headers=headers,
                              json={"survivor": quotes[0]["id"], "merged": [quotes[1]["id"]]})
    assert refused.status_code == 409, refused.json
    assert f"quote {quotes[1]['id']} cannot be merged: Pending approval" in refused.json["detail"]
    assert _get(rt, "quote", quotes[1]["id"])["name"] == "Q2"


def test_undo_within_is_declared_per_entity(write_tree, make_runtime):
    from engine.dataio.merge.spec import undo_within
    from engine.metadata import MetadataError

    rt = make_runtime(migrate=False)
    assert undo_within(rt.model.entity("account")) == timedelta(hours=24)
    site = write_tree("site", {"account.yaml": """
    entity: account
    merge: {undo_within: 7d}
    """})
    assert undo_within(make_runtime(site_dir=site, migrate=False).model.entity("account")) == timedelta(days=7)
    bad = write_tree("bad", {"account.yaml": """
    entity: account
    merge: {undo_within: a week}
    """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=bad, migrate=False)
    assert "account.yaml:2" in str(info.value) and "undo_within" in str(info.value)


def test_the_preview_counts_only_what_the_user_sees_and_the_rest_as_one_number(world):
    """The merge moves every reference, also those the user may not see (system writes): the preview
    says how many will move without naming the entity, field or record of the hidden ones."""
    from engine.dataio.merge.service import preview

    rt = world["rt"]
    boss = _user(rt, "Boss", "manager")
    mine = _make(rt, "account", name="Mine", owner_id=boss["id"])
    twin = _make(rt, "account", name="Mine too", owner_id=boss["id"])
    _make(rt, "contact", last_name="Seen", account=twin["id"], owner_id=boss["id"])
    _make(rt, "contact", last_name="Unseen", account=twin["id"], owner_id=world["admin"]["id"])
    ctx = Context(user_id=boss["id"], access=_access(rt, boss))
    found = preview(rt, "account", [mine["id"], twin["id"]], ctx)
    assert found["references"][twin["id"]] == [{"entity": "contact", "field": "account", "count": 1}]
    assert found["hidden_references"] == {mine["id"]: 0, twin["id"]: 1}
    everything = preview(rt, "account", [mine["id"], twin["id"]], Context(system=True))
    assert everything["references"][twin["id"]] == [{"entity": "contact", "field": "account", "count": 2}]
    assert everything["hidden_references"][twin["id"]] == 0
