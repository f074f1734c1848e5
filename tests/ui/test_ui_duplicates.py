"""Duplicate rules in a real Chromium: a sales rep types a lead whose e-mail another lead has, sees
it above the form with a link, saves anyway; then the scan page lists the pair with a Merge link.
Screenshots in var/screenshots/."""

from __future__ import annotations

import re

import pytest

from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")


def test_save_anyway_then_the_scan_page(page, live_server):
    rt = live_server.runtime
    rep = live_server.sales
    first = rt.records.create("lead", {"last_name": "王", "first_name": "芳", "company": "华为技术有限公司",
                                       "email": "wang.fang@huawei.example", "owner_id": rep.id},
                              context=Context(system=True, automations=False))
    login(page, live_server, rep)
    page.goto("/ui/lead/new")
    page.fill("#f-last_name", "Wang")
    page.fill("#f-company", "Huawei")
    page.fill("#f-email", "Wang.Fang@Huawei.example")
    page.locator("#save").click()
    page.wait_for_selector("#duplicates")
    assert "looks like existing records" in page.locator("#duplicates").text_content()
    assert page.locator(f'#duplicates a[href="/ui/lead/{first["id"]}"]').count() == 1
    assert page.input_value("#f-email") == "Wang.Fang@Huawei.example"
    shot(page, "candidates")
    page.locator("#save-anyway").click()
    page.wait_for_url(re.compile(r"/ui/lead/\d+$"))
    second = int(page.url.rsplit("/", 1)[1])
    assert second != first["id"]

    page.goto("/ui/duplicates/lead")
    row = page.locator(f'tr.dup-group[data-ids="{first["id"]},{second}"]')
    assert row.count() == 1 and "Same lead e-mail" in row.text_content()
    assert row.locator("a.merge-link").get_attribute("href") == f"/ui/lead/merge?ids={first['id']},{second}"
    shot(page, "scan")
