"""Approval processes (engine/processes/approvals): declarations checked at file:line, submit / approve /
reject / recall through the API with every refusal a clear 4xx and nothing changed, any/all approvers,
the manager chain, named users and user fields, skipped steps, the lock of a pending record through the
API, the UI and bulk updates (editable fields excepted), concurrent approve and recall, the triggers,
a workflow transition guarded by the approval status, and the base CRM's quote discount approval.
On SQLite and, with DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import threading

import pytest
import sqlalchemy as sa

from engine.metadata import MetadataError
from engine.processes.approvals.service import ApprovalError
from engine.security.tokens import create_token
from engine.storage.records import Context

SYSTEM = Context(system=True, automations=False)

#: A test entity with a workflow, declared over the base CRM: two processes exercise every approver kind.
SITE = {"deal.yaml": """
    entity: deal
    label: {en: Deal, zh: 交易}
    title: name
    fields:
      name: {type: text, required: true}
      amount: {type: currency}
      note: {type: textarea}
      reviewer: {type: user}
      stage: {type: picklist, default: draft, options: [draft, confirmed]}
      approval_status: {type: picklist, readonly: true, default: none,
                        options: [none, pending, approved, rejected, recalled]}
    workflow:
      field: stage
      transitions:
        - {name: confirm, from: draft, to: confirmed, when: "approval_status = 'approved'"}
    """, "roles.yaml": """
    role: clerk
    entities:
      deal: {allow: [read, create, update, delete], scope: all}
      user: {allow: [read]}
      notification: {allow: [read, update], scope: own, fields: {user: read, message: read, record: read, automation: read}}
    ---
    role: board
    entities:
      deal: {allow: [read, update], scope: all}
      notification: {allow: [read, update], scope: own, fields: {user: read, message: read, record: read, automation: read}}
    """, "approvals.yaml": """
    approval: deal_big
    of: deal
    when: "amount > 1000"
    submitters: [owner]
    status_field: approval_status
    editable: [note]
    steps:
      - {name: boss, approvers: [{manager: 1}]}
      - {name: grand_boss, approvers: [{manager: 2}], skip_when: "amount <= 5000"}
      - {name: board, approvers: [{role: board}], rule: all, skip_when: "amount <= 50000"}
      - {name: reviewer, approvers: [{field: reviewer}, {user: vera@example.com}], rule: any,
         skip_when: "ISBLANK(reviewer)"}
    """, "on_approval.yaml": """
    automation: tell_on_approved
    on: {entity: deal, events: [approved]}
    actions:
      - {do: notify, to: owner, message: "'Approved: ' & name"}
    ---
    automation: stamp_on_submitted
    on: {entity: deal, events: [submitted]}
    when: "amount > 100000"
    run_as: system
    actions:
      - {do: set_fields, values: {name: "name & ' (in approval)'"}}
    """}


def _user(rt, name: str, role: str, manager: int | None = None) -> dict:
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role,
                                      "manager": manager}, context=Context(system=True))


class Api:
    """A test client per user of one app."""

    def __init__(self, rt):
        from engine.app import create_app

        self.rt, self.app = rt, create_app(runtime=rt)

    def as_(self, user: dict):
        _, token = create_token(self.rt.records, user["id"], "tests")
        client, headers = self.app.test_client(), {"Authorization": f"Bearer {token}"}

        class Caller:
            def get(self, path):
                return client.get(path, headers=headers)

            def post(self, path, body=None):
                return client.post(path, headers=headers, json=body if body is not None else {})

            def patch(self, path, body):
                return client.patch(path, headers=headers, json=body)

            def delete(self, path):
                return client.delete(path, headers=headers)

        return Caller()


@pytest.fixture
def org(make_runtime, write_tree):
    """Deals over the base CRM: Cleo (clerk) reports to Mo, who reports to Gina; two board members."""
    rt = make_runtime(site_dir=write_tree("site", SITE))
    gina = _user(rt, "Gina", "clerk")
    mo = _user(rt, "Mo", "clerk", gina["id"])
    cleo = _user(rt, "Cleo", "clerk", mo["id"])
    board = [_user(rt, "Bea", "board"), _user(rt, "Bob", "board")]
    vera = _user(rt, "Vera", "clerk")
    admin = _user(rt, "Ada", "admin")
    api = Api(rt)
    return rt, api, {"gina": gina, "mo": mo, "cleo": cleo, "bea": board[0], "bob": board[1], "vera": vera,
                     "admin": admin}


def _deal(rt, owner: dict, amount, **values) -> dict:
    return rt.records.create("deal", {"name": "Big one", "amount": amount, "owner_id": owner["id"], **values},
                             context=SYSTEM)


def _url(deal: dict, action: str = "") -> str:
    return f"/api/v1/deal/{deal['id']}/_approval" + (f"/{action}" if action else "")


def _kind(response) -> str:
    """The kind of a problem+json answer (the last part of its ``type``)."""
    return response.json["type"].rsplit("/", 1)[-1]


def _rows(rt, table: str) -> list[dict]:
    t = rt.records.metadata.tables[table]
    with rt.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(t.c.id))]


# -- declarations ----------------------------------------------------------------------------------

def test_a_bad_approval_document_is_refused_at_its_file_and_line(make_runtime, write_tree, settings):
    site = write_tree("site", {"a.yaml": """
        approval: broken
        of: quote
        when: "discount"
        submitters: [owner, nobody]
        status_field: status
        editable: [nothing_here]
        steps:
          - {name: one, approvers: [{role: ghost}]}
          - {name: two, approvers: [{field: name}], skip_when: "discount >"}
        ---
        approval: nowhere
        of: planet
        steps: [{name: one, approvers: [{manager: 1}]}]
        ---
        approval: shapeless
        of: quote
        steps: [{name: one, approvers: [{manager: 1, role: sales}]}]
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "a.yaml:3" in text and "when needs a condition (TRUE or FALSE), not a percent" in text
    assert "a.yaml:4" in text and "there is no role 'nobody'" in text
    assert "a.yaml:5" in text and "needs the option(s) none, pending" in text
    assert "a.yaml:6" in text and "there is no field 'nothing_here' in quote" in text
    assert "a.yaml:8" in text and "there is no role 'ghost'" in text
    assert "a.yaml:9" in text and "field must name a user field of quote; 'name' is a text" in text
    assert "skip_when" in text
    assert "a.yaml:12" in text and "there is no entity 'planet'" in text
    assert "a.yaml:17" in text   # one approver kind per item (the JSON Schema)
    # `crm validate` of the tree over the base CRM says the same, and fails
    from click.testing import CliRunner

    from engine.cli import main

    env = {"DATABASE_URL": settings.database_url, "CRM_BACKUP_DIR": str(settings.backup_dir), "CRM_PLUGIN_DIRS": ""}
    result = CliRunner().invoke(main, ["validate", str(site)], env=env)
    assert result.exit_code == 1, result.output
    assert "a.yaml:3" in result.output and "approval broken: type error: when needs a condition" in result.output
    assert "a.yaml:12" in result.output and "there is no entity 'planet'" in result.output


# -- the steps ---------------------------------------------------------------------------------------

def test_the_manager_chain_skips_and_all_approvers(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 60000)
    r = api.as_(u["cleo"]).post(_url(deal, "submit"), {"comment": "please"})
    assert r.status_code == 200, r.json
    assert r.json["status"] == "pending" and r.json["step"] == 0
    assert rt.records.get("deal", deal["id"])["approval_status"] == "pending"
    [note] = rt.records.query("notification", where={"user": u["mo"]["id"]})
    assert "waits for your approval" in note["message"] and (note["record"].entity, note["record"].id) == ("deal", deal["id"])
    # Gina (two levels up) is not an approver yet: 403, nothing changes
    r = api.as_(u["gina"]).post(_url(deal, "approve"))
    assert r.status_code == 403 and _kind(r) == "not-approver"
    assert api.as_(u["mo"]).post(_url(deal, "approve")).json["step"] == 1
    assert api.as_(u["gina"]).post(_url(deal, "approve")).json["step"] == 2
    # the board step needs both; the reviewer step is skipped (no reviewer)
    state = api.as_(u["bea"]).post(_url(deal, "approve"), {"comment": "ok"}).json
    assert state["status"] == "pending" and state["step"] == 2
    r = api.as_(u["bea"]).post(_url(deal, "approve"))
    assert r.status_code == 409 and _kind(r) == "already-decided"
    state = api.as_(u["bob"]).post(_url(deal, "approve")).json
    assert state["status"] == "approved" and state["step"] is None, (state["step"], state["steps"])
    assert [s["skipped"] for s in state["steps"]] == [False, False, False, True]
    assert [(d["approver"]["name"], d["decision"], d["comment"]) for d in state["steps"][2]["decisions"]] == [
        ("Bea", "approved", "ok"), ("Bob", "approved", None)]
    assert rt.records.get("deal", deal["id"])["approval_status"] == "approved"
    # approving what is no longer pending: a clear 409, nothing changes
    before = _rows(rt, "_crm_approval_step")
    r = api.as_(u["bob"]).post(_url(deal, "approve"))
    assert r.status_code == 409 and _kind(r) == "not-pending" and "approved" in r.json["detail"]
    assert _rows(rt, "_crm_approval_step") == before


def test_an_approver_who_turned_approval_notifications_off_gets_none_but_still_may_decide(org):
    from engine.security.profile import update_profile

    rt, api, u = org
    update_profile(rt.records, u["mo"]["id"], {"notify": {"approval": {"in_app": False, "email": False}}})
    deal = _deal(rt, u["cleo"], 60000)
    assert api.as_(u["cleo"]).post(_url(deal, "submit"), {"comment": "please"}).status_code == 200
    assert rt.records.query("notification", where={"user": u["mo"]["id"]}) == []
    assert api.as_(u["mo"]).post(_url(deal, "approve")).status_code == 200


def test_a_small_deal_skips_the_later_steps_and_any_one_reviewer_is_enough(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 2000, reviewer=u["bea"]["id"])
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    api.as_(u["mo"]).post(_url(deal, "approve"))
    state = api.as_(u["vera"]).get(_url(deal)).json["data"][0]      # named user: Vera, by e-mail
    assert state["step"] == 3 and state["may"]["approve"] is True
    assert [s["skipped"] for s in state["steps"]] == [False, True, True, False]
    state = api.as_(u["bea"]).post(_url(deal, "approve")).json     # the user field's user
    assert state["status"] == "approved"
    assert {d["approver"]["name"]: d["decision"] for d in state["steps"][3]["decisions"]} == {
        "Bea": "approved", "Vera": "cancelled"}
    assert api.as_(u["vera"]).get("/api/v1/_approvals").json["data"] == []


def test_submit_is_refused_when_not_needed_not_allowed_or_already_pending(org):
    rt, api, u = org
    small = _deal(rt, u["cleo"], 10)
    r = api.as_(u["cleo"]).post(_url(small, "submit"))
    assert r.status_code == 422 and _kind(r) == "not-needed" and "amount > 1000" in r.json["detail"]
    deal = _deal(rt, u["cleo"], 2000)
    r = api.as_(u["mo"]).post(_url(deal, "submit"))                 # not the owner
    assert r.status_code == 403 and _kind(r) == "forbidden"
    assert api.as_(u["cleo"]).post(_url(deal, "submit")).status_code == 200
    r = api.as_(u["cleo"]).post(_url(deal, "submit"))
    assert r.status_code == 409 and _kind(r) == "already-pending"
    assert len(_rows(rt, "_crm_approval")) == 1
    orphan = _user(rt, "Orphan", "clerk")
    lonely = _deal(rt, orphan, 2000)
    r = api.as_(orphan).post(_url(lonely, "submit"))
    assert r.status_code == 422 and _kind(r) == "no-approver" and "boss" in r.json["detail"]
    assert len(_rows(rt, "_crm_approval")) == 1                     # nothing half-written
    assert rt.records.get("deal", lonely["id"])["approval_status"] == "none"
    never = _deal(rt, u["cleo"], 3000)
    r = api.as_(u["mo"]).post(_url(never, "approve"))
    assert r.status_code == 409 and _kind(r) == "not-pending" and "never submitted" in r.json["detail"]


def test_reject_needs_a_comment_then_the_record_can_be_resubmitted(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 2000)
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    r = api.as_(u["gina"]).post(_url(deal, "reject"), {})
    assert r.status_code == 403 and _kind(r) == "not-approver"
    r = api.as_(u["mo"]).post(_url(deal, "reject"), {})
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "comment"
    assert rt.records.get("deal", deal["id"])["approval_status"] == "pending"
    state = api.as_(u["mo"]).post(_url(deal, "reject"), {"comment": "too much"}).json
    assert state["status"] == "rejected"
    assert rt.records.get("deal", deal["id"])["approval_status"] == "rejected"
    assert any("rejected" in n["message"] for n in rt.records.query("notification", where={"user": u["cleo"]["id"]}))
    # unlocked again: the owner changes it and submits again
    assert api.as_(u["cleo"]).patch(f"/api/v1/deal/{deal['id']}", {"amount": "1500"}).status_code == 200
    state = api.as_(u["cleo"]).post(_url(deal, "submit")).json
    assert state["status"] == "pending"
    history = api.as_(u["cleo"]).get(_url(deal)).json["data"]
    assert [h["status"] for h in history] == ["pending", "rejected"]
    assert history[1]["steps"][0]["decisions"][0]["comment"] == "too much"


def test_recall_by_the_submitter_only(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 2000)
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    r = api.as_(u["mo"]).post(_url(deal, "recall"))
    assert r.status_code == 403
    state = api.as_(u["cleo"]).post(_url(deal, "recall")).json
    assert state["status"] == "recalled"
    assert rt.records.get("deal", deal["id"])["approval_status"] == "recalled"
    assert api.as_(u["mo"]).get("/api/v1/_approvals").json["data"] == []
    r = api.as_(u["mo"]).post(_url(deal, "approve"))
    assert r.status_code == 409 and "recalled" in r.json["detail"]


# -- the lock ----------------------------------------------------------------------------------------

def test_a_pending_record_is_locked_but_for_approvers_admins_and_editable_fields(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 2000)
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    path = f"/api/v1/deal/{deal['id']}"
    r = api.as_(u["cleo"]).patch(path, {"amount": "900"})
    assert r.status_code == 422 and "pending approval" in str(r.json) and "note" in str(r.json)
    assert rt.records.get("deal", deal["id"])["amount"] == 2000
    assert api.as_(u["cleo"]).patch(path, {"note": "context for the boss"}).status_code == 200
    assert api.as_(u["mo"]).patch(path, {"amount": "1900"}).status_code == 200        # the current approver
    assert api.as_(u["admin"]).patch(path, {"name": "Renamed"}).status_code == 200    # an admin
    with pytest.raises(Exception, match="pending approval"):
        rt.records.delete("deal", deal["id"], context=Context(user_id=u["cleo"]["id"]))
    with pytest.raises(Exception, match="pending approval"):
        rt.records.update("deal", deal["id"], {"amount": 1}, context=Context(user_id=u["gina"]["id"]))
    # a bulk update (the API's and the import's path) meets the lock, the row refused
    result = rt.records.bulk("deal", [{"id": deal["id"], "amount": 5}], mode="update", atomic=True,
                             context=Context(user_id=u["cleo"]["id"]))
    assert not result.ok and "pending approval" in str(result.items)
    assert rt.records.get("deal", deal["id"])["amount"] == 1900
    # the status field is the engine's: nobody sets it by hand
    r = api.as_(u["cleo"]).patch(path, {"approval_status": "approved"})
    assert r.status_code in (403, 422)
    # the workflow guard composes: not approved yet, the transition is refused
    r = api.as_(u["admin"]).post(f"{path}/transitions/confirm")
    assert r.status_code == 422, r.json
    api.as_(u["mo"]).post(_url(deal, "approve"))
    assert rt.records.get("deal", deal["id"])["approval_status"] == "approved"
    r = api.as_(u["cleo"]).post(f"{path}/transitions/confirm")
    assert r.status_code == 200 and r.json["stage"] == "confirmed"


def test_the_lock_through_the_ui_form_inline_bulk_and_the_inbox(org):
    from engine.security.passwords import set_password
    from tests.ui_kit import Browser

    rt, api, u = org
    for who in ("cleo", "mo"):
        set_password(rt.records, u[who]["id"], "correct horse 1")
    deal = _deal(rt, u["cleo"], 2000)
    cleo, mo = Browser(api.app).login("cleo@example.com"), Browser(api.app).login("mo@example.com")
    page = cleo.get(f"/ui/deal/{deal['id']}").get_data(as_text=True)
    assert 'id="approval-panel"' in page and 'id="approval-submit"' in page
    r = cleo.post(f"/ui/approvals/deal/{deal['id']}/submit")
    assert r.status_code == 302
    assert rt.records.get("deal", deal["id"])["approval_status"] == "pending"
    page = cleo.get(f"/ui/deal/{deal['id']}").get_data(as_text=True)
    assert "Pending approval" in page and 'id="approval-recall"' in page and 'id="approval-approve"' not in page
    r = cleo.post(f"/ui/deal/{deal['id']}/edit", {"name": "Changed", "amount": "1", "version": "2"})
    assert rt.records.get("deal", deal["id"])["name"] == "Big one"
    r = cleo.post("/ui/deal/_bulk", [("ids", str(deal["id"])), ("action", "update"), ("field", "amount"),
                                     ("value", "3")], follow_redirects=True)
    assert "pending approval" in r.get_data(as_text=True)
    assert rt.records.get("deal", deal["id"])["amount"] == 2000
    inbox = mo.get("/ui/approvals").get_data(as_text=True)
    assert "Big one" in inbox and 'data-approve="' in inbox
    r = mo.post(f"/ui/approvals/deal/{deal['id']}/reject", {"comment": "", "next": "/ui/approvals"}, follow_redirects=True)
    assert "a rejection needs a comment" in r.get_data(as_text=True)
    r = mo.post(f"/ui/approvals/deal/{deal['id']}/approve", {"next": "/ui/approvals"}, follow_redirects=True)
    assert "Nothing waits for your approval" in r.get_data(as_text=True)
    assert rt.records.get("deal", deal["id"])["approval_status"] == "approved"
    mo.lang("zh")
    assert "审批" in mo.get("/ui/approvals").get_data(as_text=True)
    # from the list: the ticked records submitted, each refusal named
    other, small = _deal(rt, u["cleo"], 3000), _deal(rt, u["cleo"], 5)
    assert 'data-approval="approval-submit"' in cleo.get("/ui/deal").get_data(as_text=True)
    r = cleo.post("/ui/approvals/deal/_submit", [("ids", str(other["id"])), ("ids", str(small["id"]))],
                  follow_redirects=True)
    page = r.get_data(as_text=True)
    assert "Submitted 1 record(s) for approval." in page and f"#{small['id']}: this deal needs no approval" in page
    assert rt.records.get("deal", other["id"])["approval_status"] == "pending"
    assert rt.records.get("deal", small["id"])["approval_status"] == "none"


# -- races and triggers --------------------------------------------------------------------------------

def _race(calls) -> list:
    """Run the calls in threads that start together; each result or the ApprovalError it raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except ApprovalError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_approve_and_recall_one_wins_the_other_gets_a_conflict(org):
    rt, api, u = org
    service = rt.extensions["approvals"]
    winners = set()
    for _round in range(4):
        deal = _deal(rt, u["cleo"], 2000)
        service.submit("deal", deal["id"], user_id=u["cleo"]["id"], access=None)
        results = _race([lambda rid=deal["id"]: service.approve("deal", rid, user_id=u["mo"]["id"]),
                         lambda rid=deal["id"]: service.recall("deal", rid, user_id=u["cleo"]["id"])])
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, ApprovalError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].status == 409 and lost[0].kind in ("not-pending", "conflict"), lost[0].message
        assert rt.records.get("deal", deal["id"])["approval_status"] == won[0]["status"]
        [instance] = [i for i in _rows(rt, "_crm_approval") if i["record_id"] == deal["id"]]
        assert instance["status"] == won[0]["status"]
        winners.add(won[0]["status"])
    # through the API the loser's answer is a 409 problem naming what happened
    deal = _deal(rt, u["cleo"], 2000)
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    api.as_(u["cleo"]).post(_url(deal, "recall"))
    r = api.as_(u["mo"]).post(_url(deal, "approve"))
    assert r.status_code == 409 and r.mimetype == "application/problem+json" and "recalled" in r.json["detail"]


def test_the_approved_trigger_runs_automations_and_the_openapi_document_has_the_routes(org):
    rt, api, u = org
    deal = _deal(rt, u["cleo"], 2000)
    api.as_(u["cleo"]).post(_url(deal, "submit"))
    api.as_(u["mo"]).post(_url(deal, "approve"))
    rt.workflow.runner.drain()
    [note] = rt.records.query("notification", where={"automation": "tell_on_approved"})
    assert note["message"] == "Approved: Big one" and note["user"] == u["cleo"]["id"]
    # an automation on `submitted` writes the pending record (run_as: system: the lock lets it; with
    # the submitter's rights, the default, it would meet the lock as the submitter does)
    huge = _deal(rt, u["cleo"], 200000)
    api.as_(u["cleo"]).post(_url(huge, "submit"))
    rt.workflow.runner.drain()
    assert rt.records.get("deal", huge["id"])["name"] == "Big one (in approval)"
    assert rt.records.get("deal", deal["id"])["name"] == "Big one"      # its condition did not hold
    from engine.processes.approvals.api import openapi_fragment

    doc = openapi_fragment(rt.model, rt.extensions["approvals"].approvals)["paths"]
    assert {"/api/v1/_approvals", "/api/v1/deal/{id}/_approval", "/api/v1/deal/{id}/_approval/reject"} <= set(doc)


# -- the base CRM ------------------------------------------------------------------------------------

def test_the_base_crm_quote_discount_approval_end_to_end(crm):
    api = Api(crm)
    director = _user(crm, "Dina", "sales_director")
    boss = _user(crm, "Max", "manager")
    rep = _user(crm, "Sally", "sales", boss["id"])
    account = crm.records.create("account", {"name": "Acme", "owner_id": rep["id"]}, context=SYSTEM)
    opp = crm.records.create("opportunity", {"name": "Deal", "stage": "prospecting", "owner_id": rep["id"],
                                             "account": account["id"], "close_date": "2099-01-01"}, context=SYSTEM)

    def quote(discount):
        return crm.records.create("quote", {"name": f"Q {discount}", "opportunity": opp["id"], "discount": discount,
                                            "owner_id": rep["id"]}, context=SYSTEM)

    small, medium, large = quote(10), quote(20), quote(40)
    sally = api.as_(rep)
    assert sally.post(f"/api/v1/quote/{small['id']}/_approval/submit").status_code == 422
    state = sally.post(f"/api/v1/quote/{medium['id']}/_approval/submit").json
    assert state["status"] == "pending" and state["steps"][0]["decisions"][0]["approver"]["id"] == boss["id"]
    r = api.as_(director).post(f"/api/v1/quote/{medium['id']}/_approval/approve")
    assert r.status_code == 403
    state = api.as_(boss).post(f"/api/v1/quote/{medium['id']}/_approval/approve").json
    assert state["status"] == "approved" and state["steps"][1]["skipped"] is True
    sally.post(f"/api/v1/quote/{large['id']}/_approval/submit")
    assert api.as_(boss).post(f"/api/v1/quote/{large['id']}/_approval/approve").json["status"] == "pending"
    assert [i["record_id"] for i in api.as_(director).get("/api/v1/_approvals").json["data"]] == [large["id"]]
    assert sally.patch(f"/api/v1/quote/{large['id']}", {"discount": 10}).status_code == 422
    assert api.as_(director).post(f"/api/v1/quote/{large['id']}/_approval/approve").json["status"] == "approved"
    assert crm.records.get("quote", large["id"])["approval_status"] == "approved"
    # contracts above 100000 need finance
    treasurer = _user(crm, "Fin", "finance")
    contract = crm.records.create("contract", {"name": "C", "account": account["id"], "start_date": "2099-01-01",
                                               "contract_value": 250000, "owner_id": boss["id"]}, context=SYSTEM)
    state = api.as_(boss).post(f"/api/v1/contract/{contract['id']}/_approval/submit").json
    assert [d["approver"]["id"] for d in state["steps"][0]["decisions"]] == [treasurer["id"]]
    r = api.as_(boss).post(f"/api/v1/contract/{contract['id']}/_approval/reject", {"comment": "no"})
    assert r.status_code == 403 and _kind(r) == "not-approver"
    r = api.as_(treasurer).post(f"/api/v1/contract/{contract['id']}/_approval/reject", {})
    assert r.status_code == 422
    assert api.as_(treasurer).post(f"/api/v1/contract/{contract['id']}/_approval/reject",
                                   {"comment": "payment terms"}).json["status"] == "rejected"



def test_line_discounts_count_and_the_lines_are_locked_with_their_pending_quote(crm):
    api = Api(crm)
    boss = _user(crm, "Max", "manager")
    rep = _user(crm, "Sally", "sales", boss["id"])
    account = crm.records.create("account", {"name": "Acme", "owner_id": rep["id"]}, context=SYSTEM)
    opp = crm.records.create("opportunity", {"name": "Deal", "stage": "prospecting", "owner_id": rep["id"],
                                             "account": account["id"], "close_date": "2099-01-01"}, context=SYSTEM)
    product = crm.records.create("product", {"name": "Widget", "code": "W-9"}, context=SYSTEM)
    book = crm.records.create("price_book", {"name": "Standard"}, context=SYSTEM)
    crm.records.create("price_book_entry", {"price_book": book["id"], "product": product["id"], "unit_price": "100"},
                       context=SYSTEM)
    quote = crm.records.create("quote", {"name": "Q", "opportunity": opp["id"], "discount": 10, "price_book": book["id"],
                                         "owner_id": rep["id"]}, context=SYSTEM)
    sally = api.as_(rep)
    line = sally.post("/api/v1/quote_line", {"quote": quote["id"], "product": product["id"], "quantity": 4,
                                             "discount": 5})
    assert line.status_code == 201, line.json
    # 400 list, 380 after the line's 5 %, 342 after the quote's 10 %: 14.5 % off, no approval needed yet
    assert crm.records.get("quote", quote["id"])["total_discount"] == Decimal("14.5")
    assert sally.post(f"/api/v1/quote/{quote['id']}/_approval/submit").status_code == 422
    assert sally.patch(f"/api/v1/quote_line/{line.json['id']}", {"discount": 10}).status_code == 200
    assert crm.records.get("quote", quote["id"])["total_discount"] == Decimal("19")   # 400 -> 324
    assert sally.post(f"/api/v1/quote/{quote['id']}/_approval/submit").json["status"] == "pending"
    before = crm.records.get("quote", quote["id"])
    # pending: the lines are locked with the quote (its totals are what was submitted)
    refused = [sally.patch(f"/api/v1/quote_line/{line.json['id']}", {"discount": 50}),
               sally.post("/api/v1/quote_line", {"quote": quote["id"], "product": product["id"], "quantity": 1}),
               sally.delete(f"/api/v1/quote_line/{line.json['id']}")]
    assert [r.status_code for r in refused] == [422, 422, 422]
    assert all("pending approval" in r.get_data(as_text=True) for r in refused)
    after = crm.records.get("quote", quote["id"])
    assert (after["grand_total"], after["version"]) == (before["grand_total"], before["version"])
    # the approver may still correct a line
    assert api.as_(boss).patch(f"/api/v1/quote_line/{line.json['id']}", {"discount": 8}).status_code == 200
    assert api.as_(boss).post(f"/api/v1/quote/{quote['id']}/_approval/approve").json["status"] == "approved"
    assert sally.patch(f"/api/v1/quote_line/{line.json['id']}", {"quantity": 5}).status_code == 200

# -- the platform seam: a capability's own tables -------------------------------------------------------

def test_capabilities_declare_their_tables_through_crm_tables(crm):
    from engine.plugins import hookimpl, make_plugin_manager

    class Clocks:
        @hookimpl
        def crm_tables(self, metadata):
            sa.Table("_crm_sla_clock", metadata, sa.Column("id", sa.Integer(), primary_key=True))

    pm = make_plugin_manager(entry_point_plugins=False, extra=(Clocks(),))
    md = sa.MetaData()
    pm.hook.crm_tables(metadata=md)
    assert {"_crm_approval", "_crm_approval_step", "_crm_pool_hold", "_crm_pool_event", "_crm_pool_limit",
            "_crm_sla_clock"} <= set(md.tables)
    # the runtime's tables hold the default plugins' (migrated, so usable), even with a capability off
    assert {"_crm_approval", "_crm_approval_step", "_crm_pool_hold"} <= set(crm.records.metadata.tables)
    with crm.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(crm.records.metadata.tables["_crm_approval"])).scalar() == 0


def test_turned_off_the_approvals_leave_no_routes_and_no_lock_but_keep_their_tables(make_runtime):
    rt = make_runtime(disabled_plugins=("approvals",))
    assert "approvals" not in rt.extensions and "_crm_approval" in rt.records.metadata.tables
    owner = _user(rt, "Owen", "sales")
    account = rt.records.create("account", {"name": "Acme", "owner_id": owner["id"]}, context=SYSTEM)
    opp = rt.records.create("opportunity", {"name": "D", "stage": "prospecting", "account": account["id"],
                                            "close_date": "2099-01-01", "owner_id": owner["id"]}, context=SYSTEM)
    quote = rt.records.create("quote", {"name": "Q", "opportunity": opp["id"], "discount": 50}, context=SYSTEM)
    r = Api(rt).as_(owner).post(f"/api/v1/quote/{quote['id']}/_approval/submit")
    assert r.status_code == 404


def test_concurrent_submits_and_a_submit_racing_a_decision_end_cleanly(org):
    rt, _, u = org
    service = rt.extensions["approvals"]
    deal = _deal(rt, u["cleo"], 2000)
    results = _race([lambda: service.submit("deal", deal["id"], user_id=u["cleo"]["id"], access=None)
                     for _ in range(3)])
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(r.kind == "already-pending" for r in results if isinstance(r, ApprovalError))
    assert len([i for i in _rows(rt, "_crm_approval") if i["record_id"] == deal["id"]]) == 1
    # a submit and an approval at the same instant: no deadlock; the approval holds, the submit is
    # refused (it came first: pending) or starts a new approval of the approved record (it came after)
    for _round in range(3):
        results = _race([lambda: service.submit("deal", deal["id"], user_id=u["cleo"]["id"], access=None),
                         lambda: service.approve("deal", deal["id"], user_id=u["mo"]["id"])])
        assert isinstance(results[1], dict) and results[1]["status"] == "approved", results
        submitted = results[0]
        assert (isinstance(submitted, ApprovalError) and submitted.kind == "already-pending") or (
            isinstance(submitted, dict) and submitted["status"] == "pending"), submitted
        if isinstance(submitted, ApprovalError):
            service.submit("deal", deal["id"], user_id=u["cleo"]["id"], access=None)
