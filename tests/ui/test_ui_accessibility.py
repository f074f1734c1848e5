"""Accessibility: axe-core (bundled by axe-playwright-python) over every page of the base CRM in
Chromium: home, search, notifications, every screen in the navigation (dashboards, imports, data
quality, ...), and each entity's list, board, new-record form, record page and edit form. No
violation of impact "serious" or "critical" is allowed; the failure lists each rule, its impact and
the first elements it found, so the fix is obvious. English at desktop width; Chinese at phone width
over the screens a rep uses most."""

from __future__ import annotations

import re

import pytest

from .conftest import login

BLOCKING = ("serious", "critical")


@pytest.fixture(scope="module")
def axe():
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:   # pragma: no cover - the test extras install it
        pytest.skip("axe-playwright-python is not installed (make install-test)")
    return Axe()


def _pages(server, page, *, entities=None) -> list[str]:
    """The URLs to check: the navigation's own links, then each entity's screens."""
    page.goto("/")
    urls = ["/", "/ui/search?q=a", "/ui/notifications"]
    for href in page.eval_on_selector_all("nav a[href^='/']", "els => els.map(e => e.getAttribute('href'))"):
        if href not in urls and href != "#":
            urls.append(href)
    model = server.runtime.model
    for name in entities or sorted(model.entities):
        ent = model.entities[name]
        if not f"/ui/{name}" in urls:
            continue   # not in the admin's navigation (a system or child entity)
        urls += [f"/ui/{name}/new"]
        if ent.layouts.get("kanban"):
            urls.append(f"/ui/{name}/kanban")
        page.goto(f"/ui/{name}")   # a record this user may see: the first its list links to
        shown = page.eval_on_selector_all(f"main a[href^='/ui/{name}/']", "els => els.map(e => e.getAttribute('href'))")
        record = next((h for h in shown if re.fullmatch(rf"/ui/{name}/\d+", h)), None)
        if record:
            urls += [record, f"{record}/edit"]
    return urls


def _violations(axe, page) -> list[str]:
    found = []
    for v in axe.run(page).response["violations"]:
        if v.get("impact") in BLOCKING:
            targets = ", ".join(str(n["target"][0]) for n in v["nodes"][:3]) + " " + str((v["nodes"][0].get("any") or [{}])[0].get("data"))[:200]
            found.append(f"{page.url}: {v['id']} ({v['impact']}): {v['help']} -> {targets}")
    return found


def _check(axe, page, urls) -> list[str]:
    problems = []
    for url in urls:
        response = page.goto(url)
        assert response is not None and response.status < 400, f"{url} answered {response and response.status}"
        problems += _violations(axe, page)
    return problems


def test_every_page_of_the_base_crm_has_no_serious_accessibility_violation(page, live_server, axe):
    login(page, live_server, live_server.admin)
    urls = _pages(live_server, page)
    assert len(urls) > 40   # the whole base CRM, not a sample
    problems = _check(axe, page, urls)
    assert problems == [], "\n".join(problems)


def test_the_chinese_ui_at_phone_width_has_no_serious_accessibility_violation(make_page, live_server, axe):
    page = make_page(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True, has_touch=True)
    login(page, live_server, live_server.sales)
    page.goto("/")
    page.locator("#lang-zh").click() if page.locator("#lang-zh").count() else None
    urls = _pages(live_server, page, entities=["account", "contact", "lead", "opportunity", "activity", "case"])
    problems = _check(axe, page, urls)
    assert problems == [], "\n".join(problems)
