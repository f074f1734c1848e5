"""The signed-in user's own profile, and an admin's view of a user's password and sessions.

``/ui/profile``: language and time zone (stored on the user, used by every page: the session takes
them at login and when they are saved), the password (the current one first; the other sessions end,
this one stays), which notifications the user wants in the app and by e-mail, and their own open
sessions (end the others). Every change goes through ``engine.security.profile``, which writes only
the profile's own fields of the ``user`` entity (never the role or the team) and audits it.

``/ui/admin/users/<id>/security`` (admins only, else 403): a temporary password (shown once; the
user must change it at the next login) and the user's sessions, each of which can be ended.
"""

from __future__ import annotations

from flask import abort, g, render_template, request, session, url_for

from engine.security import profile as me
from engine.storage.errors import NotFound, ValidationFailed

from .common import runtime, with_message
from .extend import ui_routes
from .i18n import LANGUAGES, current_lang, say
from .i18n import translate as _

#: Endpoints a user with a temporary password may still reach (everything else leads here).
OPEN_WHILE_MUST_CHANGE = frozenset({"profile.page", "profile.password"})


def profile_blueprint():
    bp = ui_routes("profile", __name__, template_folder=None)
    bp.before_request(_temporary_password_first)
    bp.add_url_rule("/ui/profile", "page", page, methods=["GET"])
    bp.add_url_rule("/ui/profile/preferences", "preferences", preferences, methods=["POST"])
    bp.add_url_rule("/ui/profile/password", "password", password, methods=["POST"])
    bp.add_url_rule("/ui/profile/notifications", "notifications", notifications, methods=["POST"])
    bp.add_url_rule("/ui/profile/sessions/end", "end_sessions", end_my_sessions, methods=["POST"])
    bp.add_url_rule("/ui/admin/users/<int:user_id>/security", "admin", admin_page, methods=["GET"])
    bp.add_url_rule("/ui/admin/users/<int:user_id>/reset", "admin_reset", admin_reset, methods=["POST"])
    bp.add_url_rule("/ui/admin/users/<int:user_id>/sessions/end", "admin_end", admin_end, methods=["POST"])
    return bp


def _temporary_password_first():
    if session.get("must_change") and request.endpoint not in OPEN_WHILE_MUST_CHANGE:
        return with_message(url_for("profile.page"), _("Choose a new password first."), "warning")
    return None


def _me() -> dict:
    return runtime().records.get("user", g.identity.user_id)


def page(errors: dict | None = None, status: int = 200):
    user = _me()
    prefs = me.preferences(user.get("notify"))
    kinds = [(kind, _(label), prefs[kind]) for kind, (label, _d) in me.NOTIFICATION_KINDS.items()]
    sessions = me.sessions_of(runtime().records, g.identity.user_id, session.get("sid"))
    return render_template("ui/profile.html", user=user, languages=LANGUAGES, zones=me.zone_names(), kinds=kinds,
                           sessions=sessions, errors=errors or {}, must_change=bool(session.get("must_change")),
                           chosen_lang=user.get("language") or current_lang()), status


def preferences():
    values = {"language": request.form.get("language", ""), "time_zone": request.form.get("time_zone", "").strip()}
    try:
        saved = me.update_profile(runtime().records, g.identity.user_id, values)
    except ValidationFailed as exc:
        return page(_field_errors(exc), 422)
    if saved.get("language"):
        session["lang"] = saved["language"]
        g.pop("lang", None)
    session.pop("tz", None)
    if saved.get("time_zone"):
        session["tz"] = saved["time_zone"]
    g.pop("zone", None)
    return with_message(url_for("profile.page"), _("Your preferences are saved."), "success")


def password():
    if request.form.get("new", "") != request.form.get("repeat", ""):
        return page({"repeat": [_("The two new passwords differ.")]}, 422)
    try:
        me.change_password(runtime().records, g.identity.user_id, request.form.get("current", ""),
                           request.form.get("new", ""), keep_key=session.get("sid"), ip=request.remote_addr or "")
    except ValidationFailed as exc:
        errors = _field_errors(exc)
        status = 429 if any(e.code == "throttled" for e in exc.errors) else 422
        return page(errors, status)
    session.pop("must_change", None)
    return with_message(url_for("profile.page"), _("Your password is changed; your other sessions have ended."),
                        "success")


def notifications():
    chosen = {kind: {ch: f"{kind}.{ch}" in request.form for ch in me.CHANNELS} for kind in me.NOTIFICATION_KINDS}
    me.update_profile(runtime().records, g.identity.user_id, {"notify": chosen})
    return with_message(url_for("profile.page"), _("Your notification preferences are saved."), "success")


def end_my_sessions():
    records = runtime().records
    mine = me.sessions_of(records, g.identity.user_id, session.get("sid"))
    wanted = request.form.get("session", "")
    ends = [s["id"] for s in mine if not s["current"] and (wanted == "others" or s["id"] == wanted)]
    for handle in ends:
        me.end_session(records, g.identity.user_id, g.identity.user_id, handle)
    return with_message(url_for("profile.page"), _("Sessions ended: %(n)s.") % {"n": len(ends)}, "success")


# -- an admin's door ------------------------------------------------------------------------------

def _admin_user(user_id: int) -> dict:
    if not g.access.admin:
        abort(403)
    try:
        return runtime().records.get("user", user_id)
    except NotFound:
        abort(404)


def admin_page(user_id: int, temporary: str | None = None):
    user = _admin_user(user_id)
    sessions = me.sessions_of(runtime().records, user_id, session.get("sid"))
    return render_template("ui/profile_admin.html", user=user, sessions=sessions, temporary=temporary)


def admin_reset(user_id: int):
    _admin_user(user_id)
    temporary = me.reset_password(runtime().records, g.identity.user_id, user_id)
    if user_id == g.identity.user_id:
        session.clear()   # the admin's own sessions ended with the reset
        return with_message("/login", _("Your password was reset; sign in with the temporary password."), "info")
    return admin_page(user_id, temporary)


def admin_end(user_id: int):
    _admin_user(user_id)
    handle = request.form.get("session") or None
    ended = me.end_session(runtime().records, g.identity.user_id, user_id, None if handle == "all" else handle)
    return with_message(url_for("profile.admin", user_id=user_id), _("Sessions ended: %(n)s.") % {"n": ended},
                        "success")


def _field_errors(exc: ValidationFailed) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in exc.errors:
        out.setdefault(e.field or "", []).append(say(e.message))
    return out


__all__ = ["profile_blueprint"]
