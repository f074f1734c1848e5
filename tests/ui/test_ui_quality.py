"""The data-quality page in Chromium, in English and Chinese, at desktop and phone widths: the menu
entry leads to it, the bars and counts are drawn, the page does not overflow, and an "invalid" link
opens the list of those records."""

from __future__ import annotations

import re

import pytest

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")


def _stale_values(rt) -> list[int]:
    """Two leads holding values stored before today's rules (a bad e-mail, a phone not in E.164)."""
    table = rt.records.table("lead")
    ids = [r["id"] for r in rt.records.query("lead", limit=2)]
    with rt.db.write() as conn:
        conn.execute(table.update().where(table.c.id == ids[0]).values(email="not an address"))
        conn.execute(table.update().where(table.c.id == ids[1]).values(phone="(201) 555-0100"))
    return ids


@pytest.mark.parametrize("lang, width", [("en", 1280), ("zh", 1280), ("en", 390), ("zh", 390)])
def test_the_quality_page_in_both_languages_and_widths(make_page, live_server, lang, width):
    ids = _stale_values(live_server.runtime)
    page = make_page(viewport={"width": width, "height": 900}, locale="zh-CN" if lang == "zh" else "en-US")
    login(page, live_server, live_server.admin)
    page.goto("/ui/quality/lead")
    assert page.locator("h1").inner_text() == live_server.runtime.model.entity("lead").plural.get(lang)
    assert page.locator("#completeness tbody tr").count() > 10
    assert page.locator("#completeness-title").inner_text() == ("完整度" if lang == "zh" else "Completeness")
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
    shot(page, f"{lang}-{width}")
    page.screenshot(path=f"/tmp/exp-quality-{lang}-{width}.png", full_page=True)
    page.locator('#invalid tr[data-field="email"] a.invalid-link').click()
    page.wait_for_url(re.compile(r"/ui/lead\?where="))
    assert page.locator("#records tbody tr, table tbody tr").count() >= 1
    assert str(ids[0]) in page.url.replace("%20", " ").replace("+", " ")
