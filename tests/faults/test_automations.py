"""Faults of the automation runners, retries and scheduler: the queue unreachable after a write
committed, rq retries arriving before their due time, re-running dead runs, a notification about a
deleted record, the scheduler's first pass, and a date whose reminder time overflows.

Real parts only: SQLite or PostgreSQL (DATABASE_URL), Redis and `crm worker` processes for the rq
runner, a local webhook receiver; time triggers are driven by the scheduler's controllable clock."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.storage.records import Context

from ..automation_kit import REDIS_URL, Harness, redis_available

PLUGINS = Path(__file__).parent.parent / "plugins"

HOOKS = """
automation: contact_hook
on: {entity: contact, events: [created]}
retries: 2
actions:
  - {do: webhook, url_env: CRM_FAULT_HOOK_URL, timeout: 5}
---
automation: account_hook_once
on: {entity: account, events: [created]}
retries: 0
actions:
  - {do: webhook, url_env: CRM_FAULT_HOOK_URL, timeout: 5}
---
automation: account_gone
on: {entity: account, events: [deleted]}
actions:
  - {do: notify, to: owner_id, message: "'Account deleted: ' & name"}
"""

NUDGE = """
automation: close_nudge
on: {entity: opportunity, schedule: {before: close_date, days: 1, at: "08:00"}}
actions:
  - {do: notify, to: owner_id, message: "'Nudge: ' & name"}
"""


@pytest.fixture
def hooks(make_runtime, write_tree, receiver, monkeypatch):
    """``hooks(path, **settings)`` boots a runtime whose webhooks go to the local receiver's ``path``."""
    harnesses: list[Harness] = []
    site = write_tree("site", {"automations.yaml": HOOKS})

    def make(path: str = "/fail", *, kind: str = "inprocess", **changes) -> Harness:
        env = {"CRM_FAULT_HOOK_URL": f"{receiver.url}{path}"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        if kind == "rq":
            changes = {"redis_url": REDIS_URL, "queue_name": f"crm-fault-{uuid.uuid4().hex[:12]}", **changes}
        harness = Harness(make_runtime(site_dir=site, plugin_dirs=(PLUGINS,), **changes), kind, env, receiver, None)
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.stop()


def _user(rt, role="sales", name="Sam"):
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role},
                             context=Context(system=True))


def _client(rt, user):
    from engine.app import create_app
    from engine.security.tokens import create_token

    _, token = create_token(rt.records, user["id"], "t")
    return create_app(runtime=rt).test_client(), {"Authorization": f"Bearer {token}"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(harness: Harness, done, timeout: float = 30.0) -> list[dict]:
    """Poll the run log until ``done(runs)`` holds (for runs that stay retrying, which settle() cannot wait for)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = harness.runs()
        if done(runs):
            return runs
        assert time.monotonic() < deadline, [(r["automation"], r["status"], r["attempts"], r["error"]) for r in runs]
        time.sleep(0.05)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# -- the queue unreachable after the write committed ----------------------------------------------

def test_a_post_with_redis_down_answers_201_and_the_run_is_delivered_once_when_the_queue_is_back(hooks):
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    queue = f"crm-fault-{uuid.uuid4().hex[:12]}"
    down = hooks("/ok", redis_url=f"redis://127.0.0.1:{_closed_port()}/0", queue_name=queue)
    client, headers = _client(down.rt, _user(down.rt))
    r = client.post("/api/v1/contact", json={"last_name": "Doe"}, headers=headers)
    assert r.status_code == 201, r.get_data(as_text=True)
    contact_id = r.json["id"]
    assert client.get(f"/api/v1/contact/{contact_id}", headers=headers).status_code == 200   # still healthy
    [run] = down.runs(automation="contact_hook")
    assert run["status"] == "queued" and run["record_id"] == contact_id and run["attempts"] == 0
    # The queue is back: a worker and the scheduler run against the same database and a reachable Redis.
    back = hooks("/ok", kind="rq", queue_name=queue)
    back.start_worker()
    assert down.receiver.requests == []
    later = _aware(run["due_at"]) + timedelta(minutes=2)
    assert back.rt.scheduler().tick(later)["reclaimed"] == 1
    [run] = back.settle(automation="contact_hook")
    assert run["status"] == "done" and run["attempts"] == 1
    assert back.rt.scheduler().tick(later + timedelta(minutes=2))["reclaimed"] == 0
    [delivery] = back.receiver.to("/ok")
    assert delivery["headers"]["X-CRM-Delivery"] == run["key"]


def test_a_post_with_redis_hung_answers_201_within_the_hand_off_timeout(hooks):
    with socket.socket() as silent:   # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hung = hooks("/ok", redis_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        client, headers = _client(hung.rt, _user(hung.rt))
        answers: list = []
        post = threading.Thread(target=lambda: answers.append(
            client.post("/api/v1/contact", json={"last_name": "Doe"}, headers=headers)), daemon=True)
        post.start()
        post.join(timeout=15)   # redis-py gives up reading after 5 s (its default socket timeout)
        assert not post.is_alive(), "the write hung on a Redis that never answers"
    [r] = answers
    assert r.status_code == 201, r.get_data(as_text=True)
    [run] = hung.runs(automation="contact_hook")
    assert run["status"] == "queued" and run["record_id"] == r.json["id"]


# -- retries follow the backoff under rq, with and without the scheduler ------------------------

@pytest.mark.parametrize("kind,with_scheduler", [("rq", False), ("rq", True), ("inprocess", False)])
def test_retries_run_on_their_backoff_with_or_without_the_scheduler(hooks, kind, with_scheduler):
    if kind == "rq" and not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    backoff = 1.0
    h = hooks("/fail", kind=kind, job_backoff=backoff)
    if kind == "rq":
        h.start_worker()
    stop = threading.Event()
    ticker = None
    if with_scheduler:
        sched = h.rt.scheduler()
        ticker = threading.Thread(target=lambda: [sched.tick() for _ in iter(lambda: stop.wait(0.2), True)],
                                  daemon=True)
        ticker.start()
    try:
        ctx = Context(user_id=_user(h.rt)["id"])
        for n in range(3):   # six retries: rq would run about half of them early if it could
            h.rt.records.create("contact", {"last_name": f"Doe {n}"}, context=ctx)
        runs = h.settle(timeout=40, automation="contact_hook")
    finally:
        stop.set()
        if ticker is not None:
            ticker.join(timeout=10)
    assert [(r["status"], r["attempts"]) for r in runs] == [("dead", 3)] * 3
    for run in runs:
        times = [d["at"] for d in h.receiver.to("/fail") if d["headers"]["X-CRM-Delivery"] == run["key"]]
        assert len(times) == 3
        gaps = [b - a for a, b in zip(times, times[1:])]
        for gap, wanted in zip(gaps, (backoff, 2 * backoff)):
            assert wanted - 0.01 <= gap <= wanted + 2.5, (gaps, run["key"])   # rq: whole seconds, 1 s polls


def test_a_retry_handed_over_before_it_is_due_waits_for_its_time_instead_of_being_dropped(hooks):
    h = hooks("/fail", job_backoff=3600)
    h.rt.records.create("contact", {"last_name": "Early"}, context=Context(user_id=_user(h.rt)["id"]))
    [run] = _wait(h, lambda runs: runs and runs[0]["status"] == "retrying")
    due = datetime.now(timezone.utc) + timedelta(seconds=1.5)   # room for a loaded machine before the early try
    runs = h.rt.workflow.runs
    with h.rt.db.write() as conn:
        conn.execute(runs.update().where(runs.c.id == run["id"]).values(due_at=due))
    assert h.rt.workflow.execute(run["id"]) is None    # too early: not claimed now...
    # ...but run when it is due (attempts counts the claim, so wait for the attempt to end too)
    [run] = _wait(h, lambda runs: runs[0]["attempts"] == 2 and runs[0]["status"] != "running", timeout=10)
    assert run["status"] == "retrying" and "500" in run["error"]
    second = h.receiver.to("/fail")[1]["at"]
    assert second >= due.timestamp() - 0.01


# -- rerun --dead --------------------------------------------------------------------------------

def test_rerun_dead_queues_dead_runs_and_leaves_retrying_runs_to_their_backoff(hooks):
    h = hooks("/fail", job_backoff=3600)
    ctx = Context(user_id=_user(h.rt)["id"])
    h.rt.records.create("account", {"name": "Acme"}, context=ctx)     # retries: 0 -> dead after one failure
    h.rt.records.create("contact", {"last_name": "Doe"}, context=ctx)  # retries: 2 -> retrying, an hour away
    runs = _wait(h, lambda runs: len(runs) == 2 and {r["status"] for r in runs} == {"dead", "retrying"})
    dead = next(r for r in runs if r["status"] == "dead")
    retrying = next(r for r in runs if r["status"] == "retrying")
    h.receiver.failing = False
    from engine.cli import main

    result = CliRunner().invoke(main, ["automations", "rerun", "--dead"], env=h.worker_env())
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Queued again: {dead['id']}"
    after = {r["id"]: r for r in h.runs()}
    assert after[dead["id"]]["status"] == "done"
    assert (after[retrying["id"]]["status"], after[retrying["id"]]["attempts"]) == ("retrying", 1)
    assert _aware(after[retrying["id"]]["due_at"]) == _aware(retrying["due_at"])
    assert len(h.receiver.to("/fail")) == 3   # dead once, retrying once, the dead one again


# -- a notification about a deleted record ------------------------------------------------------------

def test_a_deleted_trigger_with_notify_succeeds_and_says_what_was_deleted_without_linking_it(hooks):
    h = hooks("/ok")
    owner = _user(h.rt)
    client, headers = _client(h.rt, _user(h.rt, role="admin", name="Root"))
    acc = h.rt.records.create("account", {"name": "Acme Gone", "owner_id": owner["id"]}, context=Context(system=True))
    h.settle(automation="account_hook_once")
    r = client.delete(f"/api/v1/account/{acc['id']}", headers=headers)
    assert r.status_code == 204, r.get_data(as_text=True)
    [run] = h.settle(automation="account_gone")
    assert (run["status"], run["attempts"], run["error"]) == ("done", 1, None)
    [note] = h.rt.records.query("notification")
    assert note["user"] == owner["id"] and note["record"] is None
    assert note["message"].startswith("Account deleted: Acme Gone") and "deleted" in note["message"][len("Account deleted"):]


# -- the scheduler's first pass ---------------------------------------------------------------------

def test_the_first_pass_fires_due_times_writes_planned_and_skips_past_ones_of_records_saved_before(
        make_runtime, write_tree):
    before = make_runtime()                       # the automation does not exist yet
    owner = _user(before)
    ctx = Context(user_id=owner["id"])
    acc = before.records.create("account", {"name": "Acme"}, context=ctx)
    today = datetime.now(timezone.utc).date()

    def deal(rt, name, days):
        return rt.records.create("opportunity", {"name": name, "account": acc["id"], "amount": 10,
                                                 "close_date": today + timedelta(days=days)}, context=ctx)

    old_past, old_future = deal(before, "Old past", 10), deal(before, "Old future", 30)
    after = make_runtime(site_dir=write_tree("site", {"nudge.yaml": NUDGE}))
    planned = deal(after, "Planned", 10)         # saved with the automation: planned for day 9, 08:00
    now = datetime.combine(today + timedelta(days=12), datetime.min.time(), tzinfo=timezone.utc)
    sched = after.scheduler()                      # no scheduler ran before: this is its first pass
    assert sched.replan(now)["close_nudge"] == 1   # "Old future" only; "Old past" is skipped
    assert sched.tick(now)["scheduled"] >= 1
    Harness(after, "inprocess", {}, None, None).settle(automation="close_nudge")
    nudges = [n["message"] for n in after.records.query("notification") if n["message"].startswith("Nudge")]
    assert nudges == ["Nudge: Planned"]
    table = after.workflow.schedule
    with after.db.read() as conn:
        rows = conn.execute(sa.select(table).where(table.c.automation == "close_nudge")).all()
    assert {r.record_id: _aware(r.fire_at) for r in rows} == {
        old_future["id"]: datetime.combine(today + timedelta(days=29), datetime.min.time().replace(hour=8),
                                           tzinfo=timezone.utc)}
    assert sched.tick(now)["scheduled"] == 0      # fired once
    assert old_past["id"] not in {r.record_id for r in rows} and planned["id"] not in {r.record_id for r in rows}


# -- a date whose reminder time overflows --------------------------------------------------------------

def test_a_date_whose_reminder_would_overflow_does_not_fail_its_bulk_item_or_the_others(make_runtime):
    rt = make_runtime()
    owner = _user(rt)
    ctx = Context(user_id=owner["id"])
    acc = rt.records.create("account", {"name": "Acme"}, context=ctx)
    soon = date.today() + timedelta(days=30)
    ids = [rt.records.create("opportunity", {"name": f"Deal {n}", "account": acc["id"], "amount": 10,
                                             "close_date": soon}, context=ctx)["id"] for n in range(2)]
    client, headers = _client(rt, _user(rt, role="admin", name="Root"))
    r = client.post("/api/v1/opportunity/_bulk", headers=headers, json={
        "mode": "update", "atomic": False,
        "records": [{"id": ids[0], "close_date": "0001-01-02"}, {"id": ids[1], "close_date": "2031-01-01"}]})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert [i["status"] for i in r.json["items"]] == ["updated", "updated"]
    got = client.get(f"/api/v1/opportunity/{ids[0]}", headers=headers)
    assert got.status_code == 200 and got.json["close_date"] == "0001-01-02"
    # Its reminder is due (like any past date's) at the earliest time there is, and fires once.
    sched = rt.scheduler()
    assert sched.tick()["scheduled"] == 1
    Harness(rt, "inprocess", {}, None, None).settle(automation="close_date_reminder")
    assert [n["message"] for n in rt.records.query("notification")] == ["Closing in 3 days: Deal 0"]
    assert sched.tick()["scheduled"] == 0
