"""Workflows (state machines) and the base CRM's automations, through the record service and the API."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.metadata import MetadataError
from engine.plugins import hookimpl
from engine.security.tokens import create_token
from engine.storage.records import Context

PLUGINS = Path(__file__).parent / "plugins"


def _user(rt, role="sales", name="Sam", **extra):
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role, **extra},
                             context=Context(system=True))


def _client(rt, user):
    from engine.app import create_app

    _, token = create_token(rt.records, user["id"], "t")
    client = create_app(runtime=rt).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    return client, headers


def _deal(rt, ctx, **values):
    acc = rt.records.create("account", {"name": "Acme"}, context=ctx)
    return rt.records.create("opportunity", {"name": "Deal", "account": acc["id"], "amount": 1000,
                                             "close_date": date.today() + timedelta(days=30), **values}, context=ctx)


def test_an_illegal_stage_change_through_patch_is_refused_naming_the_allowed_transitions(crm):
    sam = _user(crm)
    client, headers = _client(crm, sam)
    opp = _deal(crm, Context(user_id=sam["id"]))
    r = client.patch(f"/api/v1/opportunity/{opp['id']}", json={"stage": "won"}, headers=headers)
    assert r.status_code == 422
    [error] = r.json["errors"]
    assert error["field"] == "stage" and error["code"] == "transition"
    assert "from 'prospecting' to 'won'" in error["message"]
    assert "qualify (to qualification), propose (to proposal), lose (to lost)" in error["message"]
    assert crm.records.get("opportunity", opp["id"])["stage"] == "prospecting"   # nothing written


def test_a_legal_transition_runs_its_actions(crm):
    sam = _user(crm)
    client, headers = _client(crm, sam)
    opp = _deal(crm, Context(user_id=sam["id"]))
    listed = client.get(f"/api/v1/opportunity/{opp['id']}/transitions", headers=headers).json
    assert listed["state"] == "prospecting"
    assert [t["name"] for t in listed["data"]] == ["qualify", "propose", "lose"]
    assert listed["data"][2]["requires"] == ["lost_reason"]
    r = client.post(f"/api/v1/opportunity/{opp['id']}/transitions/propose", headers=headers)
    assert r.status_code == 200 and r.json["stage"] == "proposal"
    crm.workflow.runner.drain()
    [task] = crm.records.query("activity")
    assert task["subject"] == "Follow up on the proposal: Deal" and task["related_to"].id == opp["id"]
    assert task["owner_id"] == sam["id"] and task["due_date"] == date.today() + timedelta(days=3)
    # The same change made by PATCH is the same transition, with the same follow-up.
    other = _deal(crm, Context(user_id=sam["id"]), name="Other")
    assert client.patch(f"/api/v1/opportunity/{other['id']}", json={"stage": "proposal"},
                        headers=headers).status_code == 200
    crm.workflow.runner.drain()
    assert len(crm.records.query("activity")) == 2


def test_transitions_check_roles_guards_required_fields_and_versions(crm):
    boss = _user(crm, role="manager", name="Boss")
    sam = _user(crm, manager=boss["id"])                     # Sam reports to Boss, who sees Sam's deals
    client, headers = _client(crm, sam)
    boss_client, boss_headers = _client(crm, boss)
    opp = _deal(crm, Context(user_id=sam["id"]), amount=0)
    url = f"/api/v1/opportunity/{opp['id']}"
    assert client.post(f"{url}/transitions/nope", headers=headers).status_code == 404
    r = client.post(f"{url}/transitions/lose", headers=headers)            # requires lost_reason
    assert r.status_code == 422 and {e["field"] for e in r.json["errors"]} == {"lost_reason"}
    assert client.post(f"{url}/transitions/propose", headers=headers).status_code == 200
    r = client.post(f"{url}/transitions/win", headers=headers)             # when: amount > 0
    assert r.status_code == 422 and "amount > 0" in r.json["errors"][0]["message"]
    assert client.patch(url, json={"amount": 5000}, headers=headers).status_code == 200
    stale = client.get(url, headers=headers).headers["ETag"]
    assert client.post(f"{url}/transitions/win", headers={**headers, "If-Match": '"1-1"'}).status_code == 412
    assert client.post(f"{url}/transitions/win", headers={**headers, "If-Match": stale}).status_code == 200
    # Reopening is for managers: Sam is refused and does not see it; the manager may.
    assert client.get(f"{url}/transitions", headers=headers).json["data"] == []
    r = client.post(f"{url}/transitions/reopen", headers=headers)
    assert r.status_code == 422 and "only manager may reopen" in r.json["errors"][0]["message"]
    assert [t["name"] for t in boss_client.get(f"{url}/transitions", headers=boss_headers).json["data"]] == ["reopen"]
    assert boss_client.post(f"{url}/transitions/reopen", headers=boss_headers).json["stage"] == "prospecting"
    history = [(h["field"], h["old_value"], h["new_value"]) for h in
               client.get(f"{url}/history", headers=headers).json["data"] if h["field"] == "stage"]
    assert history == [("stage", "prospecting", "proposal"), ("stage", "proposal", "won"), ("stage", "won", "prospecting")]


def test_new_leads_are_assigned_round_robin_among_active_sales_users(crm):
    creator = _user(crm, role="marketing", name="Mia")
    a, b = _user(crm, name="Ann"), _user(crm, name="Bob")
    _user(crm, name="Gone", active=False)
    _user(crm, role="service", name="Sue")
    ctx = Context(user_id=creator["id"])
    owners = [crm.records.create("lead", {"last_name": f"L{i}", "company": "Co"}, context=ctx)["owner_id"]
              for i in range(4)]
    assert owners == [a["id"], b["id"], a["id"], b["id"]]
    given = crm.records.create("lead", {"last_name": "Mine", "company": "Co", "owner_id": creator["id"]}, context=ctx)
    assert given["owner_id"] == creator["id"]          # an owner given is kept
    result = crm.records.bulk("lead", [{"last_name": f"B{i}", "company": "Co"} for i in range(3)], context=ctx)
    assert result.ok
    bulk_owners = [crm.records.get("lead", item["id"])["owner_id"] for item in result.items]
    assert bulk_owners == [a["id"], b["id"], a["id"]]
    # the bulk call counted its turns in memory and stored the last one: the next write goes on from it
    after = crm.records.create("lead", {"last_name": "Next", "company": "Co"}, context=ctx)
    assert after["owner_id"] == b["id"]
    refused = crm.records.bulk("lead", [{"last_name": "R1", "company": "Co"}, {"last_name": None, "company": "Co"}],
                               context=ctx)
    assert not refused.ok   # atomic: rolled back with its turns, the rotation goes on where it was
    assert crm.records.create("lead", {"last_name": "Then", "company": "Co"}, context=ctx)["owner_id"] == a["id"]


def test_a_lead_with_nobody_to_assign_is_still_saved_and_the_run_says_why(crm):
    creator = _user(crm, role="marketing", name="Mia")
    lead = crm.records.create("lead", {"last_name": "Orphan", "company": "Co"}, context=Context(user_id=creator["id"]))
    assert lead["owner_id"] == creator["id"]
    [run] = [r for r in _runs(crm) if r["automation"] == "lead_round_robin"]
    assert run["status"] == "dead" and "no active user with role 'sales'" in run["error"]


def _runs(rt):
    import sqlalchemy as sa

    with rt.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(rt.workflow.runs).order_by(rt.workflow.runs.c.id))]


STAMP_SITE = """
    entity: account
    fields:
      stamped_at: {type: datetime, readonly: true}
    ---
    automation: stamp_account
    on: {entity: activity, events: [created, updated], changed: [related_to, start_at, due_date]}
    run_as: system     # stamped_at is read-only
    actions:
      - do: update_related
        path: [related_to, related_to.account]
        entity: account
        values: {stamped_at: "NOW()"}
"""


def test_update_related_follows_a_reference_and_a_lookup_behind_it(make_runtime, write_tree):
    """An activity about an account, or about one of its contacts, stamps the account (as the base CRM
    once kept last_activity_at, before the follow-up signals did)."""
    crm = make_runtime(site_dir=write_tree("site", {"stamp.yaml": STAMP_SITE}))
    sam = _user(crm)
    ctx = Context(user_id=sam["id"])
    acc = crm.records.create("account", {"name": "Acme"}, context=ctx)
    other = crm.records.create("account", {"name": "Other"}, context=ctx)
    contact = crm.records.create("contact", {"last_name": "Doe", "account": acc["id"]}, context=ctx)
    assert crm.records.get("account", acc["id"])["stamped_at"] is None
    before = datetime.now(timezone.utc)
    crm.records.create("activity", {"subject": "Call", "type": "call", "related_to": f"contact:{contact['id']}"},
                       context=ctx)
    crm.workflow.runner.drain()
    stamped = crm.records.get("account", acc["id"])["stamped_at"]
    assert stamped is not None and stamped >= before
    assert crm.records.get("account", other["id"])["stamped_at"] is None
    crm.records.create("activity", {"subject": "Visit", "type": "meeting", "related_to": f"account:{other['id']}"},
                       context=ctx)
    crm.workflow.runner.drain()
    assert crm.records.get("account", other["id"])["stamped_at"] >= stamped


def test_a_high_priority_case_unassigned_for_4_hours_is_escalated(crm):
    owner = _user(crm, role="service", name="Sue")
    ctx = Context(user_id=owner["id"])
    urgent = crm.records.create("case", {"subject": "Down", "priority": "high"}, context=ctx)
    handled = crm.records.create("case", {"subject": "Also down", "priority": "high"}, context=ctx)
    low = crm.records.create("case", {"subject": "Typo", "priority": "low"}, context=ctx)
    crm.records.update("case", handled["id"], {"assigned_to": owner["id"]}, context=ctx)
    sched = crm.scheduler()
    now = datetime.now(timezone.utc)
    assert sched.tick(now + timedelta(hours=3))["scheduled"] == 0
    assert sched.tick(now + timedelta(hours=5))["scheduled"] == 1
    crm.workflow.runner.drain()
    assert crm.records.get("case", urgent["id"])["status"] == "escalated"
    assert crm.records.get("case", handled["id"])["status"] == "new"
    assert crm.records.get("case", low["id"])["status"] == "new"
    [note] = crm.records.query("notification")
    assert note["user"] == owner["id"] and note["message"] == "Case escalated, unassigned for 4 hours: Down"


def test_plugin_actions_and_functions(make_runtime, write_tree):
    site = write_tree("site", {"a.yaml": """
        automation: loud_codes
        on: {entity: lead, events: [created, updated]}
        actions:
          - {do: shout, field: company}
          - {do: call, function: stamp, args: {subject: "'Lead from ' & company"}}
        """})
    rt = make_runtime(site_dir=site, plugin_dirs=(PLUGINS,))
    ctx = Context(user_id=_user(rt)["id"])
    made = rt.records.create("lead", {"last_name": "Doe", "company": "Acme"}, context=ctx)
    assert made["company"] == "ACME"                   # before save, in the same write
    rt.workflow.runner.drain()
    runs = [r for r in _runs(rt) if r["automation"] == "loud_codes"]
    assert [r["status"] for r in runs] == ["done"]
    [stamp] = rt.records.query("activity")
    assert stamp["subject"] == "Lead from ACME" and stamp["related_to"].id == made["id"]


BAD = {
    "unknown action": ("{do: teleport}", "unknown action 'teleport'"),
    "bad formula": ("{do: set_fields, values: {name: \"name &\"}}", "syntax error"),
    "unknown field": ("{do: set_fields, values: {nope: \"1\"}}", "opportunity has no field 'nope'"),
    "wrong type": ("{do: set_fields, values: {amount: \"'many'\"}}", "must give currency, but gives text"),
    "unknown property": ("{do: notify, message: \"'x'\", shout: true}", "unknown property of notify"),
    "link": ("{do: create_record, entity: product, link: name}", "product.name is not a lookup or reference"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_automation_metadata_errors_name_the_file_and_line(make_runtime, write_tree, case):
    action, message = BAD[case]
    site = write_tree("site", {"rules.yaml": f"""
        automation: broken
        on: {{entity: opportunity, events: [created]}}
        actions:
          - {{do: notify, message: "'fine'"}}
          - {action}
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "rules.yaml:5" in text and message in text, text


def test_trigger_and_workflow_errors_name_the_file_and_line(make_runtime, write_tree):
    site = write_tree("site", {"rules.yaml": """
        automation: a
        on: {entity: opportunity, schedule: {before: name, days: 3}}
        actions: [{do: notify, message: "'x'"}]
        ---
        automation: b
        on: {entity: opportunity, transition: teleport}
        actions: [{do: notify, message: "'x'"}]
        ---
        automation: c
        on: {entity: opportunity, schedule: {cron: "61 * * * *"}}
        actions: [{do: notify, message: "'x'"}]
        """, "opportunity.yaml": """
        entity: opportunity
        workflow:
          field: stage
          transitions:
            - {name: jump, from: nowhere, to: won, when: "amount"}
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "rules.yaml:2" in text and "'name' is not a stored date or datetime field" in text
    assert "rules.yaml:6" in text and "no workflow transition 'teleport'" in text
    assert "rules.yaml:10" in text and "not a valid cron expression" in text
    assert "opportunity.yaml:5" in text and "'nowhere' is not a value of opportunity.stage" in text
    assert "must give boolean" in text


def test_a_cron_automation_fires_once_per_slot_for_the_matching_records(make_runtime, write_tree):
    site = write_tree("site", {"cron.yaml": """
        automation: morning_nudge
        on: {entity: opportunity, schedule: {cron: "0 8 * * *"}}
        when: "stage = 'prospecting'"
        actions: [{do: notify, message: "'Move it: ' & name"}]
        """})
    rt = make_runtime(site_dir=site)
    sam = _user(rt)
    ctx = Context(user_id=sam["id"])
    opp = _deal(rt, ctx, name="Stuck")
    moving = _deal(rt, ctx, name="Moving")
    rt.records.update("opportunity", moving["id"], {"stage": "qualification"}, context=ctx)
    sched = rt.scheduler()
    start = datetime(2030, 1, 1, 7, 0, tzinfo=timezone.utc)
    assert sched.tick(start)["cron"] == 0                          # first pass: plans the next slot
    assert sched.tick(start + timedelta(minutes=59))["cron"] == 0
    assert sched.tick(start + timedelta(hours=1))["cron"] == 1     # 08:00, one matching record
    assert sched.tick(start + timedelta(hours=2))["cron"] == 0
    assert sched.tick(start + timedelta(days=3))["cron"] == 1      # down for two days: one catch-up run
    rt.workflow.runner.drain()
    notes = rt.records.query("notification", where={"automation": "morning_nudge"})
    assert [n["message"] for n in notes] == ["Move it: Stuck", "Move it: Stuck"]
    assert {n["record"].id for n in notes} == {opp["id"]}


def test_transitions_obey_permissions(crm):
    sam = _user(crm)
    opp = _deal(crm, Context(user_id=sam["id"]))
    mia = _user(crm, role="marketing", name="Mia")               # no rights on opportunities
    client, headers = _client(crm, mia)
    assert client.get(f"/api/v1/opportunity/{opp['id']}/transitions", headers=headers).status_code == 403
    assert client.post(f"/api/v1/opportunity/{opp['id']}/transitions/qualify", headers=headers).status_code == 403
    assert crm.records.get("opportunity", opp["id"])["stage"] == "prospecting"


def test_after_commit_actions_write_with_the_rights_of_the_user_who_started_them(make_runtime, write_tree):
    site = write_tree("site", {"a.yaml": """
        automation: as_user
        on: {entity: lead, events: [created]}
        actions: [{do: create_record, entity: campaign, values: {name: "'From ' & last_name", type: "'email'"}}]
        ---
        automation: tell_the_owner
        on: {entity: lead, events: [created]}
        actions: [{do: notify, message: "'Yours: ' & last_name"}]
        ---
        automation: as_system
        on: {entity: lead, events: [created]}
        run_as: system
        actions: [{do: create_record, entity: campaign, values: {name: "'System ' & last_name", type: "'email'"}}]
        """})
    rt = make_runtime(site_dir=site, job_backoff=0.01)
    sam = _user(rt)                                   # sales: may create leads, may only read campaigns
    client, headers = _client(rt, sam)
    assert client.post("/api/v1/lead", json={"last_name": "Doe", "company": "Co"}, headers=headers).status_code == 201
    assert rt.workflow.runner.drain()
    runs = {r["automation"]: r for r in _runs(rt)}
    assert runs["as_system"]["status"] == "done"
    [note] = rt.records.query("notification", where={"automation": "tell_the_owner"})   # run as Sam, who may
    assert note["message"] == "Yours: Doe" and note["user"] == sam["id"]                # not create them himself
    assert runs["as_user"]["status"] in ("retrying", "dead")
    assert "campaign" in runs["as_user"]["error"]
    assert [c["name"] for c in rt.records.query("campaign")] == ["System Doe"]
    from engine.security.audit import query_audit

    denied = query_audit(rt.records, kind="permission_denied", user_id=sam["id"])
    assert denied and denied[0]["entity"] == "campaign"     # recorded although the job's write rolled back


class Pinger:
    """A plugin that fires its own automation trigger, ``pinged`` (as conversions fire ``converted``)."""

    @hookimpl
    def crm_automation_triggers(self):
        return ["pinged"]


def test_a_plugin_trigger_runs_the_automations_that_follow_it(settings, write_tree):
    from engine.runtime import Runtime

    site = write_tree("site", {"ping.yaml": """
        automation: on_ping
        on: {entity: account, events: [pinged]}
        when: "rating = 'hot'"
        actions:
          - {do: set_fields, values: {description: "'pinged ' & name"}}
        """})
    rt = Runtime.boot(settings.with_(site_dir=site), extra_plugins=(Pinger(),))
    try:
        rt.migrate()
        ctx = Context(user_id=_user(rt)["id"])
        hot = rt.records.create("account", {"name": "Hot", "rating": "hot"}, context=ctx)
        cold = rt.records.create("account", {"name": "Cold", "rating": "cold"}, context=ctx)
        assert [r for r in _runs(rt) if r["automation"] == "on_ping"] == []     # a write is not a ping
        with rt.db.write() as conn:
            assert rt.workflow.fire(conn, "account", "pinged", hot, context=ctx) == 1
            assert rt.workflow.fire(conn, "account", "pinged", cold, context=ctx) == 0   # its condition is false
        rt.workflow.runner.drain()
        assert rt.records.get("account", hot["id"])["description"] == "pinged Hot"
        assert rt.records.get("account", cold["id"])["description"] is None
        [run] = [r for r in _runs(rt) if r["automation"] == "on_ping"]
        assert (run["trigger"], run["status"]) == ("pinged", "done")
    finally:
        rt.close()


def test_an_event_no_plugin_fires_is_refused_at_its_line(make_runtime, write_tree):
    site = write_tree("site", {"ping.yaml": """
        automation: on_ping
        on: {entity: account, events: [created, pinged]}
        actions: [{do: notify, message: "'x'"}]
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    assert "ping.yaml:2" in str(info.value) and "'pinged' is no event" in str(info.value)
