"""Pools of unowned records (engine/processes/pools): declarations checked at file:line, claims within
limits under concurrency, returns with a reason, recycling on a controllable clock, the records of
every action (field history, audit, events, automation runs) and who sees a pool. On SQLite and,
with DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from engine.metadata import MetadataError
from engine.processes.pools.recycle import recycle
from engine.processes.pools.service import PoolError
from engine.security.tokens import create_token
from engine.storage.records import Context

SYSTEM = Context(system=True, automations=False)


def _now() -> datetime:
    # the real time, so that fields the engine stamps itself (owner_touched_at) agree with the clock we drive
    return datetime.now(timezone.utc).replace(microsecond=0)


def _user(rt, name: str, role: str) -> dict:
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": role},
                             context=Context(system=True))


def _leads(rt, n: int, **values) -> list[int]:
    return [rt.records.create("lead", {"last_name": f"Lead {i}", "company": "Acme", "owner_id": None, **values},
                              context=SYSTEM)["id"] for i in range(n)]


def _pools(rt):
    return rt.extensions["pools"]


def _race(calls) -> list:
    """Run the calls in threads that start together; each result or the PoolError it raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except PoolError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _rows(rt, table: str, **where) -> list[dict]:
    t = rt.records.metadata.tables[table]
    with rt.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).where(*(t.c[k] == v for k, v in where.items()))
                                                       .order_by(t.c[list(t.c.keys())[0]]))]


# -- declarations ----------------------------------------------------------------------------------

def test_pool_declaration_errors_name_the_file_and_line(make_runtime, write_tree):
    site = write_tree("site", {"p.yaml": """
        pool: broken
        of: lead
        members: "annual_revenue"
        roles: {claim: [sales, nobody]}
        recycle:
          - {days: 3, since: company}
          - {days: 3, unless: "status = 'new' AND"}
        ---
        pool: nowhere
        of: planet
        ---
        pool: users
        of: user
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(site_dir=site, migrate=False)
    text = str(info.value)
    assert "p.yaml:3" in text and "members needs a condition (TRUE or FALSE), not a currency" in text
    assert "p.yaml:4" in text and "there is no role 'nobody'" in text
    assert "p.yaml:6" in text and "since must name a stored date or datetime field of lead; 'company' is a text" in text
    assert "p.yaml:7" in text and "unless" in text
    assert "p.yaml:10" in text and "there is no entity 'planet'" in text
    assert "p.yaml:13" in text and "user records have no owner" in text


# -- claims and limits -------------------------------------------------------------------------------

def test_concurrent_claims_stop_exactly_at_the_owned_limit(crm):
    rep = _user(crm, "Rep", "sales")
    _pools(crm).set_limit("lead_pool", rep["id"], owned=3, per_day=None, role="admin")
    ids = _leads(crm, 8)
    results = _race([lambda rid=rid: _pools(crm).claim("lead_pool", [rid], user_id=rep["id"], role="sales")
                     for rid in ids])
    won = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if isinstance(r, PoolError)]
    assert len(won) == 3 and len(refused) == 5
    assert all(e.kind == "pool-limit" and e.detail["limit"] == "owned" and e.detail["allowed"] == 3 for e in refused)
    assert "owned now 3" in refused[0].message
    owned = crm.records.query("lead", where={"owner_id": rep["id"]})
    assert len(owned) == 3
    assert _pools(crm).quota(_pools(crm).pool("lead_pool"), rep["id"], "sales").remaining == 0


def test_two_users_claiming_one_record_one_wins(crm):
    reps = [_user(crm, f"Rep{i}", "sales") for i in range(6)]
    (rid,) = _leads(crm, 1)
    results = _race([lambda u=u: _pools(crm).claim("lead_pool", [rid], user_id=u["id"], role="sales") for u in reps])
    won = [r for r in results if isinstance(r, list)]
    assert len(won) == 1
    assert all(isinstance(r, PoolError) and r.kind == "already-claimed" for r in results if not isinstance(r, list))
    assert crm.records.get("lead", rid)["owner_id"] == won[0][0]["owner_id"]
    assert len(_rows(crm, "_crm_pool_hold", record_id=rid)) == 1


def test_the_per_day_limit_names_when_it_resets_and_a_user_override_wins(crm):
    rep = _user(crm, "Rep", "sales")
    pools = _pools(crm)
    ids = _leads(crm, 4)
    now = _now()
    pools.set_limit("lead_pool", rep["id"], owned=None, per_day=2, role="manager")
    pools.claim("lead_pool", ids[:2], user_id=rep["id"], role="sales", now=now)
    with pytest.raises(PoolError) as info:
        pools.claim("lead_pool", [ids[2]], user_id=rep["id"], role="sales", now=now)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    assert info.value.detail == {"limit": "per_day", "allowed": 2, "current": 2, "resets_at": midnight.isoformat()}
    assert f"resets at {midnight:%Y-%m-%d %H:%M} UTC" in info.value.message
    assert crm.records.get("lead", ids[2])["owner_id"] is None          # nothing half-written
    pools.claim("lead_pool", [ids[2]], user_id=rep["id"], role="sales", now=midnight + timedelta(minutes=1))
    pools.set_limit("lead_pool", rep["id"], owned=None, per_day=None, role="admin")   # back to the role's 10 a day
    pools.claim("lead_pool", [ids[3]], user_id=rep["id"], role="sales", now=midnight + timedelta(minutes=2))
    with pytest.raises(PoolError) as info:
        pools.set_limit("lead_pool", rep["id"], owned=1, per_day=1, role="sales")
    assert info.value.status == 403


def test_a_request_over_the_limit_writes_nothing(crm):
    rep = _user(crm, "Rep", "sales")
    ids = _leads(crm, 11)
    with pytest.raises(PoolError) as info:
        _pools(crm).claim("lead_pool", ids, user_id=rep["id"], role="sales")
    assert info.value.detail["limit"] == "per_day" and info.value.detail["allowed"] == 10
    assert crm.records.query("lead", where={"owner_id": rep["id"]}) == []
    assert _rows(crm, "_crm_pool_event") == []


def test_assign_by_a_manager_respects_the_targets_owned_limit(crm):
    boss, rep = _user(crm, "Boss", "manager"), _user(crm, "Rep", "sales")
    pools = _pools(crm)
    pools.set_limit("lead_pool", rep["id"], owned=2, per_day=0, role="manager")
    ids = _leads(crm, 3)
    done = pools.assign("lead_pool", ids[:2], to_user=rep["id"], actor_id=boss["id"], role="manager")
    assert [r["owner_id"] for r in done] == [rep["id"], rep["id"]]       # per_day 0 does not stop an assignment
    with pytest.raises(PoolError) as info:
        pools.assign("lead_pool", [ids[2]], to_user=rep["id"], actor_id=boss["id"], role="manager")
    assert info.value.detail["limit"] == "owned"
    with pytest.raises(PoolError) as info:
        pools.assign("lead_pool", [ids[2]], to_user=boss["id"], actor_id=rep["id"], role="sales")
    assert info.value.status == 403 and "manager" in info.value.message


# -- returns ----------------------------------------------------------------------------------------

def test_return_needs_a_reason_and_is_recorded_with_history_and_audit(crm):
    rep = _user(crm, "Rep", "sales")
    pools = _pools(crm)
    (rid,) = _leads(crm, 1)
    now = _now()
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=now)
    for reason in (None, "bored"):
        with pytest.raises(PoolError) as info:
            pools.give_back("lead_pool", [rid], user_id=rep["id"], role="sales", reason=reason)
        assert info.value.status == 422 and info.value.field == "reason" and "no_need" in info.value.message
    assert crm.records.get("lead", rid)["owner_id"] == rep["id"]
    pools.give_back("lead_pool", [rid], user_id=rep["id"], role="sales", reason="unreachable", note="three calls",
                    now=now + timedelta(hours=1))
    assert crm.records.get("lead", rid)["owner_id"] is None
    history = [(h["field"], h["old_value"], h["new_value"]) for h in crm.records.history_of("lead", rid)]
    assert ("owner_id", None, rep["id"]) in history and ("owner_id", rep["id"], None) in history
    audit = _rows(crm, "_crm_audit", entity="lead", record_id=rid)
    assert [a["kind"] for a in audit if a["kind"].startswith("pool_")] == ["pool_claimed", "pool_returned"]
    assert audit[-1]["detail"] == {"pool": "lead_pool", "from": rep["id"], "to": None, "reason": "unreachable",
                                   "note": "three calls"}
    events = _rows(crm, "_crm_pool_event", record_id=rid)
    assert [(e["action"], e["reason"]) for e in events] == [("claim", None), ("return", "unreachable")]
    assert _rows(crm, "_crm_pool_hold") == []
    with pytest.raises(PoolError) as info:   # the re-claim window
        pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=now + timedelta(days=2))
    assert info.value.kind == "reclaim-window" and info.value.detail["until"].startswith(
        (now + timedelta(days=7, hours=1)).date().isoformat())
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=now + timedelta(days=8))


def test_only_the_owner_returns(crm):
    rep, other = _user(crm, "Rep", "sales"), _user(crm, "Other", "sales")
    (rid,) = _leads(crm, 1)
    _pools(crm).claim("lead_pool", [rid], user_id=rep["id"], role="sales")
    with pytest.raises(PoolError) as info:
        _pools(crm).give_back("lead_pool", [rid], user_id=other["id"], role="sales", reason="no_need")
    assert info.value.kind == "not-owner"


# -- recycling ----------------------------------------------------------------------------------------

def test_recycling_warns_then_returns_and_keeps_the_former_owner_out(crm):
    rep, other = _user(crm, "Rep", "sales"), _user(crm, "Other", "sales")
    pools = _pools(crm)
    (rid,) = _leads(crm, 1)
    t0 = _now()
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    hold = _rows(crm, "_crm_pool_hold", record_id=rid)[0]
    assert abs(hold["due_at"] - (t0 + timedelta(days=14))) < timedelta(minutes=1)    # 14 days without a follow-up
    assert recycle(pools, t0 + timedelta(days=5))["warned"] == 0
    assert recycle(pools, t0 + timedelta(days=12))["warned"] == 1                     # 3 days before
    assert recycle(pools, t0 + timedelta(days=12, hours=1))["warned"] == 0             # once
    notes = crm.records.query("notification", where={"user": rep["id"]})
    assert len(notes) == 1 and "Lead 0" in notes[0]["message"] and notes[0]["record"].id == rid
    assert crm.records.get("lead", rid)["owner_id"] == rep["id"]
    counts = recycle(pools, t0 + timedelta(days=15))
    assert counts["recycled"] == 1
    assert crm.records.get("lead", rid)["owner_id"] is None
    assert ("owner_id", rep["id"], None) in [(h["field"], h["old_value"], h["new_value"])
                                             for h in crm.records.history_of("lead", rid)]
    assert [a["kind"] for a in _rows(crm, "_crm_audit", record_id=rid) if a["kind"] == "pool_recycled"] == ["pool_recycled"]
    assert _rows(crm, "_crm_pool_hold") == []
    runs = _rows(crm, "_crm_automation_run", automation="pool:lead_pool")
    assert [(r["trigger"], r["status"], r["payload"]["counts"]["warned"], r["payload"]["counts"]["recycled"])
            for r in runs] == [("recycle", "done", 1, 0), ("recycle", "done", 0, 1)]     # the run log
    with pytest.raises(PoolError) as info:
        pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0 + timedelta(days=16))
    assert info.value.kind == "reclaim-window"
    pools.claim("lead_pool", [rid], user_id=other["id"], role="sales", now=t0 + timedelta(days=16))


def test_a_follow_up_moves_the_recycle_later(crm):
    rep = _user(crm, "Rep", "sales")
    pools = _pools(crm)
    (rid,) = _leads(crm, 1)
    t0 = _now()
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    crm.records.update("lead", rid, {"owner_touched_at": t0 + timedelta(days=10)}, context=SYSTEM)
    counts = recycle(pools, t0 + timedelta(days=15))
    assert counts == {"recycled": 0, "warned": 0, "replanned": 1, "dropped": 0, "failed": 0}
    assert crm.records.get("lead", rid)["owner_id"] == rep["id"]
    hold = _rows(crm, "_crm_pool_hold", record_id=rid)[0]
    assert hold["due_at"] == t0 + timedelta(days=24)
    assert recycle(pools, t0 + timedelta(days=24, minutes=1))["recycled"] == 1


def test_unless_keeps_the_record_and_checks_again_a_period_later(crm):
    rep = _user(crm, "Rep", "sales")
    pools = _pools(crm)
    (rid,) = _leads(crm, 1)
    t0 = _now()
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    far = t0 + timedelta(days=365)    # followed up: only the 30-day "until qualified" rule is left to fire
    crm.records.update("lead", rid, {"owner_touched_at": far, "status": "qualified"}, context=SYSTEM)
    assert recycle(pools, t0 + timedelta(days=31))["replanned"] == 1
    assert crm.records.get("lead", rid)["owner_id"] == rep["id"]
    assert _rows(crm, "_crm_pool_hold", record_id=rid)[0]["due_at"] == t0 + timedelta(days=61)
    crm.records.update("lead", rid, {"status": "working"}, context=SYSTEM)
    assert recycle(pools, t0 + timedelta(days=61))["recycled"] == 1


def test_a_record_reassigned_by_hand_leaves_the_plan(crm):
    rep, other = _user(crm, "Rep", "sales"), _user(crm, "Other", "sales")
    (rid,) = _leads(crm, 1)
    t0 = _now()
    _pools(crm).claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    crm.records.update("lead", rid, {"owner_id": other["id"]}, context=SYSTEM)
    assert recycle(_pools(crm), t0 + timedelta(days=40))["dropped"] == 1
    assert crm.records.get("lead", rid)["owner_id"] == other["id"]


def test_the_scheduler_runs_the_recycling_job(crm):
    from engine.jobs import JobScheduler

    rep = _user(crm, "Rep", "sales")
    (rid,) = _leads(crm, 1)
    t0 = _now()
    _pools(crm).claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    scheduler = JobScheduler.from_runtime(crm)
    assert scheduler.job("pools.recycle") is not None
    assert scheduler.tick(t0 + timedelta(days=20))["recycled"] == 1


# -- automations ----------------------------------------------------------------------------------------

def test_pool_actions_fire_their_automation_triggers(make_runtime, write_tree):
    site = write_tree("site", {"a.yaml": """
        automation: pool_watch
        on: {entity: lead, events: [claimed, returned, recycled]}
        actions:
          - {do: set_fields, values: {description: "'touched by the pool'"}}
        """})
    rt = make_runtime(site_dir=site)
    rep = _user(rt, "Rep", "sales")
    (rid,) = _leads(rt, 1)
    t0 = _now()
    pools = _pools(rt)
    pools.claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    pools.give_back("lead_pool", [rid], user_id=rep["id"], role="sales", reason="other", now=t0)
    other = _user(rt, "Other", "sales")
    pools.claim("lead_pool", [rid], user_id=other["id"], role="sales", now=t0)
    recycle(pools, t0 + timedelta(days=20))
    runs = _rows(rt, "_crm_automation_run", automation="pool_watch")
    assert [r["trigger"] for r in runs] == ["claimed", "returned", "claimed", "recycled"]
    assert all(r["record_id"] == rid for r in runs)


# -- visibility ----------------------------------------------------------------------------------------

def test_a_pool_is_seen_by_its_roles_only_and_beyond_their_usual_scope(api):
    rt = api.rt
    ids = _leads(rt, 3)
    tokens = {}
    for role in ("sales", "marketing", "standard"):
        user = _user(rt, role.title(), role)
        tokens[role] = {"Authorization": f"Bearer {create_token(rt.records, user['id'], 't')[1]}"}
    sales = tokens["sales"]
    assert api.client.get("/api/v1/lead", headers=sales).json["data"] == []           # the team scope: not theirs
    listed = api.client.get("/api/v1/_pools/lead_pool?sort=id", headers=sales).json
    assert [r["id"] for r in listed["data"]] == ids
    assert {p["name"] for p in api.client.get("/api/v1/_pools", headers=sales).json["data"]} == {"lead_pool", "account_pool"}
    assert [p["name"] for p in api.client.get("/api/v1/_pools", headers=tokens["marketing"]).json["data"]] == ["lead_pool"]
    assert api.client.get("/api/v1/_pools", headers=tokens["standard"]).json["data"] == []
    assert api.client.get("/api/v1/_pools/lead_pool", headers=tokens["standard"]).status_code == 404
    refused = api.client.post("/api/v1/_pools/lead_pool/claim", json={"ids": [ids[0]]}, headers=tokens["marketing"])
    assert refused.status_code == 403 and refused.headers["Content-Type"].startswith("application/problem+json")
    claimed = api.client.post("/api/v1/_pools/lead_pool/claim", json={"ids": [ids[0]]}, headers=sales)
    assert claimed.status_code == 200 and claimed.json["quota"]["owned"] == 1 and claimed.json["quota"]["remaining"] == 9
    assert [r["id"] for r in api.client.get("/api/v1/_pools/lead_pool?sort=id", headers=sales).json["data"]] == ids[1:]
    page = api.client.get("/api/v1/_pools/lead_pool?sort=id&limit=1", headers=sales).json
    more = api.client.get(f"/api/v1/_pools/lead_pool?sort=id&limit=1&cursor={page['next_cursor']}", headers=sales).json
    assert [r["id"] for r in page["data"] + more["data"]] == ids[1:]
    assert api.client.get("/api/v1/_pools/lead_pool?status=qualified", headers=sales).json["data"] == []


def test_the_api_names_the_missing_reason(api):
    rt = api.rt
    (rid,) = _leads(rt, 1)
    api.post("/api/v1/_pools/lead_pool/claim", json={"ids": [rid]})
    missing = api.post("/api/v1/_pools/lead_pool/return", json={"id": rid})
    assert missing.status_code == 422 and missing.json["errors"][0]["field"] == "reason"
    assert api.post("/api/v1/_pools/lead_pool/return", json={"id": rid, "reason": "no_need"}).status_code == 200
    again = api.post("/api/v1/_pools/lead_pool/claim", json={"ids": [rid]})
    assert again.status_code == 409 and again.json["type"].endswith("/reclaim-window") and "until" in again.json


# -- the command line --------------------------------------------------------------------------------

def test_crm_pools_sets_a_users_limits_and_recycles(crm, settings):
    from click.testing import CliRunner

    from engine.cli import main

    rep = _user(crm, "Rep", "sales")
    (rid,) = _leads(crm, 1)
    t0 = _now()
    _pools(crm).claim("lead_pool", [rid], user_id=rep["id"], role="sales", now=t0)
    env = {"DATABASE_URL": settings.database_url, "CRM_PLUGIN_DIRS": ""}
    done = CliRunner().invoke(main, ["pools", "limit", "lead_pool", str(rep["id"]), "--owned", "1"], env=env)
    assert done.exit_code == 0, done.output
    with pytest.raises(PoolError) as info:
        _pools(crm).claim("lead_pool", _leads(crm, 1), user_id=rep["id"], role="sales")
    assert info.value.detail["allowed"] == 1
    listed = CliRunner().invoke(main, ["pools", "list"], env=env)
    assert "lead_pool" in listed.output and "held now 1" in listed.output
    later = (t0 + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%S")
    ran = CliRunner().invoke(main, ["pools", "recycle", "--now", later], env=env)
    assert ran.exit_code == 0 and "recycled 1" in ran.output, ran.output
    assert crm.records.get("lead", rid)["owner_id"] is None
