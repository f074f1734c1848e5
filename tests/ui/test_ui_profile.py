"""The profile page in a real Chromium, in English and Chinese, on a desktop and a phone: the user
opens it from their name in the navigation, chooses the other language and a time zone, and the
page comes back in that language with the zone. Screenshots in var/screenshots/."""

from __future__ import annotations

import re

import pytest

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")

CASES = {   # starting language -> (browser locale, language chosen, zone chosen, saved message)
    "en": ("en-US", "zh", "Asia/Shanghai", "您的偏好已保存。"),
    "zh": ("zh-CN", "en", "America/New_York", "Your preferences are saved."),
}
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("lang", CASES)
def test_change_language_and_time_zone(make_page, live_server, lang, size):
    locale, other, zone, saved = CASES[lang]
    page = make_page(locale=locale, viewport=SIZES[size])
    login(page, live_server, live_server.sales)
    if size == "phone":
        page.locator("button.navbar-toggler").click()
    page.locator("#nav-profile").click()
    page.wait_for_url(re.compile(r"/ui/profile$"))
    assert page.locator("h1").text_content() == ("My profile" if lang == "en" else "我的资料")
    assert page.locator("#sessions li").count() >= 1
    shot(page, f"profile-{lang}-{size}-before")
    page.select_option("#language", other)
    page.fill("#time_zone", zone)
    page.locator("#profile-preferences button[type=submit]").click()
    page.wait_for_url(re.compile(r"/ui/profile$"))
    assert page.locator("#flash").text_content().strip() == saved
    assert page.locator("#time_zone").input_value() == zone
    assert page.locator("html").get_attribute("lang") == ("zh-CN" if other == "zh" else "en")
    assert page.evaluate("document.documentElement.scrollWidth") <= SIZES[size]["width"] + 1
    user = live_server.runtime.records.get("user", live_server.sales.id)
    assert user["language"] == other and user["time_zone"] == zone
    shot(page, f"profile-{lang}-{size}-after")
