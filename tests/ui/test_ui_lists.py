"""Lists people can use, in a real browser, in English and Chinese, at desktop and phone width:
a filter by a picklist label in the user's language and a bulk update confirmed with its count,
search by full name, kanban lane totals and a refused move shown on the card."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest

from engine.storage.records import Context

from .conftest import login, shot

SYSTEM = Context(system=True)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _open(make_page, live_server, lang: str, size: dict, **options):
    page = make_page(viewport=DESKTOP, **options)   # the language switch sits in the navigation bar
    login(page, live_server, live_server.admin)
    if lang == "zh":
        page.goto("/ui/lead")
        page.click("#lang-zh")
        page.wait_for_url(re.compile(r"/ui/lead"))
    page.set_viewport_size(size)
    return page


@pytest.mark.parametrize("lang,width", [("en", "desktop"), ("zh", "phone")])
def test_filter_by_a_picklist_label_and_bulk_update_with_the_count(make_page, live_server, lang, width):
    rt = live_server.runtime
    made = [rt.records.create("lead", {"last_name": f"Bulk {n}", "company": "Bulkco Zeta", "rating": "hot"}, context=SYSTEM)
            for n in range(3)]
    rt.records.create("lead", {"last_name": "Bulk cold", "company": "Bulkco Zeta", "rating": "cold"}, context=SYSTEM)
    page = _open(make_page, live_server, lang, PHONE if width == "phone" else DESKTOP)
    page.goto("/ui/lead")
    if width == "phone":   # the controls wait behind "Filters": the first screen shows records
        assert page.locator("#filter-builder").is_hidden() and page.locator("#records tbody tr").first.is_visible()
        page.click("#filters-toggle")
    page.locator("summary").first.click()
    rows = page.locator(".filter-row")
    rows.nth(0).locator('select[name="ff"]').select_option("rating")
    rows.nth(0).locator('input[name="fv"]').fill("热" if lang == "zh" else "Hot")   # a label, as the user reads it
    rows.nth(1).locator('select[name="ff"]').select_option("company")
    rows.nth(1).locator('select[name="fo"]').select_option("contains")
    rows.nth(1).locator('input[name="fv"]').fill("Bulkco")
    page.click("#apply-filter")
    page.wait_for_url(re.compile(r"where="))
    assert page.locator(".alert-warning").count() == 0
    chips = page.locator(".filter-chip").all_inner_texts()
    assert any(("评级" if lang == "zh" else "Rating") in c and ("热" if lang == "zh" else "Hot") in c for c in chips), chips
    ids = {int(i) for i in page.locator("#records tbody tr[data-id]").evaluate_all("rs => rs.map(r => r.dataset.id)")}
    assert ids == {r["id"] for r in made}
    assert page.locator("#bulk-bar").is_hidden()             # no bulk actions until rows are chosen
    page.click("#select-all")
    assert page.locator("#bulk-bar").is_visible() and page.locator("#selected-count").inner_text() == "3"
    assert page.locator("#bulk-field").input_value() == ""   # no field chosen: nothing is renamed by accident
    assert page.locator("#bulk-update").is_disabled()
    page.select_option("#bulk-field", "rating")
    page.fill("#bulk-value", "温" if lang == "zh" else "Warm")
    shot(page, f"bulk-{lang}-{width}")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("#bulk-update")
    page.wait_for_selector("#flash")
    assert asked and "3" in asked[0], asked
    assert {rt.records.get("lead", r["id"])["rating"] for r in made} == {"warm"}
    shot(page, f"bulk-done-{lang}-{width}")


@pytest.mark.parametrize("lang,width", [("en", "desktop"), ("zh", "phone")])
def test_search_finds_a_contact_by_full_name(make_page, live_server, lang, width):
    rt = live_server.runtime
    andrew = rt.records.create("contact", {"first_name": "Andrew", "last_name": "Fuller"}, context=SYSTEM)
    page = _open(make_page, live_server, lang, PHONE if width == "phone" else DESKTOP)
    page.goto("/ui/search?q=Andrew+Fuller")
    group = page.locator('.search-group[data-entity="contact"]')
    assert group.locator("a").first.inner_text() == "Andrew Fuller"
    assert group.locator("a").first.get_attribute("href").endswith(f"/ui/contact/{andrew['id']}")
    page.goto("/ui/contact?sort=-id")
    assert page.locator("#records tbody tr").first.locator("a").first.inner_text() == "Andrew Fuller"
    shot(page, f"contacts-{lang}-{width}")


def test_kanban_lanes_show_count_and_amount_total(make_page, live_server):
    rt = live_server.runtime
    account = rt.records.query("account", limit=1)[0]
    for amount in (1000, 2500):
        rt.records.create("opportunity", {"name": f"Lane {amount}", "account": account["id"], "amount": amount,
                                          "stage": "negotiation", "close_date": date.today() + timedelta(days=30)},
                          context=SYSTEM)
    lane_rows = [r for r in rt.records.query("opportunity", limit=100000) if r["stage"] == "negotiation"]
    page = _open(make_page, live_server, "en", {"width": 1600, "height": 1000})
    page.goto("/ui/opportunity/kanban")
    lane = page.locator('.kanban-lane[data-value="negotiation"]')
    assert int(lane.locator(".lane-count").inner_text()) == len(lane_rows)
    total = sum((Decimal(r["amount"] or 0) for r in lane_rows), Decimal(0))
    shown = lane.locator(".lane-sum-value").inner_text()
    assert Decimal(re.sub(r"[^\d.]", "", shown)) == total, shown
    shot(page, "kanban-totals")


def test_a_refused_move_from_the_card_menu_shows_on_the_card_at_phone_width(make_page, live_server):
    rt = live_server.runtime
    account = rt.records.query("account", limit=1)[0]
    card = rt.records.create("opportunity", {"name": "Phone move", "account": account["id"], "amount": 10,
                                             "stage": "prospecting", "close_date": date.today() + timedelta(days=30)},
                             context=SYSTEM)
    page = _open(make_page, live_server, "en", PHONE, has_touch=True, is_mobile=True)
    page.goto("/ui/opportunity/kanban")
    menu = page.locator(f'.kanban-card[data-id="{card["id"]}"] .kanban-move')
    menu.scroll_into_view_if_needed()
    menu.select_option("won")
    note = page.locator(f'.kanban-card[data-id="{card["id"]}"] .kanban-refusal')
    note.wait_for(state="visible")
    assert "won" in note.inner_text()
    assert menu.input_value() == "prospecting"
    assert rt.records.get("opportunity", card["id"])["stage"] == "prospecting"
    shot(page, "refused-on-card")
