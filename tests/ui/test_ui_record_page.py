"""The record page in a real browser, in English at desktop width and in Chinese at phone width:
log a call from an account's page and see it in the timeline; edit a field in place and get its
validation error beside it; a concurrent edit shows both values; click a stage of the path."""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest

from engine.storage.records import Context

from .conftest import login, shot

SYSTEM = Context(system=True)
CASES = [pytest.param("en", 1280, id="en-desktop"), pytest.param("zh", 390, id="zh-phone")]
TEXT = {"en": {"call": "Log a call", "keep": "Keep mine", "today": "Today"},
        "zh": {"call": "记录通话", "keep": "保留我的", "today": "今天"}}


def _page(make_page, lang: str, width: int):
    return make_page(viewport={"width": width, "height": 900 if width > 600 else 844},
                     locale="zh-CN" if lang == "zh" else "en-US")


@pytest.mark.parametrize(("lang", "width"), CASES)
def test_log_a_call_and_edit_a_field_in_place(make_page, live_server, lang, width):
    rt = live_server.runtime
    account = rt.records.create("account", {"name": "Zephyr Analytics", "phone": "+1 415 555 2671"}, context=SYSTEM)
    page = _page(make_page, lang, width)
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/account/{account['id']}")
    assert page.locator("#record-title").inner_text() == "Zephyr Analytics"
    shot(page, "page")
    # log a call from the composer: it shows in the timeline under today, no page load
    page.locator('[data-quick-tab="call"]').click()
    form = page.locator('form[data-quick-action="call"]')
    form.locator('[name="subject"]').fill("Discussed the renewal")
    form.locator('[name="description"]').fill("Wants a quote by Friday.")
    form.locator('[data-quick-save="call"]').click()
    page.locator("#composer-done").wait_for()
    item = page.locator('#timeline [data-kind="call"]').first
    item.wait_for()
    assert "Discussed the renewal" in item.inner_text()
    assert TEXT[lang]["today"] in page.locator("#timeline .timeline-day").first.text_content()
    assert [a["subject"] for a in rt.records.query("activity", limit=10_000)
            if a["related_to"] and a["related_to"].id == account["id"] and a["related_to"].entity == "account"] == \
        ["Discussed the renewal"]
    shot(page, "call-logged")
    # inline edit: a bad value gets its error beside the field, the typed text stays; then a good one saves
    field = page.locator("#field-website")
    page.locator('label[for="show-empty"]').click()   # website is empty: shown once "show empty fields" is on
    field.hover()
    field.locator('[data-edit="website"]').click()
    page.locator("#f-website").fill("not a url")
    page.locator('[data-save="website"]').click()
    error = page.locator('#field-website [data-error-for="website"]')
    error.wait_for()
    assert page.input_value("#f-website") == "not a url"
    shot(page, "inline-error")
    page.locator("#f-website").fill("https://zephyr.example")
    page.locator('[data-save="website"]').click()
    page.locator("#field-website.just-saved").wait_for()
    assert "https://zephyr.example" in page.locator("#field-website").inner_text()
    assert rt.records.get("account", account["id"])["website"] == "https://zephyr.example"


@pytest.mark.parametrize(("lang", "width"), CASES)
def test_an_inline_conflict_shows_both_values_and_a_path_stage_is_clicked(make_page, live_server, lang, width):
    rt = live_server.runtime
    account = rt.records.create("account", {"name": "Acme"}, context=SYSTEM)
    opp = rt.records.create("opportunity", {"name": "Acme platform", "account": account["id"], "amount": Decimal(5000),
                                            "next_step": "Call back", "close_date": date.today() + timedelta(days=20)},
                            context=SYSTEM)
    page = _page(make_page, lang, width)
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/opportunity/{opp['id']}")
    # someone else changes the next step after the page loaded
    rt.records.update("opportunity", opp["id"], {"next_step": "Send pricing"}, context=SYSTEM)
    page.locator("#field-next_step").hover()
    page.locator('[data-edit="next_step"]').click()
    page.locator("#f-next_step").fill("Book a demo")
    page.locator('[data-save="next_step"]').click()
    conflict = page.locator("#conflict-next_step")
    conflict.wait_for()
    assert conflict.locator(".theirs").inner_text() == "Send pricing"
    assert conflict.locator(".mine").inner_text() == "Book a demo"
    assert rt.records.get("opportunity", opp["id"])["next_step"] == "Send pricing"   # nothing overwritten
    shot(page, "conflict")
    page.locator('[data-save="next_step"]').click()   # keep mine
    page.locator("#field-next_step.just-saved").wait_for()
    assert rt.records.get("opportunity", opp["id"])["next_step"] == "Book a demo"
    # the path: click the next stage, the transition is taken and the bar moves
    page.locator('[data-path-transition="qualify"]').click()
    page.locator('#path .path-step.current[data-state="qualification"]').wait_for()
    assert rt.records.get("opportunity", opp["id"])["stage"] == "qualification"
    assert re.search(r"done", page.locator('#path [data-state="prospecting"]').get_attribute("class"))
    shot(page, "path")
