"""Merging two duplicate accounts in a real Chromium: ticked on the list, merged from the side-by-side
page choosing which values to keep, the contact and the deal of the other account moved, then the
merge undone from the survivor's page. The merge page in Chinese too. Screenshots in var/screenshots/."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from engine.storage.errors import NotFound
from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")
SYSTEM = Context(system=True, automations=False)


def _duplicates(rt) -> tuple[dict, dict, dict, dict]:
    a = rt.records.create("account", {"name": "Globex Ltd", "account_number": "GX-1", "phone": "+1 201 555 0100",
                                      "industry": "technology"}, context=SYSTEM)
    b = rt.records.create("account", {"name": "Globex Corporation", "account_number": "GX-2",
                                      "website": "https://globex.example", "industry": "manufacturing"}, context=SYSTEM)
    contact = rt.records.create("contact", {"last_name": "Scorpio", "account": b["id"]}, context=SYSTEM)
    deal = rt.records.create("opportunity", {"name": "Globex doomsday device", "account": b["id"],
                                             "close_date": date.today() + timedelta(days=20)}, context=SYSTEM)
    return a, b, contact, deal


def test_merge_two_duplicate_accounts_choosing_values_then_undo(page, live_server):
    rt = live_server.runtime
    a, b, contact, deal = _duplicates(rt)
    page.on("dialog", lambda d: d.accept())
    login(page, live_server, live_server.admin)
    page.goto("/ui/account?sort=-id")
    page.locator(f'tr[data-id="{a["id"]}"] input.row-select').check()
    page.locator(f'tr[data-id="{b["id"]}"] input.row-select').check()
    page.locator('[data-merge="merge-selected"]').click()
    page.wait_for_url(re.compile(r"/ui/account/merge\?"))
    assert page.locator('tr[data-field="name"] .badge').count() == 1          # the names differ
    assert page.locator('tr[data-field="account_number"] .badge').count() == 1
    assert "1 Contacts" in page.locator(f'[data-related="{b["id"]}"]').text_content()
    assert "1 Opportunities" in page.locator(f'[data-related="{b["id"]}"]').text_content()
    # A stays; it takes B's name and B's industry, keeps its own account number; B's website fills the gap
    page.locator(f'#survivor-{a["id"]}').check()
    page.locator(f'#choice-name-{b["id"]}').check()
    page.locator(f'#choice-industry-{b["id"]}').check()
    page.locator(f'#choice-website-{b["id"]}').check()
    shot(page, "merge-page-en")
    page.locator("#merge-submit").click()
    page.wait_for_url(re.compile(rf"/ui/account/{a['id']}$"))
    assert "Merged 1 record(s) into this one" in page.locator("#flash").text_content()
    survivor = rt.records.get("account", a["id"])
    assert (survivor["name"], survivor["industry"], survivor["account_number"], survivor["website"]) == (
        "Globex Corporation", "manufacturing", "GX-1", "https://globex.example")
    assert rt.records.get("contact", contact["id"])["account"] == a["id"]
    assert rt.records.get("opportunity", deal["id"])["account"] == a["id"]
    with pytest.raises(NotFound):
        rt.records.get("account", b["id"])
    shot(page, "merged")

    page.locator("#merge-undo").click()
    page.wait_for_url(re.compile(rf"/ui/account/{a['id']}$"))
    assert "Merge undone: 1 record(s) restored" in page.locator("#flash").text_content()
    assert rt.records.get("account", b["id"])["name"] == "Globex Corporation"
    assert rt.records.get("account", a["id"])["name"] == "Globex Ltd"
    assert rt.records.get("contact", contact["id"])["account"] == b["id"]
    assert page.locator("#merge-undo").count() == 0


def test_the_merge_page_in_chinese_and_its_refusals(make_page, live_server):
    rt = live_server.runtime
    a, b, _, _ = _duplicates(rt)
    page = make_page(locale="zh-CN")
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/account/merge?ids={a['id']},{b['id']}")
    assert "合并" in page.locator("h1").text_content()
    assert page.locator("#row-survivor th").text_content().strip() == "保留的记录"
    shot(page, "merge-page-zh")
    page.goto(f"/ui/account/merge?ids={a['id']}")
    assert "2" in page.locator("#flash").text_content()                        # select 2 to 5 records
    # a sales rep may not delete accounts: no Merge button on their list
    login(page, live_server, live_server.sales)
    page.goto("/ui/account")
    assert page.locator('[data-merge="merge-selected"]').count() == 0
