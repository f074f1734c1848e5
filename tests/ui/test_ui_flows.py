"""What business users do all day, in a real Chromium against a live server: create records through
the forms (with a validation error fixed on the way), conditional fields, lists filtered, sorted and
saved as a view, kanban moves the workflow allows or refuses, a dashboard, the Chinese interface,
a CSV export, the shell at phone width, and date-times in the browser's time zone. Every test leaves screenshots in var/screenshots/."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from engine.storage.query import Filter, ListQuery
from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")


def _signed_in(page, server, user=None):
    login(page, server, user or server.admin)
    return page


def _record_id(page, entity: str) -> int:
    match = re.search(rf"/ui/{entity}/(\d+)$", page.url)
    assert match, page.url
    return int(match.group(1))


def test_create_an_account_and_an_opportunity_fixing_a_validation_error(page, live_server):
    rt = live_server.runtime
    _signed_in(page, live_server)
    page.goto("/ui/account/new")
    page.fill("#f-name", "Zephyr Analytics <script>x</script>")
    page.click("#save")
    page.wait_for_url(re.compile(r"/ui/account/\d+$"))
    account_id = _record_id(page, "account")
    assert page.locator("#record-title").inner_text() == "Zephyr Analytics <script>x</script>"   # text, not markup
    assert rt.records.get("account", account_id)["name"] == "Zephyr Analytics <script>x</script>"

    page.goto("/ui/opportunity/new")
    page.fill("#f-name", "Zephyr platform deal")
    page.fill("#f-account", "Zephyr")                  # the lookup's type-ahead over accounts
    page.locator(".lookup-option", has_text="Zephyr Analytics").click()
    page.fill("#f-amount", "125000.50")
    page.fill("#f-close_date", (date.today() - timedelta(days=3)).isoformat())   # in the past: a rule refuses it
    page.click("#save")
    error = page.locator('[data-error-for="close_date"]')
    error.wait_for()
    assert "Close date cannot be in the past" in error.inner_text()
    assert page.input_value("#f-name") == "Zephyr platform deal"          # nothing typed is lost
    assert page.input_value("#f-amount") == "125000.50"
    assert page.input_value("#f-account") == "Zephyr Analytics <script>x</script>"
    shot(page, "validation-error")

    close = date.today() + timedelta(days=30)
    page.fill("#f-close_date", close.isoformat())
    page.click("#save")
    page.wait_for_url(re.compile(r"/ui/opportunity/\d+$"))
    saved = rt.records.get("opportunity", _record_id(page, "opportunity"))
    assert (saved["name"], saved["account"], saved["amount"], saved["close_date"], saved["stage"]) == \
        ("Zephyr platform deal", account_id, Decimal("125000.50"), close, "prospecting")
    assert saved["owner_id"] == live_server.admin.id
    page.get_by_text("Opportunity created.").wait_for()
    # the account's page lists it among its opportunities
    page.goto(f"/ui/account/{account_id}")
    assert "Zephyr platform deal" in page.locator('.related[data-entity="opportunity"]').inner_text()


def test_a_conditional_field_appears_and_becomes_required_while_the_user_chooses(page, live_server):
    _signed_in(page, live_server)
    page.goto("/ui/opportunity/new")
    reason = page.locator('[data-field="lost_reason"]')
    assert reason.is_hidden()
    page.select_option("#f-stage", "lost")
    reason.wait_for(state="visible")
    assert reason.locator(".required-mark").is_visible()
    shot(page, "lost-reason-shown")
    page.select_option("#f-stage", "qualification")
    reason.wait_for(state="hidden")


def _column(page, label: str) -> list[str]:
    headers = [h.strip().rstrip("▲▼ ").strip() for h in page.locator("#records thead th").all_inner_texts()]
    index = headers.index(label)
    return [row.locator("td").nth(index).inner_text().strip() for row in page.locator("#records tbody tr").all()]


def test_filter_sort_and_save_a_list_view(page, live_server):
    rt = live_server.runtime
    _signed_in(page, live_server)
    page.goto("/ui/opportunity")
    page.locator("summary", has_text="Filter").click()
    row = page.locator(".filter-row").first
    row.locator("select[name=ff]").select_option("stage")
    row.locator("select[name=fo]").select_option("eq")
    row.locator("input[name=fv]").fill("qualification")
    page.click("#apply-filter")
    page.wait_for_url(re.compile(r"where="))
    assert page.locator("#current-where").inner_text() == "stage = 'qualification'"
    expected = rt.records.list(ListQuery("opportunity", limit=500, filters=[Filter("stage", "eq", "qualification")]))
    assert 0 < len(expected.records) <= 25
    assert set(_column(page, "Stage")) == {"Qualification"}
    assert len(_column(page, "Stage")) == len(expected.records)

    page.locator("a.sort-link[data-field=amount]").click()
    page.wait_for_url(re.compile(r"sort=amount"))
    amounts = [Decimal(a.replace(",", "").lstrip("$")) for a in _column(page, "Amount") if a]
    assert amounts == sorted(amounts) and len(amounts) > 1
    page.locator("a.sort-link[data-field=amount]").click()
    page.wait_for_url(re.compile(r"sort=-amount"))
    amounts = [Decimal(a.replace(",", "").lstrip("$")) for a in _column(page, "Amount") if a]
    assert amounts == sorted(amounts, reverse=True)

    page.fill("input[name=name]", "Qualified, biggest first")
    page.click("#save-view")
    page.wait_for_url(re.compile(r"view=\d+"))
    page.goto("/ui/opportunity")                       # all records again
    page.click("#views-menu")
    page.locator("a.saved-view", has_text="Qualified, biggest first").click()
    page.wait_for_url(re.compile(r"view=\d+"))
    assert page.locator("#current-where").inner_text() == "stage = 'qualification'"
    assert _column(page, "Amount")[0].replace(",", "").lstrip("$") == str(max(r["amount"] for r in expected.records
                                                                 if r["amount"] is not None))
    shot(page, "saved-view")


def _lane(page, value: str):
    return page.locator(f'.kanban-lane[data-value="{value}"]')


def _drag(page, source, target) -> None:
    """Drag ``source`` onto ``target`` as a user does: press on the card, move, release."""
    source.hover()
    page.mouse.down()
    target.hover()
    target.hover(position={"x": 10, "y": 10})   # a second move: Chromium starts the drag on movement
    page.mouse.up()


def test_kanban_moves_one_allowed_one_refused(make_page, live_server):
    rt = live_server.runtime
    page = make_page(viewport={"width": 1600, "height": 1400})   # the whole board in view: no scrolling mid-drag
    account = rt.records.query("account", limit=1)[0]
    allowed, refused = (rt.records.create("opportunity", {"name": f"Kanban {n}", "account": account["id"], "amount": 1000,
                                                          "stage": "prospecting", "close_date": date.today() + timedelta(days=30)},
                                          context=Context(system=True)) for n in (1, 2))
    _signed_in(page, live_server)
    page.goto("/ui/opportunity/kanban")
    before = int(_lane(page, "qualification").locator(".lane-count").inner_text())

    _drag(page, page.locator(f'.kanban-card[data-id="{allowed["id"]}"]'), _lane(page, "qualification"))
    _lane(page, "qualification").locator(f'.kanban-card[data-id="{allowed["id"]}"]').wait_for()
    assert int(_lane(page, "qualification").locator(".lane-count").inner_text()) == before + 1
    assert rt.records.get("opportunity", allowed["id"])["stage"] == "qualification"
    assert page.locator(".kanban-refusal:visible").count() == 0
    shot(page, "allowed")

    _drag(page, page.locator(f'.kanban-card[data-id="{refused["id"]}"]'), _lane(page, "won"))
    alert = page.locator(f'.kanban-card[data-id="{refused["id"]}"] .kanban-refusal')   # on the card dropped
    alert.wait_for(state="visible")
    assert "stage cannot change from 'prospecting' to 'won'" in alert.inner_text()
    assert "allowed now: qualify" in alert.inner_text()                 # the reason names what may be done
    assert _lane(page, "prospecting").locator(f'.kanban-card[data-id="{refused["id"]}"]').count() == 1
    assert rt.records.get("opportunity", refused["id"])["stage"] == "prospecting"
    shot(page, "refused")


def test_a_dashboard_shows_figures_computed_from_the_records(page, live_server):
    rt = live_server.runtime
    _signed_in(page, live_server)
    page.goto("/")
    page.locator("a.dropdown-toggle", has_text="Dashboards").click()
    page.locator(".dropdown-menu.show a", has_text="Sales").click()
    page.wait_for_url(re.compile(r"/ui/dashboards/sales$"))
    open_deals = rt.records.list(ListQuery("opportunity", limit=1, count=True,
                                           formula="NOT(stage IN ('won', 'lost'))")).total
    widget = page.locator('.widget[data-widget="open_deals"] svg')
    assert widget.is_visible()
    assert str(open_deals) in widget.text_content()
    assert page.locator('.widget[data-widget="pipeline_funnel"] svg rect').count() >= 1
    assert page.locator(".widget svg").count() == len(rt.extensions["dashboards"]["sales"].widgets)


def test_switching_to_chinese_translates_labels_and_interface(page, live_server):
    _signed_in(page, live_server)
    page.goto("/ui/opportunity")
    page.click("#lang-zh")
    page.wait_for_url(re.compile(r"/ui/opportunity"))
    assert page.locator("h1").inner_text() == "商机"                        # the entity's label from metadata
    headers = page.locator("#records thead th").all_inner_texts()
    assert any("商机名称" in h for h in headers) and any("阶段" in h for h in headers)
    assert page.locator("a.btn", has_text="新建").count() == 1               # interface string from the catalog
    assert page.locator("#lang-en").inner_text() == "English"
    stages = set(_column(page, next(h.strip().rstrip("▲▼ ").strip() for h in headers if "阶段" in h)))
    assert stages <= {"初步接洽", "需求确认", "方案报价", "商务谈判", "赢单", "输单"} and stages
    shot(page, "zh-list")
    page.goto("/ui/opportunity/new")
    assert page.locator('label[for="f-close_date"]').inner_text().startswith("预计成交日期")
    page.click("#lang-en")
    page.wait_for_url(re.compile(r"/ui/opportunity/new"))
    assert page.locator("h1").inner_text() == "New Opportunity"


def test_export_a_filtered_list_as_csv(page, live_server):
    rt = live_server.runtime
    _signed_in(page, live_server)
    page.goto("/ui/opportunity?where=" + "stage = 'qualification'")
    with page.expect_download() as download:
        page.click("#export")
    body = download.value.path().read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(body)))
    expected = rt.records.list(ListQuery("opportunity", limit=500, filters=[Filter("stage", "eq", "qualification")]))
    assert sorted(r["ID"] for r in rows) == sorted(str(r["id"]) for r in expected.records)
    assert {r["Stage"] for r in rows} == {"Qualification"}   # labels, as the list shows them
    assert download.value.suggested_filename == "opportunity.csv"


def test_the_xlsx_button_downloads_the_filtered_list_as_a_workbook(page, live_server):
    from openpyxl import load_workbook

    rt = live_server.runtime
    _signed_in(page, live_server)
    page.goto("/ui/opportunity?where=" + "stage = 'qualification'")
    with page.expect_download() as download:
        page.click("#export-xlsx")
    assert download.value.suggested_filename == "opportunity.xlsx"
    sheet = load_workbook(io.BytesIO(download.value.path().read_bytes())).active
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    assert header[0] == "ID" and "Stage" in header and sheet["A1"].font.b
    expected = rt.records.list(ListQuery("opportunity", limit=500, filters=[Filter("stage", "eq", "qualification")]))
    assert sorted(r[0] for r in rows[1:]) == sorted(r["id"] for r in expected.records)   # ids as numbers
    assert {r[header.index("Stage")] for r in rows[1:]} == {"Qualification"}


def test_the_shell_works_at_phone_width(make_page, live_server):
    page = make_page(viewport={"width": 390, "height": 844})
    _signed_in(page, live_server)
    nav = page.locator("#nav")
    assert nav.is_hidden()                       # collapsed behind the menu button
    page.click("button.navbar-toggler")
    nav.wait_for(state="visible")
    page.locator("a.dropdown-toggle", has_text="Sales").click()
    page.locator(".dropdown-menu.show a", has_text="Opportunities").click()
    page.wait_for_url(re.compile(r"/ui/opportunity$"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1   # the page itself does not overflow
    shot(page, "phone-list")


def test_date_times_follow_the_browsers_time_zone(make_page, live_server):
    rt = live_server.runtime
    account = rt.records.query("account", limit=1)[0]
    made = rt.records.create("activity", {"subject": "Morning call", "type": "call",
                                          "related_to": f"account:{account['id']}",
                                          "start_at": "2026-03-01T01:30:00+00:00"}, context=Context(system=True))
    page = make_page(timezone_id="Asia/Shanghai", locale="zh-CN")
    _signed_in(page, live_server)                # the first page tells the server the browser's zone
    page.goto(f"/ui/activity/{made['id']}/edit")
    assert page.input_value("#f-start_at") == "2026-03-01T09:30"
    page.fill("#f-start_at", "2026-03-02T08:15")
    page.click("#save")
    page.wait_for_url(re.compile(rf"/ui/activity/{made['id']}$"))
    assert rt.records.get("activity", made["id"])["start_at"] == datetime(2026, 3, 2, 0, 15, tzinfo=timezone.utc)
    assert "2026-03-02 08:15 Asia/Shanghai" in page.locator('[data-field="start_at"]').inner_text()
