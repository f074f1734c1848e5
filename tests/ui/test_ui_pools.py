"""The lead pool in a real Chromium: a sales rep claims from the pool until their limit and reads the
message that names it, then returns a record from its page with a reason. Screenshots in var/screenshots/."""

from __future__ import annotations

import re

import pytest

from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")


def _pool_leads(rt, n: int) -> list[int]:
    return [rt.records.create("lead", {"last_name": f"Pooled {i}", "company": f"Pool Co {i}", "owner_id": None},
                              context=Context(system=True, automations=False))["id"] for i in range(n)]


def test_claim_from_the_pool_until_the_limit_then_return_one_with_a_reason(page, live_server):
    rt = live_server.runtime
    rep = live_server.sales
    rt.extensions["pools"].set_limit("lead_pool", rep.id, owned=2, per_day=None, role="admin")
    ids = _pool_leads(rt, 4)
    login(page, live_server, rep)
    page.goto("/")
    page.locator("a.dropdown-toggle", has_text="Sales").click()           # the pool sits in its entity's menu
    page.locator(".dropdown-menu.show a", has_text="Lead pool").click()
    page.wait_for_url(re.compile(r"/ui/pools/lead_pool$"))
    assert "You may claim 2 more" in page.locator("#quota").text_content()
    for rid in ids:
        assert page.locator(f'tr[data-id="{rid}"]').count() == 1

    page.locator(f'tr[data-id="{ids[0]}"] button.claim-one').click()
    page.wait_for_url(re.compile(r"/ui/pools/lead_pool$"))
    assert "Claimed 1 record(s)" in page.locator("#flash").text_content()
    assert page.locator(f'tr[data-id="{ids[0]}"]').count() == 0
    assert "You may claim 1 more" in page.locator("#quota").text_content()

    page.locator(f'tr[data-id="{ids[1]}"] input.row-select').check()
    page.locator(f'tr[data-id="{ids[2]}"] input.row-select').check()
    page.locator("#claim-selected").click()
    page.wait_for_url(re.compile(r"/ui/pools/lead_pool$"))
    refused = page.locator("#flash").text_content()
    assert "limit reached: at most 2" in refused and "owned now 1, asked 2 more" in refused
    shot(page, "over-the-limit")
    assert rt.records.get("lead", ids[1])["owner_id"] is None          # nothing half-written

    page.locator(f'tr[data-id="{ids[1]}"] button.claim-one').click()
    page.wait_for_url(re.compile(r"/ui/pools/lead_pool$"))
    assert "You have reached your limit" in page.locator("#quota").text_content()
    page.locator(f'tr[data-id="{ids[2]}"] button.claim-one').click()
    assert "limit reached" in page.locator("#flash").text_content()
    shot(page, "at-the-limit")

    page.goto(f"/ui/lead/{ids[0]}")
    page.locator('[data-pool="pool-return"]').click()
    page.wait_for_url(re.compile(rf"/ui/pools/lead_pool/return/{ids[0]}$"))
    page.locator("#f-reason").select_option("unreachable")
    page.locator("#f-note").fill("Three calls, no answer")
    shot(page, "return-form")
    page.locator("#return-submit").click()
    page.wait_for_url(re.compile(r"/ui/pools/lead_pool$"))
    assert "Returned to Lead pool" in page.locator("#flash").text_content()
    assert rt.records.get("lead", ids[0])["owner_id"] is None
    assert "You may claim 1 more" in page.locator("#quota").text_content()
    events = rt.records.metadata.tables["_crm_pool_event"]
    with rt.db.read() as conn:
        reasons = [r.reason for r in conn.execute(events.select().where(events.c.action == "return"))]
    assert reasons == ["unreachable"]


def test_a_role_without_the_pool_sees_no_entry(make_page, live_server):
    from .conftest import _add_user

    viewer = _add_user(live_server.runtime, "viewer@example.com", "Vi Viewer", "standard", "viewer-pass-1")
    page = make_page()
    login(page, live_server, viewer)
    page.goto("/")
    assert page.locator("[data-nav^='pool:']").count() == 0
    assert page.goto("/ui/pools/lead_pool").status == 404
