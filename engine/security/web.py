"""Web login and logout, the session cookie, CSRF protection and login throttling.

- ``GET /login`` shows a minimal form; ``POST /login`` checks e-mail and password (scrypt), clears
  the session (no fixation), opens a server-side session (a row of ``_crm_session``, keyed by the
  hash of a random key) and stores the user id, that key and a fresh CSRF token in Flask's signed,
  HttpOnly, SameSite=Lax cookie (Secure when ``CRM_SECURE_COOKIES`` is set). Every request needs
  the row: ``POST /logout`` deletes it, and a password change or disabling the user deletes all of
  the user's rows (``end_sessions``), so a copy of the cookie stops working too.
- CSRF is decided by how a request is authenticated, never by a header's presence: every
  POST/PUT/PATCH/DELETE that is a form post, or that a session cookie authenticates, must carry the
  session's token (form field ``csrf_token`` or header ``X-CSRF-Token``); only an API call that a
  valid bearer token authenticates is exempt. Templates get ``csrf_token()``.
- After the login the browser goes to ``next=`` only when it is a path of this site
  (``safe_next``), parsed as a browser would read it; anything else goes home.
- Throttling: after ``MAX_FAILURES`` failed logins for one e-mail from one address within
  ``WINDOW``, further attempts are refused until the window has passed since the last failure.
  Attempts are stored in ``_crm_login_attempt``, so every server process sees them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session

from .audit import audit
from .passwords import verify_password
from .tokens import Identity, authenticate

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
SESSION_LIFETIME = timedelta(hours=12)
SEEN_EVERY = timedelta(minutes=1)
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
                      SESSION_COOKIE_SECURE=secure_cookies, PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME)
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
    """The active user of the session cookie, or None: the cookie must name a server-side session
    that is still open (not logged out, not ended by a password change or by disabling the user)."""
    user_id, key = session.get("user_id"), session.get("sid")
    if not isinstance(user_id, int) or not isinstance(key, str):
        return None
    users, sessions = records.metadata.tables["user"], records.metadata.tables["_crm_session"]
    with records.db.read() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.email, users.c.role, users.c.active,
                                     sessions.c.last_seen_at, sessions.c.created_at)
                           .join(sessions, sessions.c.user_id == users.c.id)
                           .where(sessions.c.key_hash == _digest(key), sessions.c.user_id == user_id,
                                  sessions.c.expires_at > datetime.now(timezone.utc))).first()
    if row is None or row.active is False:
        return None
    _seen(records, key, row.last_seen_at or row.created_at)
    return Identity(row.id, row.email, row.role)


def _seen(records, key: str, last: datetime | None) -> None:
    """Note when a session was last used (at most once a minute: the sessions list shows it)."""
    now = datetime.now(timezone.utc)
    if last is not None and now - last < SEEN_EVERY:
        return
    table = records.metadata.tables["_crm_session"]
    with records.db.write() as conn:
        conn.execute(table.update().where(table.c.key_hash == _digest(key)).values(last_seen_at=now))


def open_session(records, user_id: int, *, ip: str | None = None, user_agent: str | None = None) -> str:
    """A new server-side session of ``user_id``; returns its key (kept in the signed cookie only).
    The address and the browser are kept for the user's list of sessions."""
    key = secrets.token_urlsafe(32)
    table = records.metadata.tables["_crm_session"]
    now = datetime.now(timezone.utc)
    with records.db.write() as conn:
        conn.execute(table.insert().values(key_hash=_digest(key), user_id=user_id, created_at=now,
                                           expires_at=now + SESSION_LIFETIME, last_seen_at=now,
                                           ip=(ip or "")[:64] or None, user_agent=(user_agent or "")[:255] or None))
        conn.execute(table.delete().where(table.c.expires_at < now))   # keep the table small
    return key


def end_sessions(records, user_id: int, *, key: str | None = None, conn=None) -> None:
    """End the session ``key`` of ``user_id``, or all of the user's sessions (password change,
    disabled user); in ``conn``'s transaction when given."""
    table = records.metadata.tables["_crm_session"]
    stmt = table.delete().where(table.c.user_id == user_id)
    if key is not None:
        stmt = stmt.where(table.c.key_hash == _digest(key))
    if conn is not None:
        conn.execute(stmt)
        return
    with records.db.write() as own:
        own.execute(stmt)


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path of this site, else None (go home): no open redirect.

    The text is read the way a browser reads a ``Location``: control characters, tabs and newlines
    are dropped and backslashes count as slashes (``/\\evil`` and ``/<TAB>/evil`` are ``//evil``),
    percent-encoding is undone for the check, then the URL is parsed: no scheme, no host, a path
    starting with a single slash."""
    if not isinstance(target, str) or not target or len(target) > 2000:
        return None
    cleaned = _as_browsers_read(target)
    for text in (cleaned, _as_browsers_read(unquote(cleaned))):
        try:
            parts = urlsplit(text)
        except ValueError:
            return None
        if parts.scheme or parts.netloc or not parts.path.startswith("/") or text.startswith("//"):
            return None   # ("///host" parses as an empty host and the path "/host"; browsers go to host)
    return cleaned


def _as_browsers_read(text: str) -> str:
    """What a browser makes of a URL: no control characters (tabs, newlines), no leading or trailing
    spaces, and ``\\`` read as ``/``."""
    return "".join(ch for ch in text if ch >= " " and ch != "\x7f").replace("\\", "/").strip()


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


def _remember_preferences(records, user_id: int) -> None:
    """The user's own language and time zone (their profile) for this session's pages."""
    users = records.metadata.tables["user"]
    with records.db.read() as conn:
        row = conn.execute(sa.select(users.c.language, users.c.time_zone).where(users.c.id == user_id)).first()
    if row is not None and row.language:
        session["lang"] = row.language
    if row is not None and row.time_zone:
        session["tz"] = row.time_zone


def _protective_headers(response):
    """No MIME sniffing, no framing of our pages by other sites (clickjacking), no full URLs (with
    their filters) sent to other sites as the referrer."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _bearer_authenticated() -> bool:
    """Whether the API authenticates this request by a valid bearer token (the only way a request
    escapes the CSRF check: a browser never adds a valid token by itself). Screens always go by the
    session cookie, whatever the headers say."""
    return request.path.startswith("/api/") and bearer_identity() is not None


def bearer_identity() -> Identity | None:
    """The user behind this request's valid bearer token, or None; looked up once per request (the
    CSRF check and the API's authentication both ask)."""
    if "crm_bearer" not in g:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        g.crm_bearer = (authenticate(current_app.extensions["crm"].records, token.strip())
                        if scheme.lower() == "bearer" else None)
    return g.crm_bearer


def _check_csrf():
    if request.method not in UNSAFE:
        return None
    is_form = (request.mimetype or "") in FORM_TYPES
    if not (is_form or session.get("user_id") is not None or request.endpoint == "web.login"):
        return None   # an anonymous JSON call: the API answers 401
    if _bearer_authenticated():
        return None
    if request.path.startswith("/api/") and session.get("user_id") is None:
        return None   # no session to ride on (an upload without a token): the API answers 401
    sent = request.headers.get("X-CSRF-Token") or (request.form.get("csrf_token") if is_form else None)
    expected = session.get("csrf")
    if not sent or not expected or not hmac.compare_digest(str(sent), str(expected)):
        detail = CSRF_REFUSED
        if request.path.startswith("/api/"):
            from .problem import problem

            return problem(403, "Forbidden", detail, "csrf")
        return render_template("login.html", error=detail, email="", next=None), 403
    return None


def _blueprint() -> Blueprint:
    bp = Blueprint("web", __name__)

    @bp.get("/login")
    def login_form():
        return render_template("login.html", error=None, email="", next=safe_next(request.args.get("next")))

    @bp.post("/login")
    def login_post():
        records = current_app.extensions["crm"].records
        email = request.form.get("email", "")
        user_id, error = login(records, email, request.form.get("password", ""), request.remote_addr or "")
        if user_id is None:
            status = 429 if error == THROTTLED else 401
            return render_template("login.html", error=error, email=email,
                                   next=safe_next(request.form.get("next"))), status
        lang = session.get("lang")
        session.clear()   # nothing from before the login survives it (session fixation)
        if lang:
            session["lang"] = lang
        session["user_id"] = user_id
        session["sid"] = open_session(records, user_id, ip=request.remote_addr,
                                      user_agent=request.headers.get("User-Agent"))
        session["csrf"] = secrets.token_urlsafe(32)
        session.permanent = True
        _remember_preferences(records, user_id)
        from .profile import must_change

        if must_change(records, user_id):   # a temporary password an admin set: changed first
            session["must_change"] = True
            return redirect("/ui/profile")
        return redirect(safe_next(request.form.get("next")) or "/")

    @bp.post("/logout")
    def logout():
        user_id, key = session.get("user_id"), session.get("sid")
        if isinstance(user_id, int) and isinstance(key, str):
            records = current_app.extensions["crm"].records
            end_sessions(records, user_id, key=key)
            audit(records, "logout", user_id=user_id)
        session.clear()
        return redirect("/login")

    return bp
