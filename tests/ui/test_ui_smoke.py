"""Smoke test of the browser-test set-up: the login page in a real Chromium against a live server."""

from __future__ import annotations

from .conftest import SCREENSHOTS, login, shot


def test_admin_signs_in_and_lands_on_home(page, live_server):
    page.goto("/login")
    assert page.title().startswith("Sign in")
    saved = shot(page, "login")
    assert saved == SCREENSHOTS / "test_ui_smoke.test_admin_signs_in_and_lands_on_home-login.png"
    assert saved.read_bytes().startswith(b"\x89PNG")
    response = login(page, live_server, live_server.admin.email, live_server.admin.password)
    assert response.status == 200
    assert page.url == f"{live_server.url}/"


def test_wrong_password_shows_the_error(page, live_server):
    page.goto("/login")
    page.fill("input[name=email]", live_server.sales.email)
    page.fill("input[name=password]", "not-the-password")
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    page.get_by_text("Wrong e-mail or password.").wait_for()
    assert page.url == f"{live_server.url}/login"
    shot(page, "error")
    # and the sales user's real password works
    assert login(page, live_server, live_server.sales).status == 200
