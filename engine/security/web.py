"""Web login and logout, the session cookie, CSRF protection and login throttling.

- ``GET /login`` shows a minimal form; ``POST /login`` checks e-mail and password (scrypt), clears
  the session (no fixation), and stores the user id and a fresh CSRF token in Flask's signed,
  HttpOnly, SameSite=Lax cookie (Secure when ``CRM_SECURE_COOKIES`` is set). ``POST /logout``
  clears it.
- CSRF: every POST/PUT/PATCH/DELETE that is a form post, or that a session cookie authenticates,
  must carry the session's token (form field ``csrf_token`` or header ``X-CSRF-Token``); calls with
  an ``Authorization`` header (API tokens) are not subject to it. Templates get ``csrf_token()``.
- Throttling: after ``MAX_FAILURES`` failed logins for one e-mail from one address within
  ``WINDOW``, further attempts are refused until the window has passed since the last failure.
  Attempts are stored in ``_crm_login_attempt``, so every server process sees them.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session

from .audit import audit
from .passwords import verify_password
from .tokens import Identity

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
WRONG_LOGIN = "Wrong e-mail or password."
THROTTLED = (f"Too many failed logins for this account from your address; "
             f"try again in {int(WINDOW.total_seconds() // 60)} minutes.")
CSRF_REFUSED = "CSRF token missing or invalid: reload the page and send the form again"
#: What these pages tell people; login.html shows them through the UI's catalogs (translated).
MESSAGES = (WRONG_LOGIN, THROTTLED, CSRF_REFUSED)


class CsrfError(Exception):
    """A state-changing request without the session's CSRF token."""


def install_web(app: Flask, runtime, *, secure_cookies: bool = False) -> None:
    """Register the login blueprint, the CSRF check and the ``csrf_token()`` template global."""
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=secure_cookies, PERMANENT_SESSION_LIFETIME=timedelta(hours=12))
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.before_request(_check_csrf)
    app.after_request(_protective_headers)
    app.register_blueprint(_blueprint())


def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def session_identity(records) -> Identity | None:
    """The active user the session cookie names, or None."""
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    users = records.metadata.tables["user"]
    with records.db.read() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.email, users.c.role, users.c.active)
                           .where(users.c.id == user_id)).first()
    if row is None or row.active is False:
        return None
    return Identity(row.id, row.email, row.role)


def login(records, email: str, password: str, ip: str) -> tuple[int | None, str | None]:
    """(user id, None) on success, (None, message) otherwise; records the attempt and audits it."""
    email = (email or "").strip().lower()
    if throttled(records, email, ip):
        audit(records, "login_throttled", detail={"email": email}, ip=ip)
        return None, THROTTLED
    users, creds = records.metadata.tables["user"], records.metadata.tables["_crm_credential"]
    with records.db.read() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.active, creds.c.password_hash)
                           .join(creds, creds.c.user_id == users.c.id).where(users.c.email == email)).first()
    ok = row is not None and row.active is not False and verify_password(password or "", row.password_hash)
    _attempt(records, email, ip, ok)
    if not ok:
        audit(records, "login_failed", detail={"email": email}, ip=ip)
        return None, WRONG_LOGIN
    audit(records, "login", user_id=row.id, ip=ip)
    return row.id, None


def throttled(records, email: str, ip: str) -> bool:
    """Whether ``MAX_FAILURES`` logins failed for ``email`` from ``ip`` within ``WINDOW`` (since the
    last success)."""
    attempts = records.metadata.tables["_crm_login_attempt"]
    since = datetime.now(timezone.utc) - WINDOW
    with records.db.read() as conn:
        last_ok = conn.execute(sa.select(sa.func.max(attempts.c.at)).where(
            attempts.c.email == email, attempts.c.ip == ip, attempts.c.ok.is_(True))).scalar()
        start = max(since, last_ok) if last_ok is not None else since
        failures = conn.execute(sa.select(sa.func.count()).select_from(attempts).where(
            attempts.c.email == email, attempts.c.ip == ip, attempts.c.ok.is_(False),
            attempts.c.at > start)).scalar()
    return failures >= MAX_FAILURES


# -- private -------------------------------------------------------------------------------------

def _attempt(records, email: str, ip: str, ok: bool) -> None:
    attempts = records.metadata.tables["_crm_login_attempt"]
    now = datetime.now(timezone.utc)
    with records.db.write() as conn:
        conn.execute(attempts.insert().values(email=email[:255], ip=ip[:64], at=now, ok=ok))
        conn.execute(attempts.delete().where(attempts.c.at < now - 4 * WINDOW))   # keep the table small


def _protective_headers(response):
    """No MIME sniffing, no framing of our pages by other sites (clickjacking), no full URLs (with
    their filters) sent to other sites as the referrer."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _check_csrf():
    if request.method not in UNSAFE or request.headers.get("Authorization"):
        return None
    is_form = (request.mimetype or "") in FORM_TYPES
    if not (is_form or session.get("user_id") is not None or request.endpoint == "web.login"):
        return None   # an anonymous JSON call: the API answers 401
    sent = request.headers.get("X-CSRF-Token") or (request.form.get("csrf_token") if is_form else None)
    expected = session.get("csrf")
    if not sent or not expected or not hmac.compare_digest(str(sent), str(expected)):
        detail = CSRF_REFUSED
        if request.path.startswith("/api/"):
            from engine.api.errors import problem

            return problem(403, "Forbidden", detail, "csrf")
        return render_template("login.html", error=detail, email="", next=None), 403
    return None


def _safe_next(target: str | None) -> str | None:
    """A path on this site to go to after the login (never another host: no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def _blueprint() -> Blueprint:
    bp = Blueprint("web", __name__)

    @bp.get("/login")
    def login_form():
        return render_template("login.html", error=None, email="", next=_safe_next(request.args.get("next")))

    @bp.post("/login")
    def login_post():
        records = current_app.extensions["crm"].records
        email = request.form.get("email", "")
        user_id, error = login(records, email, request.form.get("password", ""), request.remote_addr or "")
        if user_id is None:
            status = 429 if error == THROTTLED else 401
            return render_template("login.html", error=error, email=email,
                                   next=_safe_next(request.form.get("next"))), status
        lang = session.get("lang")
        session.clear()   # nothing from before the login survives it (session fixation)
        if lang:
            session["lang"] = lang
        session["user_id"] = user_id
        session["csrf"] = secrets.token_urlsafe(32)
        session.permanent = True
        return redirect(_safe_next(request.form.get("next")) or "/")

    @bp.post("/logout")
    def logout():
        user_id = session.get("user_id")
        if user_id is not None:
            audit(current_app.extensions["crm"].records, "logout", user_id=user_id)
        session.clear()
        return redirect("/login")

    return bp
