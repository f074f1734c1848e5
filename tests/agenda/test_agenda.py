"""The agenda (engine/agenda): home panels, task list, complete in place, calendar moves, recently
viewed records, reminders sent once, the ``agenda`` document's checks and the role's ``home:`` order."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from engine.storage.records import Context
from tests.ui_kit import SYSTEM, make_site, text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def site(crm):
    return make_site(crm, seeded=False)


def activity(site, owner, **values):
    base = {"subject": "Call Ada", "type": "task", "owner_id": owner["id"]}
    return site.records.create("activity", {**base, **values}, context=SYSTEM)


def test_home_shows_my_tasks_and_meetings_and_completes_in_place(site):
    today = date.today()
    overdue = activity(site, site.sales, subject="Send <b>proposal</b>", due_date=(today - timedelta(days=2)).isoformat())
    due = activity(site, site.sales, subject="Due today", due_date=today.isoformat())
    activity(site, site.admin, subject="Not mine", due_date=today.isoformat())
    start = datetime.now(timezone.utc) + timedelta(hours=3)
    activity(site, site.sales, subject="Demo meeting", type="meeting", start_at=start.isoformat(),
             end_at=(start + timedelta(hours=1)).isoformat())
    b = site.browser(site.sales)
    page = text(b.get("/"))
    assert 'data-panel="tasks"' in page and "Due today" in page and "Not mine" not in page
    assert "Send &lt;b&gt;proposal&lt;/b&gt;" in page           # escaped
    assert "Demo meeting" in page and 'data-panel="meetings"' in page
    # the sales role declares its panels' order: tasks before meetings before deals
    assert page.index('data-panel="tasks"') < page.index('data-panel="meetings"') < page.index('data-panel="deals"')
    assert page.index('data-panel="deals"') < page.index('data-panel="approvals"') < page.index('data-panel="recycling"')
    assert page.index('data-panel="recycling"') < page.index('data-panel="recent"') < page.index('data-panel="dashboards"')
    r = b.post(f"/ui/my/tasks/{due['id']}/complete", {"version": due["version"]}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "is-done" in text(r)
    assert site.records.get("activity", due["id"])["status"] == "completed"
    # a stale version is a conflict, shown on the row, nothing written
    r = b.post(f"/ui/my/tasks/{overdue['id']}/complete", {"version": overdue["version"] - 1}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'role="alert"' in text(r)
    assert site.records.get("activity", overdue["id"])["status"] == "not_started"


def test_complete_needs_csrf_and_visibility(site):
    other = site.user("other@example.com", "sales", team="elsewhere")
    task = activity(site, other, due_date=date.today().isoformat())
    b = site.browser(site.sales)
    assert b.post(f"/ui/my/tasks/{task['id']}/complete", {"version": task["version"]}, csrf=False).status_code in (400, 403)
    assert b.post(f"/ui/my/tasks/{task['id']}/complete", {"version": task["version"]}).status_code == 404
    assert site.records.get("activity", task["id"])["status"] == "not_started"


def test_task_list_mine_and_team(site):
    boss = site.user("boss@example.com", "manager", team=site.team, name="Bo Boss")
    mate = site.user("mate@example.com", "sales", team=site.team, name="Mia Mate")
    site.records.update("user", mate["id"], {"manager": boss["id"]}, context=SYSTEM)
    activity(site, mate, subject="Mate's task", due_date=date.today().isoformat())
    activity(site, boss, subject="My upcoming", due_date=(date.today() + timedelta(days=3)).isoformat())
    b = site.browser(boss)
    mine = text(b.get("/ui/my/tasks"))
    assert "My upcoming" in mine and "Mate&#39;s task" not in mine
    team = text(b.get("/ui/my/tasks?whose=team"))
    assert "Mate&#39;s task" in team and "Mia Mate" in team
    # a sales representative sees only their own activities, even in "my team's"
    assert "Mate&#39;s task" not in text(site.browser(site.sales).get("/ui/my/tasks?whose=team"))
    assert 'data-nav="agenda.tasks"' in mine and 'data-nav="agenda.calendar"' in mine


def test_calendar_moves_a_meeting_keeping_its_time_and_length(site):
    start = datetime(2026, 3, 10, 14, 30, tzinfo=timezone.utc)
    meeting = activity(site, site.sales, subject="Review", type="meeting", start_at=start.isoformat(),
                       end_at=(start + timedelta(minutes=45)).isoformat())
    task = activity(site, site.sales, subject="Prepare", due_date="2026-03-11")
    b = site.browser(site.sales)
    for view in ("day", "week", "month"):
        page = text(b.get(f"/ui/my/calendar?view={view}&date=2026-03-10"))
        assert "Review" in page
    week = text(b.get("/ui/my/calendar?view=week&date=2026-03-10"))
    assert "Prepare" in week and 'data-date="2026-03-09"' in week
    r = b.post(f"/ui/my/calendar/{meeting['id']}/move", {"date": "2026-03-12", "version": meeting["version"],
                                                         "view": "week", "anchor": "2026-03-10"},
               headers={"HX-Request": "true"})
    assert r.status_code == 200 and 'id="cal-grid"' in text(r)
    moved = site.records.get("activity", meeting["id"])
    assert moved["start_at"] == datetime(2026, 3, 12, 14, 30, tzinfo=timezone.utc)
    assert moved["end_at"] - moved["start_at"] == timedelta(minutes=45)
    b.post(f"/ui/my/calendar/{task['id']}/move", {"date": "2026-03-13", "version": task["version"]},
           headers={"HX-Request": "true"})
    assert site.records.get("activity", task["id"])["due_date"] == date(2026, 3, 13)
    # a stale version: refused, the error shown on the event
    r = b.post(f"/ui/my/calendar/{meeting['id']}/move", {"date": "2026-03-14", "version": meeting["version"]},
               headers={"HX-Request": "true"})
    assert "has-error" in text(r) and "cal-error" in text(r)
    assert site.records.get("activity", meeting["id"])["start_at"].day == 12
    # a time that is no time: said on the event, nothing moved (it was silently ignored before)
    fresh = site.records.get("activity", meeting["id"])
    r = b.post(f"/ui/my/calendar/{meeting['id']}/move", {"date": "2026-03-15", "time": "25:99",
                                                         "version": fresh["version"]}, headers={"HX-Request": "true"})
    assert "Write the time as HH:MM." in text(r)
    assert site.records.get("activity", meeting["id"])["start_at"].day == 12


def test_calendar_move_respects_the_users_rights(site):
    other = site.user("far@example.com", "sales", team="elsewhere")
    theirs = activity(site, other, subject="Theirs", type="meeting", start_at="2026-03-10T10:00:00+00:00")
    b = site.browser(site.sales)
    assert b.post(f"/ui/my/calendar/{theirs['id']}/move", {"date": "2026-03-12"},
                  headers={"HX-Request": "true"}).status_code == 404
    assert "Theirs" not in text(b.get("/ui/my/calendar?view=month&date=2026-03-10"))


def test_recently_viewed_records(site):
    account = site.records.create("account", {"name": "Acme & Co", "owner_id": site.sales["id"]}, context=SYSTEM)
    b = site.browser(site.sales)
    assert "Acme &amp; Co" not in text(b.get("/"))
    assert b.get(f"/ui/account/{account['id']}").status_code == 200
    page = text(b.get("/"))
    assert 'data-panel="recent"' in page and "Acme &amp; Co" in page


def test_reminders_are_sent_once(site, tmp_path):
    from engine.agenda.reminders import send_reminders

    rt = site.rt
    ag = rt.extensions["agenda"]
    now = datetime(2026, 3, 10, 9, 50, tzinfo=timezone.utc)
    meeting = activity(site, site.sales, subject="Kick-off", type="meeting",
                       start_at=(now + timedelta(minutes=10)).isoformat())
    activity(site, site.sales, subject="Later", type="meeting", start_at=(now + timedelta(hours=3)).isoformat())
    task = activity(site, site.sales, subject="File report", due_date="2026-03-11")     # 1 day before, 09:00 UTC
    activity(site, site.sales, subject="Done already", due_date="2026-03-11", status="completed")
    assert send_reminders(rt, ag, now) == {"reminders_sent": 2}
    assert send_reminders(rt, ag, now + timedelta(minutes=1)) == {"reminders_sent": 0}
    notes = rt.records.query("notification", order_by=("id",), limit=10)
    assert sorted(n["record"].id for n in notes) == sorted([meeting["id"], task["id"]])
    assert all(n["user"] == site.sales["id"] for n in notes)
    mails = list((tmp_path / "outbox").glob("*.eml"))
    assert len(mails) == 2 and "Kick-off" in "".join(m.read_text() for m in mails)
    # rescheduled: reminded again for the new time
    rt.records.update("activity", meeting["id"], {"start_at": (now + timedelta(minutes=12)).isoformat()},
                      context=Context(system=True))
    assert send_reminders(rt, ag, now + timedelta(minutes=2)) == {"reminders_sent": 1}


def test_reminders_job_is_scheduled(crm):
    jobs = [j.name for found in crm.pm.hook.crm_scheduled_jobs(runtime=crm) for j in found or ()]
    assert "agenda.reminders" in jobs


def test_agenda_document_problems_name_the_place(make_runtime, write_tree):
    from engine.metadata.errors import MetadataError

    bad = write_tree("bad", {"agenda.yaml": """
        agenda: broken
        activities: activity
        reminders:
          meeting: {before: 15m, of: nowhere}
          bogus: {before: 1d, of: due_date}
        deals: {entity: opportunity, stage: phase}
    """})
    with pytest.raises(Exception) as found:
        make_runtime(migrate=False, site_dir=bad)
    message = str(found.value)
    assert "agenda.yaml" in message and "nowhere" in message and "bogus" in message and "phase" in message


def test_home_order_follows_the_roles_home_list(site):
    from engine.ui.shell import home_order
    from engine.plugins import Panel

    panels = [Panel("recent", "R", "", 60), Panel("tasks", "T", "", 10), Panel("extra", "X", "", 5)]
    assert [p.key for p in home_order(site.rt, "admin", panels)] == ["extra", "tasks", "recent"]   # no home: all
    assert [p.key for p in home_order(site.rt, "manager", panels)] == ["tasks", "recent"]       # its list only


def test_reminders_follow_the_owners_profile_language_and_channels(site, tmp_path):
    from engine.agenda.reminders import send_reminders
    from engine.security.profile import update_profile

    rt = site.rt
    now = datetime(2026, 3, 10, 9, 50, tzinfo=timezone.utc)
    update_profile(rt.records, site.sales["id"], {"language": "zh", "notify": {"reminder": {"in_app": True,
                                                                                             "email": False}}})
    activity(site, site.sales, subject="Kick-off", type="meeting", start_at=(now + timedelta(minutes=10)).isoformat())
    assert send_reminders(rt, rt.extensions["agenda"], now) == {"reminders_sent": 1}
    [note] = rt.records.query("notification", order_by=("id",), limit=10)
    assert note["message"].startswith("提醒：Kick-off") and "Reminder" not in note["message"]
    assert not list((tmp_path / "outbox").glob("*.eml"))   # e-mail turned off on the profile
