"""The profile page (engine/ui/profile.py, engine/security/profile.py): a user's password, language,
time zone and notification preferences, their sessions; an admin's password reset and a user's
sessions; engine messages in Chinese in the zh UI and in the API with ``Accept-Language: zh``."""

from __future__ import annotations

import html
import re

import pytest

from engine.security.profile import preferences, wants

pytest.register_assert_rewrite("tests.ui_kit")
from .ui_kit import PASSWORD, SYSTEM, Browser, text  # noqa: E402

pytest_plugins = ("tests.ui_kit",)

NEW = "a much better secret 7"


def sessions_of(site, user) -> int:
    table = site.records.metadata.tables["_crm_session"]
    with site.records.db.read() as conn:
        return len(conn.execute(table.select().where(table.c.user_id == user["id"])).all())


def audit_kinds(site) -> list[str]:
    table = site.records.metadata.tables["_crm_audit"]
    with site.records.db.read() as conn:
        return [r.kind for r in conn.execute(table.select()).all()]


def flash_of(browser, response) -> str:
    assert response.status_code == 302, (response.status_code, text(response)[-1500:])
    page = text(browser.get(response.location))
    found = re.search(r'id="flash">(.*?)</div>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


def test_change_password_needs_the_current_one_and_ends_the_other_sessions(site):
    mine, other = site.browser(site.sales), site.browser(site.sales)
    assert sessions_of(site, site.sales) == 2
    page = text(mine.get("/ui/profile"))
    assert "Sam Sales" in page and 'id="profile-password"' in page and "This session" in page
    wrong = mine.post("/ui/profile/password", {"current": "not it", "new": NEW, "repeat": NEW})
    assert wrong.status_code == 422 and "is not your current password" in text(wrong)
    weak = mine.post("/ui/profile/password", {"current": PASSWORD, "new": "short", "repeat": "short"})
    assert weak.status_code == 422 and "at least 10 characters" in text(weak)
    differ = mine.post("/ui/profile/password", {"current": PASSWORD, "new": NEW, "repeat": NEW + "x"})
    assert differ.status_code == 422 and "differ" in text(differ)
    ok = mine.post("/ui/profile/password", {"current": PASSWORD, "new": NEW, "repeat": NEW})
    assert "other sessions have ended" in flash_of(mine, ok)
    assert sessions_of(site, site.sales) == 1
    assert mine.get("/").status_code == 200                       # this session stays
    assert other.get("/").status_code == 302                      # the other one ended
    assert Browser(site.app).login(site.sales["email"], NEW)
    assert "password_changed" in audit_kinds(site)


def test_wrong_current_passwords_are_throttled(site):
    b = site.browser(site.sales)
    for _ in range(5):
        assert b.post("/ui/profile/password", {"current": "nope", "new": NEW, "repeat": NEW}).status_code == 422
    r = b.post("/ui/profile/password", {"current": PASSWORD, "new": NEW, "repeat": NEW})
    assert r.status_code == 429 and "too many wrong passwords" in text(r)


def test_language_and_time_zone_are_saved_and_used(site):
    b = site.browser(site.sales)
    bad = b.post("/ui/profile/preferences", {"language": "zh", "time_zone": "Mars/Olympus"})
    assert bad.status_code == 422 and "is not a time zone" in text(bad)
    assert site.records.get("user", site.sales["id"]).get("time_zone") is None   # nothing half-written
    r = b.post("/ui/profile/preferences", {"language": "zh", "time_zone": "Asia/Shanghai"})
    assert r.status_code == 302
    user = site.records.get("user", site.sales["id"])
    assert user["language"] == "zh" and user["time_zone"] == "Asia/Shanghai"
    page = text(b.get("/ui/profile"))
    assert "我的资料" in page and "Asia/Shanghai" in page
    fresh = site.browser(site.sales)                                # a new login takes them from the user
    page = text(fresh.get("/ui/notifications"))
    assert "通知" in page
    assert "Asia/Shanghai" in text(fresh.get("/ui/profile"))
    assert "profile_changed" in audit_kinds(site)


def test_a_user_cannot_change_their_own_role_or_team_here(site):
    from engine.security.profile import update_profile
    from engine.storage.errors import ValidationFailed

    b = site.browser(site.sales)
    b.post("/ui/profile/preferences", {"language": "en", "time_zone": "", "role": "admin", "team": "south"})
    user = site.records.get("user", site.sales["id"])
    assert user["role"] == "sales" and user["team"] == site.sales["team"]
    with pytest.raises(ValidationFailed) as caught:
        update_profile(site.records, site.sales["id"], {"role": "admin"})
    assert caught.value.errors[0].field == "role"
    assert site.records.get("user", site.sales["id"])["role"] == "sales"


def test_notification_preferences(site):
    b = site.browser(site.sales)
    assert wants(site.records, site.sales["id"], "approval", "email") is False
    r = b.post("/ui/profile/notifications", {"approval.email": "on", "approval.in_app": "on", "pool.in_app": "on"})
    assert r.status_code == 302
    assert wants(site.records, site.sales["id"], "approval", "email") is True
    assert wants(site.records, site.sales["id"], "automation", "in_app") is False
    assert preferences(None)["pool"] == {"in_app": True, "email": False}


def test_my_other_sessions_can_be_ended(site):
    mine, other = site.browser(site.sales), site.browser(site.sales)
    r = mine.post("/ui/profile/sessions/end", {"session": "others"})
    assert r.status_code == 302
    assert mine.get("/").status_code == 200 and other.get("/").status_code == 302


def test_admin_resets_a_password_and_sees_and_ends_sessions(site, admin):
    user = site.browser(site.sales)
    page = text(admin.get(f"/ui/admin/users/{site.sales['id']}/security"))
    assert "Sam Sales" in page and 'id="sessions"' in page
    handle = re.search(r'name="session" value="([0-9a-f]{16})"', page).group(1)
    r = admin.post(f"/ui/admin/users/{site.sales['id']}/sessions/end", {"session": handle})
    assert r.status_code == 302 and user.get("/").status_code == 302
    r = admin.post(f"/ui/admin/users/{site.sales['id']}/reset")
    temporary = html.unescape(re.search(r'<code[^>]*>([^<]+)</code>', text(r)).group(1))
    fresh = Browser(site.app)
    fresh.csrf = re.search(r'name="csrf_token" value="([^"]+)"', text(fresh.get("/login"))).group(1)
    r = fresh.client.post("/login", data={"email": site.sales["email"], "password": temporary, "csrf_token": fresh.csrf})
    assert r.status_code == 302 and r.location.endswith("/ui/profile")
    fresh.csrf = re.search(r'name="csrf_token" value="([^"]+)"', text(fresh.get("/ui/profile"))).group(1)
    assert fresh.get("/ui/account").status_code == 302                      # a new password first
    r = fresh.post("/ui/profile/password", {"current": temporary, "new": NEW, "repeat": NEW})
    assert r.status_code == 302 and fresh.get("/ui/account").status_code == 200
    kinds = audit_kinds(site)
    assert "password_reset" in kinds and "sessions_ended" in kinds


def test_non_admins_get_403_on_the_admin_routes(site):
    b = site.browser(site.sales)
    assert b.get(f"/ui/admin/users/{site.admin['id']}/security").status_code == 403
    assert b.post(f"/ui/admin/users/{site.admin['id']}/reset").status_code == 403
    assert b.post(f"/ui/admin/users/{site.admin['id']}/sessions/end", {"session": "all"}).status_code == 403
    assert Browser(site.app).login(site.admin["email"])   # the admin's password was not changed


# -- engine messages in Chinese -------------------------------------------------------------------

def test_a_required_field_error_in_chinese_in_the_ui_and_the_api(site, admin):
    admin.lang("zh")
    r = admin.post("/ui/account/new", {"name": ""})
    assert r.status_code == 422
    page = text(r)
    assert "必填" in page and "is required" not in page
    token = _token(site, site.admin)
    r = admin.client.post("/api/v1/account", json={}, headers={"Authorization": f"Bearer {token}",
                                                               "Accept-Language": "zh-CN,zh;q=0.9"})
    body = r.get_json()
    assert r.status_code == 422 and body["errors"][0]["message"] == "必填", body
    assert "客户" in body["detail"] or "必填" in body["detail"]
    r = admin.client.post("/api/v1/account", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.get_json()["errors"][0]["message"] == "is required"


def test_a_permission_refusal_in_chinese(site):
    token = _token(site, site.sales)
    client = site.app.test_client()
    r = client.post("/api/v1/user", json={"name": "X", "email": "x@example.com"},
                    headers={"Authorization": f"Bearer {token}", "Accept-Language": "zh"})
    assert r.status_code == 403 and "您的角色" in r.get_json()["detail"], r.get_json()
    r = client.post("/api/v1/user", json={"name": "X", "email": "x@example.com"},
                    headers={"Authorization": f"Bearer {token}"})
    assert "your role does not allow create on user" in r.get_json()["detail"]


def test_a_workflow_refusal_in_chinese(site, admin):
    from datetime import date, timedelta

    account = site.records.query("account", limit=1)[0]
    opp = site.records.create("opportunity", {"name": "Deal", "account": account["id"],
                                              "close_date": date.today() + timedelta(days=30)}, context=SYSTEM)
    admin.lang("zh")
    r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "won"})
    message = r.get_json()["error"]
    assert r.status_code == 422 and "不能从" in message and "当前可用" in message and "propose" in message, message
    token = _token(site, site.admin)
    r = site.app.test_client().patch(f"/api/v1/opportunity/{opp['id']}", json={"stage": "won"},
                                     headers={"Authorization": f"Bearer {token}", "Accept-Language": "zh"})
    body = r.get_json()
    assert r.status_code == 422, body
    assert "不能从" in body["errors"][0]["message"] and "当前可用" in body["errors"][0]["message"], body
    assert "阶段" in body["detail"] or "Stage" not in body["detail"], body


def _token(site, user) -> str:
    from engine.security.tokens import create_token

    return create_token(site.records, user["id"], "test")[1]


