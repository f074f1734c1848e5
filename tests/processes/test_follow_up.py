"""Follow-up signals (engine/processes/follow_up): the base CRM's accounts, contacts, leads and
opportunities know when they were last and will next be followed up, and when their owner last
touched them, kept in the transaction of every activity write and owner change; the backfill gives
the same values as the live path; bad declarations are errors at their file:line."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.metadata import MetadataError
from engine.plugins import make_plugin_manager
from engine.runtime import load_model_from
from engine.settings import SYSTEM_LAYER
from engine.storage.records import Context

from ..conftest import BASE_CONFIG

SYSTEM = Context(system=True)
SIGNALS = ("last_activity_at", "next_activity_at", "owner_touched_at", "owner_assigned_at")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=timezone.utc)


def midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


@pytest.fixture
def crm(make_runtime):
    rt = make_runtime()
    set_now(rt, T0)
    return rt


def set_now(rt, moment: datetime) -> None:
    """The follow-up signals' clock: when a record is created or changes owner."""
    rt.extensions["follow_up"].clock = lambda: moment


def user(rt, name: str) -> int:
    return rt.records.create("user", {"name": name, "email": f"{name.lower()}@example.com", "role": "sales"},
                             context=SYSTEM)["id"]


def activity(rt, about: str, *, owner: int | None = None, **values) -> dict:
    row = {"subject": "Call", "related_to": about, **values}
    if owner is not None:
        row["owner_id"] = owner
    return rt.records.create("activity", row, context=SYSTEM)


def signals(rt, entity: str, rid: int) -> dict:
    record = rt.records.get(entity, rid)
    return {k: record[k] for k in SIGNALS}


# -- kept by activity writes ------------------------------------------------------------------------

def test_done_activities_give_last_and_planned_ones_next(crm):
    acc = crm.records.create("account", {"name": "Acme"}, context=SYSTEM)
    assert signals(crm, "account", acc["id"])["last_activity_at"] is None
    activity(crm, f"account:{acc['id']}", status="completed", start_at=at(2))
    activity(crm, f"account:{acc['id']}", status="completed", due_date="2026-03-05")     # a day: midnight UTC
    activity(crm, f"account:{acc['id']}", status="not_started", due_date="2026-03-20")
    activity(crm, f"account:{acc['id']}", status="in_progress", start_at=at(12))
    activity(crm, f"account:{acc['id']}", status="canceled", start_at=at(10))             # neither
    got = signals(crm, "account", acc["id"])
    assert got["last_activity_at"] == midnight(date(2026, 3, 5))
    assert got["next_activity_at"] == at(12)
    stored = crm.records.get("account", acc["id"])
    assert stored["version"] == acc["version"] and stored["updated_at"] == acc["updated_at"]   # bookkeeping, not an edit


def test_completing_an_activity_or_moving_its_date_moves_the_signals(crm):
    lead = crm.records.create("lead", {"last_name": "Li", "company": "Co"}, context=SYSTEM)
    call = activity(crm, f"lead:{lead['id']}", start_at=at(10))
    assert signals(crm, "lead", lead["id"])["next_activity_at"] == at(10)
    crm.records.update("activity", call["id"], {"status": "completed"}, context=SYSTEM)
    got = signals(crm, "lead", lead["id"])
    assert got["last_activity_at"] == at(10) and got["next_activity_at"] is None
    crm.records.update("activity", call["id"], {"start_at": at(8).isoformat()}, context=SYSTEM)
    assert signals(crm, "lead", lead["id"])["last_activity_at"] == at(8)


def test_re_parenting_an_activity_corrects_the_old_and_the_new_record(crm):
    a = crm.records.create("opportunity", {"name": "A", "account": _account(crm), "close_date": "2027-01-01"},
                           context=SYSTEM)
    b = crm.records.create("opportunity", {"name": "B", "account": _account(crm), "close_date": "2027-01-01"},
                           context=SYSTEM)
    older = activity(crm, f"opportunity:{a['id']}", status="completed", start_at=at(3))
    moving = activity(crm, f"opportunity:{a['id']}", status="completed", start_at=at(6))
    assert signals(crm, "opportunity", a["id"])["last_activity_at"] == at(6)
    crm.records.update("activity", moving["id"], {"related_to": f"opportunity:{b['id']}"}, context=SYSTEM)
    assert signals(crm, "opportunity", a["id"])["last_activity_at"] == at(3)
    assert signals(crm, "opportunity", b["id"])["last_activity_at"] == at(6)
    crm.records.delete("activity", older["id"], context=SYSTEM)
    assert signals(crm, "opportunity", a["id"])["last_activity_at"] is None
    crm.records.delete("activity", moving["id"], context=SYSTEM)
    assert signals(crm, "opportunity", b["id"])["last_activity_at"] is None


def _account(rt, **values) -> int:
    return rt.records.create("account", {"name": "Acc", **values}, context=SYSTEM)["id"]


def test_an_activity_about_a_contact_or_a_deal_counts_for_its_account(crm):
    acc, other = _account(crm), _account(crm)
    contact = crm.records.create("contact", {"last_name": "Doe", "account": acc}, context=SYSTEM)
    deal = crm.records.create("opportunity", {"name": "D", "account": acc, "close_date": "2027-01-01"}, context=SYSTEM)
    activity(crm, f"contact:{contact['id']}", status="completed", start_at=at(4))
    activity(crm, f"opportunity:{deal['id']}", start_at=at(15))
    assert signals(crm, "contact", contact["id"])["last_activity_at"] == at(4)
    got = signals(crm, "account", acc)
    assert got["last_activity_at"] == at(4) and got["next_activity_at"] == at(15)
    crm.records.update("contact", contact["id"], {"account": other}, context=SYSTEM)    # the contact moves
    assert signals(crm, "account", acc)["last_activity_at"] is None
    assert signals(crm, "account", other)["last_activity_at"] == at(4)
    crm.records.delete("contact", contact["id"], context=SYSTEM)       # its activities go with it
    assert signals(crm, "account", other)["last_activity_at"] is None
    assert signals(crm, "account", acc)["next_activity_at"] == at(15)


def test_a_deal_is_written_before_its_account_as_the_record_service_locks_them(crm):
    """Rows are locked child first, as a deal's own update locks the deal and then its account's
    rollups; the other order deadlocked on PostgreSQL with a deal won while its task was created."""
    deal = crm.records.create("opportunity", {"name": "D", "account": _account(crm), "close_date": "2027-01-01"},
                              context=SYSTEM)
    updated: list[str] = []

    def note(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE"):
            updated.append(statement.split()[1].strip('"'))

    sa.event.listen(crm.db.engine, "before_cursor_execute", note)
    try:
        activity(crm, f"opportunity:{deal['id']}", start_at=at(15))
    finally:
        sa.event.remove(crm.db.engine, "before_cursor_execute", note)
    assert [t for t in updated if t in ("opportunity", "account")] == ["opportunity", "account"]


# -- the owner ------------------------------------------------------------------------------------

def test_only_the_owners_own_done_activities_touch_a_record(crm):
    ann, bob = user(crm, "Ann"), user(crm, "Bob")
    contact = crm.records.create("contact", {"last_name": "Doe", "owner_id": ann}, context=SYSTEM)
    got = signals(crm, "contact", contact["id"])
    assert got["owner_touched_at"] == got["owner_assigned_at"] == T0          # created, so got, at T0
    activity(crm, f"contact:{contact['id']}", owner=bob, status="completed", start_at=at(4))
    assert signals(crm, "contact", contact["id"])["owner_touched_at"] == T0   # Bob's call is not Ann's
    assert signals(crm, "contact", contact["id"])["last_activity_at"] == at(4)
    mine = activity(crm, f"contact:{contact['id']}", owner=ann, status="completed", start_at=at(3))
    activity(crm, f"contact:{contact['id']}", owner=ann, status="not_started", start_at=at(9))   # not done yet
    assert signals(crm, "contact", contact["id"])["owner_touched_at"] == at(3)
    crm.records.update("activity", mine["id"], {"owner_id": bob}, context=SYSTEM)        # handed to Bob
    assert signals(crm, "contact", contact["id"])["owner_touched_at"] == T0


def test_a_new_owner_resets_owner_touched_to_when_they_got_the_record(crm):
    ann, bob = user(crm, "Ann"), user(crm, "Bob")
    lead = crm.records.create("lead", {"last_name": "Li", "company": "Co", "owner_id": ann}, context=SYSTEM)
    activity(crm, f"lead:{lead['id']}", owner=ann, status="completed", start_at=at(5))
    assert signals(crm, "lead", lead["id"])["owner_touched_at"] == at(5)
    set_now(crm, at(10))
    claimed = crm.records.update("lead", lead["id"], {"owner_id": bob}, context=SYSTEM)
    assert claimed["owner_touched_at"] == claimed["owner_assigned_at"] == at(10)   # in the claim's own update
    assert signals(crm, "lead", lead["id"])["owner_touched_at"] == at(10)
    activity(crm, f"lead:{lead['id']}", owner=ann, status="completed", start_at=at(12))
    assert signals(crm, "lead", lead["id"])["owner_touched_at"] == at(10)          # Ann's call is not Bob's
    activity(crm, f"lead:{lead['id']}", owner=bob, status="completed", start_at=at(13))
    assert signals(crm, "lead", lead["id"])["owner_touched_at"] == at(13)
    set_now(crm, at(20))
    crm.records.update("lead", lead["id"], {"owner_id": None}, context=SYSTEM)   # back to a pool: nobody's
    got = signals(crm, "lead", lead["id"])
    assert got["owner_touched_at"] == got["owner_assigned_at"] == at(20) and got["last_activity_at"] == at(13)


def test_an_owner_change_of_an_account_counts_its_contacts_activities_by_the_new_owner(crm):
    ann, bob = user(crm, "Ann"), user(crm, "Bob")
    acc = _account(crm, owner_id=ann)
    contact = crm.records.create("contact", {"last_name": "Doe", "account": acc, "owner_id": ann}, context=SYSTEM)
    activity(crm, f"contact:{contact['id']}", owner=bob, status="completed", start_at=at(20))   # after T0
    assert signals(crm, "account", acc)["owner_touched_at"] < at(20)
    crm.records.update("account", acc, {"owner_id": bob}, context=SYSTEM)
    assert signals(crm, "account", acc)["owner_touched_at"] == at(20)


# -- bulk, transactions, backfill -------------------------------------------------------------------

def test_bulk_activities_keep_every_parent_right(crm):
    ann = user(crm, "Ann")
    accounts = [_account(crm, owner_id=ann) for _ in range(5)]
    rows = [{"subject": f"S{i}", "related_to": f"account:{accounts[i % 5]}", "owner_id": ann,
             "status": "completed" if i % 2 else "not_started", "start_at": at(1 + i % 27).isoformat()}
            for i in range(60)]
    result = crm.records.bulk("activity", rows, context=SYSTEM)
    assert result.ok
    for k, acc in enumerate(accounts):
        mine = [r for i, r in enumerate(rows) if i % 5 == k]
        done = [datetime.fromisoformat(r["start_at"]) for r in mine if r["status"] == "completed"]
        planned = [datetime.fromisoformat(r["start_at"]) for r in mine if r["status"] != "completed"]
        got = signals(crm, "account", acc)
        assert got["last_activity_at"] == max(done) and got["next_activity_at"] == min(planned)
        assert got["owner_touched_at"] == max(max(done), got["owner_assigned_at"])
    updates = [{"id": item["id"], "status": "completed"} for item in result.items]
    assert crm.records.bulk("activity", updates, mode="update", context=SYSTEM).ok
    for acc in accounts:
        assert signals(crm, "account", acc)["next_activity_at"] is None


def test_an_account_with_more_contacts_than_one_query_takes_counts_them_all(crm):
    acc = _account(crm)
    contacts = crm.records.bulk("contact", [{"last_name": f"C{i}", "account": acc} for i in range(1100)],
                                context=SYSTEM)
    first, last = contacts.items[0]["id"], contacts.items[-1]["id"]
    activity(crm, f"contact:{first}", status="completed", start_at=at(3))
    activity(crm, f"contact:{last}", status="completed", start_at=at(9))     # in the second thousand
    activity(crm, f"contact:{last}", start_at=at(20))
    got = signals(crm, "account", acc)
    assert (got["last_activity_at"], got["next_activity_at"]) == (at(9), at(20))


def test_signals_roll_back_with_the_activity_write(crm):
    acc = _account(crm)
    with pytest.raises(RuntimeError):
        with crm.records.db.write() as conn:
            activity_row = {"subject": "x", "related_to": f"account:{acc}", "status": "completed", "start_at": at(2)}
            crm.records.create("activity", activity_row, context=SYSTEM, conn=conn)
            raise RuntimeError("the caller's transaction fails after the activity")
    assert signals(crm, "account", acc)["last_activity_at"] is None


def _scenario(rt) -> list[tuple[str, int]]:
    """Accounts, contacts, leads and deals with activities of two users, some moved, completed and deleted."""
    ann, bob = user(rt, "Ann"), user(rt, "Bob")
    made = []
    for n in range(4):
        acc = _account(rt, owner_id=ann if n % 2 else bob)
        contact = rt.records.create("contact", {"last_name": f"C{n}", "account": acc, "owner_id": ann}, context=SYSTEM)
        lead = rt.records.create("lead", {"last_name": f"L{n}", "company": "Co", "owner_id": bob}, context=SYSTEM)
        deal = rt.records.create("opportunity", {"name": f"D{n}", "account": acc, "close_date": "2027-01-01",
                                                 "owner_id": ann}, context=SYSTEM)
        made += [("account", acc), ("contact", contact["id"]), ("lead", lead["id"]), ("opportunity", deal["id"])]
        for k, about in enumerate((f"account:{acc}", f"contact:{contact['id']}", f"lead:{lead['id']}",
                                   f"opportunity:{deal['id']}")):
            a = activity(rt, about, owner=ann if k % 2 else bob, status="completed", start_at=at(1 + n + k))
            activity(rt, about, owner=ann, due_date=f"2026-04-{10 + n + k:02d}")
            if k == 1:
                rt.records.update("activity", a["id"], {"related_to": f"lead:{lead['id']}"}, context=SYSTEM)
            if k == 3 and n % 2:
                rt.records.delete("activity", a["id"], context=SYSTEM)
    return made


def test_backfill_gives_the_values_of_the_live_path(crm):
    from engine.processes.follow_up.commands import backfill

    made = _scenario(crm)
    live = {key: signals(crm, *key) for key in made}
    assert any(v["last_activity_at"] for v in live.values()) and any(v["next_activity_at"] for v in live.values())
    assert set(backfill(crm).values()) == {(4, 0)}                 # nothing to correct
    with crm.records.db.write() as conn:                           # signals lost, e.g. written with SQL
        for entity in ("account", "contact", "lead", "opportunity"):
            table = crm.records.table(entity)
            conn.execute(table.update().values(last_activity_at=None, next_activity_at=None, owner_touched_at=None))
    counts = backfill(crm, batch=3)
    assert counts["account"] == (4, 4)
    assert {key: signals(crm, *key) for key in made} == live


def test_backfill_of_data_written_without_the_signals(make_runtime, settings):
    from engine.cli import main

    off = make_runtime(disabled_plugins=("follow_up",))
    assert "follow_up" not in off.extensions
    made = _scenario(off)
    assert all(v is None for key in made for v in signals(off, *key).values())
    env = {"DATABASE_URL": settings.database_url, "CRM_PLUGIN_DIRS": "", "CRM_VAR_DIR": str(settings.var_dir)}
    ran = CliRunner().invoke(main, ["follow-up", "backfill", "--entity", "account"], env=env)
    assert ran.exit_code == 0, ran.output
    assert ran.output == "account: 4 records, 4 changed\n"
    ran = CliRunner().invoke(main, ["follow-up", "backfill"], env=env)
    assert ran.output.splitlines() == ["account: 4 records, 0 changed", "contact: 4 records, 4 changed",
                                       "lead: 4 records, 4 changed", "opportunity: 4 records, 4 changed"]
    on = make_runtime()
    for entity, rid in made:
        got = signals(on, entity, rid)
        assert got["owner_assigned_at"] == on.records.get(entity, rid)["created_at"]   # the earliest known owner
        assert got == expected(on, entity, rid)
    bad = CliRunner().invoke(main, ["follow-up", "backfill", "--entity", "case"], env=env)
    assert bad.exit_code == 1 and "'case' is not followed" in bad.output


def test_the_live_path_matches_the_definition(crm):
    made = _scenario(crm)
    for entity, rid in made:
        assert signals(crm, entity, rid) == expected(crm, entity, rid)


def expected(rt, entity: str, rid: int) -> dict:
    """The signals of one record as docs/metadata.md defines them, computed in Python from the rows."""
    svc = rt.records
    with svc.db.read() as conn:
        acts = [dict(r._mapping) for r in conn.execute(sa.select(svc.table("activity")))]
        parent = {(e, i): a for e in ("contact", "opportunity")
                  for i, a in conn.execute(sa.select(svc.table(e).c.id, svc.table(e).c.account))}
    record = svc.get(entity, rid)

    def about(act) -> bool:
        ref = act["related_to"]
        return ref is not None and ((ref.entity, ref.id) == (entity, rid)
                                    or (entity == "account" and parent.get((ref.entity, ref.id)) == rid))

    def when(act) -> datetime:
        return act["start_at"] or (midnight(act["due_date"]) if act["due_date"] else act["created_at"])

    mine = [a for a in acts if about(a)]
    done = [when(a) for a in mine if a["status"] == "completed"]
    planned = [when(a) for a in mine if a["status"] not in ("completed", "canceled")]
    own = [when(a) for a in mine if a["status"] == "completed" and a["owner_id"] == record["owner_id"]]
    since = record["owner_assigned_at"]
    return {"last_activity_at": max(done, default=None), "next_activity_at": min(planned, default=None),
            "owner_touched_at": max([*own, since]), "owner_assigned_at": since}


# -- declarations ---------------------------------------------------------------------------------

BAD = """\
follow_up: broken
of: task
links: [about, title, nowhere]
via: {client: title}
happened_at: "title"
done_when: "hours"
planned_when: "NOW() > when_at"
targets:
  client: {last: title, next: missing, owner_touched: seen_at}
"""

ENTITIES = """\
entity: client
fields:
  title: {type: text}
  seen_at: {type: datetime}
---
entity: task
fields:
  title: {type: text}
  hours: {type: integer}
  when_at: {type: datetime}
  about: {type: reference, to: [client]}
"""


def test_bad_declarations_are_errors_at_their_file_and_line(write_tree):
    site = write_tree("site", {"entities.yaml": ENTITIES, "signals.yaml": BAD})
    with pytest.raises(MetadataError) as info:
        load_model_from(make_plugin_manager(entry_point_plugins=False), [("system", SYSTEM_LAYER), ("site", site)])
    found = {f"{p.location.file.rsplit('/', 1)[-1]}:{p.location.line} {p.message}" for p in info.value.problems}
    expected = {
        "signals.yaml:3 follow_up broken: task.title must be a lookup or a reference, not text",
        "signals.yaml:3 follow_up broken: task has no field 'nowhere'",
        "signals.yaml:4 follow_up broken: client.title must be a lookup to a followed entity (client)",
        "signals.yaml:5 follow_up broken: must give date or datetime, but gives text (in 'title')",
        "signals.yaml:6 follow_up broken: must give boolean, but gives number (in 'hours')",
        "signals.yaml:7 follow_up broken: may read only the task's own fields (no lookup paths, $user, TODAY() or "
        "NOW(): the signals change only when an activity does) (in 'NOW() > when_at')",
        "signals.yaml:9 follow_up broken: client.title must be a stored datetime (or date) field, not text",
        "signals.yaml:9 follow_up broken: client has no field 'missing'",
        "signals.yaml:9 follow_up broken: owner_touched needs owner_since: a datetime field where the engine keeps "
        "when the current owner got the record",
    }
    assert found == expected, found - expected


def test_the_base_crm_declares_its_signals_once(make_runtime):
    model = load_model_from(make_plugin_manager(entry_point_plugins=False),
                            [("system", SYSTEM_LAYER), ("base", BASE_CONFIG / "base")])
    [doc] = model.documents["follow_up"]
    assert doc["of"] == "activity" and set(doc["targets"]) == {"account", "contact", "lead", "opportunity"}
    assert not any(d["automation"] == "account_last_activity" for d in model.documents["automation"])


def test_demo_data_ends_with_consistent_signals(make_runtime):
    from engine.demo import seed
    from engine.processes.follow_up.commands import backfill

    rt = make_runtime()
    seed(rt.records, 4)
    counts = backfill(rt)
    assert counts["account"][0] > 0 and all(changed == 0 for _, changed in counts.values())
    with rt.db.read() as conn:
        table = rt.records.table("account")
        assert conn.execute(sa.select(sa.func.count()).where(table.c.owner_touched_at.is_(None))).scalar() == 0


def test_a_field_filled_by_two_declarations_is_an_error(write_tree):
    site = write_tree("site", {"more.yaml": """\
        follow_up: contracts
        of: activity
        links: [related_to]
        happened_at: "start_at"
        done_when: "status = 'completed'"
        planned_when: "status = 'not_started'"
        targets:
          contract: {last: end_date}
          account: {next: next_activity_at}
        """})
    with pytest.raises(MetadataError) as info:
        load_model_from(make_plugin_manager(entry_point_plugins=False),
                        [("system", SYSTEM_LAYER), ("base", BASE_CONFIG / "base"), ("site", site)])
    [problem] = info.value.problems     # a date field (contract.end_date) may be a target
    assert (problem.location.file.rsplit("/", 1)[-1], problem.location.line) == ("more.yaml", 9)
    assert problem.message == "follow_up contracts: account.next_activity_at is already filled by follow_up activities"


def test_through_the_api_a_users_activity_and_owner_change_keep_the_signals(api):
    set_now(api.rt, T0)
    acc = api.post("/api/v1/account", json={"name": "Acme"}).get_json()
    assert acc["owner_touched_at"] == acc["owner_assigned_at"] == T0.isoformat()
    assert api.post("/api/v1/activity", json={"subject": "Visit", "related_to": {"entity": "account", "id": acc["id"]},
                                              "status": "completed", "start_at": at(5).isoformat()}).status_code == 201
    got = api.get(f"/api/v1/account/{acc['id']}").get_json()
    assert got["last_activity_at"] == got["owner_touched_at"] == at(5).isoformat()    # the admin owns both
    assert got["version"] == acc["version"]
    bob = user(api.rt, "Bob")
    set_now(api.rt, at(7))
    moved = api.patch(f"/api/v1/account/{acc['id']}", json={"owner_id": bob}).get_json()
    assert moved["owner_touched_at"] == moved["owner_assigned_at"] == at(7).isoformat()
    assert moved["last_activity_at"] == at(5).isoformat()
    assert api.patch(f"/api/v1/account/{acc['id']}", json={"owner_touched_at": at(9).isoformat()}).status_code == 422
