"""The automation suite, run once with the in-process runner and once with real Redis and rq workers
(`crm worker` processes): webhooks (signed; failing ones retried, then dead and re-run from the
CLI), e-mail to a local SMTP sink, schedules driven by a controllable clock, a chain of automations
stopped at the depth limit, and a worker killed mid-job whose job is retried without repeating
its effect."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from email import message_from_bytes
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.storage.records import Context

from .automation_kit import REDIS_URL, Harness, Receiver, SmtpSink, payload, redis_available

PLUGINS = Path(__file__).parent / "plugins"
SECRET = "s3cret-for-tests"

AUTOMATIONS = """
automation: deal_webhook
on: {entity: opportunity, events: [created]}
when: "amount >= 1000"
actions:
  - {do: webhook, url_env: CRM_TEST_HOOK_URL, secret_env: CRM_TEST_HOOK_SECRET, timeout: 5}
---
automation: failing_webhook
on: {entity: contact, events: [created]}
retries: 2
actions:
  - {do: webhook, url_env: CRM_TEST_BAD_HOOK_URL, timeout: 5}
---
automation: case_email
on: {entity: case, events: [created]}
when: "NOT(ISBLANK(supplied_email))"
actions:
  - do: send_email
    to: supplied_email
    subject: "Case {{ record.case_number }}: {{ record.subject }}"
    body: "Hello {{ record.supplied_name }}, we received: {{ record.subject }}"
---
automation: stamp_then_wait
on: {entity: lead, events: [created]}
actions:
  - {do: call, function: stamp, args: {subject: "'Stamped ' & last_name"}}
  - {do: call, function: slow_once, args: {seconds: "60"}}
---
automation: loop
on: {entity: campaign, events: [updated], changed: [description]}
actions:
  - {do: call, function: touch}
"""


@pytest.fixture(params=["inprocess", "rq"])
def auto(request, make_runtime, write_tree, tmp_path, monkeypatch):
    kind = request.param
    if kind == "rq" and not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    receiver, smtp = Receiver(), SmtpSink()
    env = {"CRM_TEST_HOOK_URL": f"{receiver.url}/ok", "CRM_TEST_BAD_HOOK_URL": f"{receiver.url}/fail",
           "CRM_TEST_HOOK_SECRET": SECRET, "CRM_TEST_MARKER": str(tmp_path / "slow.marker")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    changes = dict(site_dir=write_tree("site", {"automations.yaml": AUTOMATIONS}), plugin_dirs=(PLUGINS,),
                   job_backoff=0.05, mail_url=f"smtp://127.0.0.1:{smtp.port}")
    if kind == "rq":
        changes.update(redis_url=REDIS_URL, queue_name=f"crm-test-{uuid.uuid4().hex[:12]}")
    harness = Harness(make_runtime(**changes), kind, env, receiver, smtp)
    if kind == "rq":
        harness.start_worker()
    yield harness
    harness.stop()
    receiver.close()
    smtp.close()


def _user(rt, role="sales", name="Sam"):
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role},
                             context=Context(system=True))


def _account(rt, ctx):
    return rt.records.create("account", {"name": "Acme"}, context=ctx)


def test_a_webhook_is_delivered_once_with_a_valid_signature(auto):
    rt = auto.rt
    ctx = Context(user_id=_user(rt)["id"])
    acc = _account(rt, ctx)
    small = rt.records.create("opportunity", {"name": "Small", "account": acc["id"], "amount": 10,
                                              "close_date": date.today() + timedelta(days=30)}, context=ctx)
    big = rt.records.create("opportunity", {"name": "Big", "account": acc["id"], "amount": 5000,
                                            "close_date": date.today() + timedelta(days=30)}, context=ctx)
    runs = auto.settle(automation="deal_webhook")
    assert [(r["record_id"], r["status"], r["attempts"]) for r in runs] == [(big["id"], "done", 1)]
    [delivery] = auto.receiver.to("/ok")
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery["body"], hashlib.sha256).hexdigest()
    assert delivery["headers"]["X-CRM-Signature"] == expected
    body = payload(delivery)
    assert body["record_id"] == big["id"] and body["data"]["amount"] == "5000.00" and body["data"]["name"] == "Big"
    assert delivery["headers"]["X-CRM-Delivery"] == runs[0]["key"]
    assert small["id"] not in [payload(r)["record_id"] for r in auto.receiver.requests]


def test_a_failing_webhook_is_retried_then_dead_and_can_be_run_again_from_the_cli(auto):
    rt = auto.rt
    ctx = Context(user_id=_user(rt)["id"])
    rt.records.create("contact", {"last_name": "Doe"}, context=ctx)
    [run] = auto.settle(automation="failing_webhook")
    assert run["status"] == "dead" and run["attempts"] == 3 == run["max_attempts"]
    assert "500" in run["error"] and "action 1 (webhook)" in run["error"]
    assert len(auto.receiver.to("/fail")) == 3
    # The API shows the dead run to admins.
    from engine.app import create_app
    from engine.security.tokens import create_token

    admin = _user(rt, role="admin", name="Root")
    _, token = create_token(rt.records, admin["id"], "t")
    client = create_app(runtime=rt).test_client()
    listed = client.get("/api/v1/_automation_runs?status=dead", headers={"Authorization": f"Bearer {token}"}).json
    assert [(r["automation"], r["attempts"]) for r in listed["data"]] == [("failing_webhook", 3)]
    # Fixed on the other side; `crm automations rerun --dead` sends it again.
    auto.receiver.failing = False
    from engine.cli import main

    result = CliRunner().invoke(main, ["automations", "rerun", "--dead"], env=auto.worker_env())
    assert result.exit_code == 0, result.output
    assert f"Queued again: {run['id']}" in result.output
    [run] = auto.settle(automation="failing_webhook")
    assert run["status"] == "done" and len(auto.receiver.to("/fail")) == 4


def test_an_email_goes_to_the_smtp_server(auto):
    rt = auto.rt
    ctx = Context(user_id=_user(rt)["id"])
    case = rt.records.create("case", {"subject": "Printer <on> fire", "supplied_email": "ann@example.com",
                                      "supplied_name": "Ann"}, context=ctx)
    rt.records.create("case", {"subject": "No e-mail given"}, context=ctx)
    [run] = auto.settle(automation="case_email")
    assert run["status"] == "done" and run["record_id"] == case["id"]
    [mail] = auto.smtp.messages
    assert mail["to"] == ["ann@example.com"]
    msg = message_from_bytes(mail["data"])
    assert msg["Subject"] == f"Case {case['case_number']}: Printer <on> fire"
    assert "Hello Ann, we received: Printer <on> fire" in msg.get_payload(decode=True).decode()
    from engine.workflow.mail import message_id

    assert msg["Message-ID"] == message_id(run["key"], 0)   # the same on a retry


def test_a_date_relative_schedule_fires_once_per_date_and_catches_up(auto):
    rt = auto.rt
    owner = _user(rt)
    ctx = Context(user_id=owner["id"])
    acc = _account(rt, ctx)
    today = date.today()
    opp = rt.records.create("opportunity", {"name": "Soon", "account": acc["id"], "amount": 10,
                                            "close_date": today + timedelta(days=10)}, context=ctx)
    late = rt.records.create("opportunity", {"name": "Missed", "account": acc["id"], "amount": 10,
                                             "close_date": today + timedelta(days=5)}, context=ctx)
    gone = rt.records.create("opportunity", {"name": "Lost", "account": acc["id"], "amount": 10,
                                             "close_date": today + timedelta(days=6)}, context=ctx)
    sched = rt.scheduler()
    planned = _schedule(rt)
    assert planned[opp["id"]] == datetime.combine(today + timedelta(days=7), datetime.min.time().replace(hour=8),
                                                  tzinfo=timezone.utc)
    rt.records.update("opportunity", gone["id"], {"stage": "lost", "lost_reason": "price"}, context=ctx)
    assert gone["id"] not in _schedule(rt)      # no longer matches: dropped
    day = datetime.combine(today, datetime.min.time(), tzinfo=timezone.utc)
    assert sched.tick(day + timedelta(days=1))["scheduled"] == 0          # nothing due yet
    # The scheduler was down from day 1 to day 8: "Missed" (due day 2) and "Soon" (due day 7) fire now.
    assert sched.tick(day + timedelta(days=8))["scheduled"] == 2
    assert sched.tick(day + timedelta(days=8))["scheduled"] == 0
    runs = auto.settle(automation="close_date_reminder")
    assert sorted(r["record_id"] for r in runs) == sorted([opp["id"], late["id"]])
    notes = rt.records.query("notification", order_by=("id",))
    assert sorted(n["message"] for n in notes) == ["Closing in 3 days: Missed", "Closing in 3 days: Soon"]
    assert {n["user"] for n in notes} == {owner["id"]}
    # A date moved away and back to one that fired does not fire again; a new date does.
    rt.records.update("opportunity", opp["id"], {"close_date": today + timedelta(days=40)}, context=ctx)
    rt.records.update("opportunity", opp["id"], {"close_date": today + timedelta(days=10)}, context=ctx)
    assert opp["id"] not in _schedule(rt)
    rt.records.update("opportunity", opp["id"], {"close_date": today + timedelta(days=20)}, context=ctx)
    assert sched.tick(day + timedelta(days=18))["scheduled"] == 1
    auto.settle(automation="close_date_reminder")
    assert len(rt.records.query("notification")) == 3


def _schedule(rt) -> dict[int, datetime]:
    table = rt.workflow.schedule
    with rt.db.read() as conn:
        rows = conn.execute(sa.select(table).where(table.c.automation == "close_date_reminder")).all()
    return {r.record_id: r.fire_at if r.fire_at.tzinfo else r.fire_at.replace(tzinfo=timezone.utc) for r in rows}


def test_an_automation_that_triggers_itself_is_stopped_at_the_depth_limit(auto):
    rt = auto.rt
    ctx = Context(user_id=_user(rt, role="marketing", name="Mia")["id"])     # marketing may edit campaigns
    camp = rt.records.create("campaign", {"name": "Spring", "type": "email", "status": "planned"}, context=ctx)
    rt.records.update("campaign", camp["id"], {"description": "go"}, context=ctx)
    deadline = time.monotonic() + 60
    while not auto.runs(automation="loop", status="stopped") and time.monotonic() < deadline:
        time.sleep(0.05)
    runs = auto.settle(automation="loop")
    depth = rt.settings.automation_depth
    assert [r["status"] for r in runs] == ["done"] * depth + ["stopped"]
    assert "CRM_AUTOMATION_DEPTH" in runs[-1]["error"] and "loop -> loop" in runs[-1]["error"]
    assert rt.records.get("campaign", camp["id"])["description"] == "go" + "+" * depth


def test_a_worker_killed_mid_job_is_retried_without_repeating_what_it_did(auto):
    if auto.kind != "rq":
        pytest.skip("killing a worker process needs the rq runner (the in-process runner dies with the server)")
    rt = auto.rt
    ctx = Context(user_id=_user(rt)["id"])
    lead = rt.records.create("lead", {"last_name": "Widget", "company": "Widgets Ltd"}, context=ctx)
    deadline = time.monotonic() + 60
    while not Path(auto.env["CRM_TEST_MARKER"]).exists():   # action 1 done, action 2 sleeping
        assert time.monotonic() < deadline, f"the job never started: {auto.runs(automation='stamp_then_wait')}"
        time.sleep(0.05)
    [first] = auto.workers
    auto.kill(first)
    [run] = auto.runs(automation="stamp_then_wait")
    assert run["status"] == "running" and run["attempts"] == 1
    auto.start_worker()
    # The scheduler finds the run whose lease ran out (its clock moved past the lease) and requeues it.
    later = datetime.now(timezone.utc) + timedelta(seconds=rt.settings.job_lease + 1)
    assert rt.scheduler().tick(later)["reclaimed"] >= 1   # (with the stamp's own follow-ups, queued behind it)
    [run] = auto.settle(automation="stamp_then_wait")
    assert run["status"] == "done" and run["attempts"] == 2
    stamped = [a for a in rt.records.query("activity", limit=100) if a["subject"] == "Stamped Widget"]
    assert len(stamped) == 1 and stamped[0]["related_to"].id == lead["id"]
