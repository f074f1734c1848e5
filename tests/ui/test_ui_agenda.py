"""A user's day in a real Chromium, in English and Chinese, at desktop and phone width: complete a
task from the home page (htmx, in place), reschedule a meeting in the calendar by dragging it (and,
on a phone, with its "Move to" date), and the reminders job notifies once. Screenshots in var/screenshots/."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")

SYSTEM = Context(system=True, automations=False)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
CASES = [("en-US", DESKTOP), ("zh-CN", PHONE)]


def _make(make_page, locale, viewport):
    return make_page(locale=locale, viewport=viewport, timezone_id="Asia/Shanghai" if locale == "zh-CN" else "UTC")


def _activity(rt, owner_id, **values):
    return rt.records.create("activity", {"subject": "Call", "type": "task", "owner_id": owner_id, **values},
                             context=SYSTEM)


@pytest.mark.parametrize("locale,viewport", CASES + [("zh-CN", DESKTOP), ("en-US", PHONE)],
                         ids=["en-desktop", "zh-phone", "zh-desktop", "en-phone"])
def test_complete_a_task_from_home(make_page, live_server, locale, viewport):
    rt = live_server.runtime
    rep = live_server.sales
    today = date.today()
    task = _activity(rt, rep.id, subject="Send the proposal to Acme", due_date=today.isoformat(), priority="high")
    _activity(rt, rep.id, subject="Chase the signed contract", due_date=(today - timedelta(days=3)).isoformat())
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    _activity(rt, rep.id, subject="Product demo", type="meeting", start_at=start.isoformat(),
              end_at=(start + timedelta(hours=1)).isoformat())
    page = _make(make_page, locale, viewport)
    login(page, live_server, rep)
    panel = page.locator('[data-panel="tasks"]')
    assert panel.locator(f'[data-task="{task["id"]}"]').count() == 1
    assert page.locator('[data-panel="meetings"]').get_by_text("Product demo").count() == 1
    assert page.locator('[data-panel="deals"]').count() == 1
    if locale == "zh-CN":
        assert "我的任务" in page.content() and "逾期" in page.content()
    shot(page, "before")
    panel.locator(f'[data-complete="{task["id"]}"]').click()
    page.locator(f'[data-task="{task["id"]}"].is-done').wait_for()
    assert page.url.rstrip("/") == live_server.url            # in place: no navigation
    assert rt.records.get("activity", task["id"])["status"] == "completed"


@pytest.mark.parametrize("locale,viewport", CASES, ids=["en-desktop", "zh-phone"])
def test_reschedule_a_meeting_in_the_calendar(make_page, live_server, locale, viewport):
    rt = live_server.runtime
    rep = live_server.sales
    start = datetime(2026, 3, 10, 6, 30, tzinfo=timezone.utc)      # 06:30 UTC, 14:30 in Shanghai
    meeting = _activity(rt, rep.id, subject="Quarterly review", type="meeting", start_at=start.isoformat(),
                        end_at=(start + timedelta(minutes=45)).isoformat())
    _activity(rt, rep.id, subject="Prepare slides", due_date="2026-03-09")
    page = _make(make_page, locale, viewport)
    login(page, live_server, rep)
    page.locator('[data-nav="agenda.calendar"]').first.wait_for(state="attached")
    page.goto("/ui/my/calendar?view=week&date=2026-03-10")
    event = page.locator(f'.cal-event[data-id="{meeting["id"]}"]')
    local = "14:30" if locale == "zh-CN" else "06:30"
    assert local in event.text_content()
    shot(page, "week")
    if viewport is DESKTOP:
        event.drag_to(page.locator('.cal-day[data-date="2026-03-12"]'))
    else:   # the keyboard and touch alternative
        event.locator("summary").click()
        event.locator("input[type=date]").fill("2026-03-12")
        event.locator("button[type=submit]").click()
    page.locator(f'.cal-day[data-date="2026-03-12"] .cal-event[data-id="{meeting["id"]}"]').wait_for()
    moved = rt.records.get("activity", meeting["id"])
    assert moved["start_at"] == datetime(2026, 3, 12, 6, 30, tzinfo=timezone.utc)
    assert moved["end_at"] == datetime(2026, 3, 12, 7, 15, tzinfo=timezone.utc)
    # someone else changes it meanwhile: the next move is refused, the error shown on the event
    rt.records.update("activity", meeting["id"], {"location": "Room 2"}, context=SYSTEM)
    event = page.locator(f'.cal-event[data-id="{meeting["id"]}"]')
    if viewport is DESKTOP:
        event.drag_to(page.locator('.cal-day[data-date="2026-03-13"]'))
    else:
        event.locator("summary").click()
        event.locator("input[type=date]").fill("2026-03-13")
        event.locator("button[type=submit]").click()
    page.locator(f'.cal-event.has-error[data-id="{meeting["id"]}"] .cal-error').wait_for()
    assert rt.records.get("activity", meeting["id"])["start_at"].day == 12
    shot(page, "refused")
    page.goto("/ui/my/calendar?view=month&date=2026-03-10")
    shot(page, "month")


def test_reminders_job_notifies_once(make_page, live_server):
    from engine.agenda.reminders import send_reminders

    rt = live_server.runtime
    rep = live_server.sales
    now = datetime.now(timezone.utc)
    _activity(rt, rep.id, subject="Board meeting", type="meeting", start_at=(now + timedelta(minutes=10)).isoformat())
    ag = rt.extensions["agenda"]
    assert send_reminders(rt, ag, now)["reminders_sent"] == 1
    assert send_reminders(rt, ag, now + timedelta(minutes=1))["reminders_sent"] == 0
    page = make_page()
    login(page, live_server, rep)
    page.goto("/ui/notifications")
    assert page.get_by_text("Reminder: Board meeting starts", exact=False).count() == 1
    page.goto("/ui/my/tasks")
    shot(page, "tasks")
