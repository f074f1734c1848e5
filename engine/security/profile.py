"""What a signed-in user changes about themselves, and what an admin does for them.

- ``change_password``: needs the current password (throttled like logins: ``MAX_FAILURES`` wrong
  current passwords within ``WINDOW`` refuse further tries), obeys ``password_problem``; the user's
  other sessions end, the one that made the change is kept. Audited (``password_changed``).
- ``reset_password`` (an admin): a temporary password, shown once to the admin, that must be changed
  at the next login (``must_change``); every session of the user ends. Audited (``password_reset``).
- ``sessions_of`` / ``end_session``: the server-side sessions (``_crm_session``) of a user: opened,
  last seen, address, browser. Ending one is audited (``sessions_ended``).
- ``update_profile``: the user's own preferences, the fields ``PROFILE_FIELDS`` of the ``user``
  entity and no other (a user never changes their role or team through this door): checked here,
  written by the record service as a system write, audited (``profile_changed``).
- ``wants(records, user_id, kind, channel)``: whether a user wants notifications of ``kind``
  (``NOTIFICATION_KINDS``) by ``channel`` (``in_app``, ``email``); features ask before notifying.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa

from engine.messages import Msg
from engine.storage.errors import FieldError, ValidationFailed
from engine.storage.records import Context
from engine.storage.tables import USER_ENTITY

from .audit import audit
from .passwords import hash_password, new_password, password_problem, verify_password

#: The fields of the ``user`` entity a user may change about themselves.
PROFILE_FIELDS = ("language", "time_zone", "notify")
LANGUAGES = ("en", "zh")
CHANNELS = ("in_app", "email")
#: The notifications the engine makes, by kind: {kind: (English label, defaults per channel)}.
#: A notification record's ``automation`` column tells its kind (``approval:<name>``, ``pool:<name>``,
#: else the name of the automation whose ``notify`` action made it).
NOTIFICATION_KINDS: dict[str, tuple[str, dict[str, bool]]] = {
    "automation": ("Automation notifications", {"in_app": True, "email": False}),
    "approval": ("Approvals waiting for me and their outcome", {"in_app": True, "email": False}),
    "pool": ("Records going back to a pool", {"in_app": True, "email": False}),
    "reminder": ("Reminders of my tasks and meetings", {"in_app": True, "email": True}),
}
PASSWORD_SCOPE = "password:"   # the throttle's key in _crm_login_attempt (beside logins' e-mails)


class ProfileError(ValidationFailed):
    """A profile change refused: the field and why (a 422)."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__([FieldError(field, code, message)], USER_ENTITY)


def notification_kind(automation: str | None) -> str:
    prefix = (automation or "").partition(":")[0]
    return prefix if prefix in NOTIFICATION_KINDS and prefix != "automation" else "automation"


def preferences(notify: Any) -> dict[str, dict[str, bool]]:
    """A user's stored ``notify`` value completed with the defaults: {kind: {channel: bool}}."""
    stored = notify if isinstance(notify, dict) else {}
    out = {}
    for kind, (_label, defaults) in NOTIFICATION_KINDS.items():
        mine = stored.get(kind) if isinstance(stored.get(kind), dict) else {}
        out[kind] = {ch: bool(mine[ch]) if isinstance(mine.get(ch), bool) else defaults[ch] for ch in CHANNELS}
    return out


def wants(records, user_id: int, kind: str, channel: str = "email") -> bool:
    """Whether ``user_id`` wants notifications of ``kind`` by ``channel`` (unknown kinds: the
    automation's defaults)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    users = records.metadata.tables[USER_ENTITY]
    with records.db.read() as conn:
        notify = conn.execute(sa.select(users.c.notify).where(users.c.id == user_id)).scalar()
    return preferences(notify)[kind if kind in NOTIFICATION_KINDS else "automation"][channel]


def update_profile(records, user_id: int, values: dict) -> dict:
    """Check and store the user's own preferences; returns the stored user. Only ``PROFILE_FIELDS``."""
    other = sorted(set(values) - set(PROFILE_FIELDS))
    if other:
        raise ProfileError(other[0], "forbidden", Msg("cannot be changed on your profile"))
    clean: dict[str, Any] = {}
    if "language" in values:
        if values["language"] not in (*LANGUAGES, None, ""):
            raise ProfileError("language", "choice", Msg("{value} is not one of: {options}",
                                                          value=repr(values["language"]), options=", ".join(LANGUAGES)))
        clean["language"] = values["language"] or None
    if "time_zone" in values:
        clean["time_zone"] = check_zone(values["time_zone"])
    if "notify" in values:
        raw = values["notify"] if isinstance(values["notify"], dict) else {}
        clean["notify"] = {k: v for k, v in preferences(raw).items()}
    saved = records.update(USER_ENTITY, user_id, clean, context=Context(user_id=user_id, system=True,
                                                                        automations=False))
    audit(records, "profile_changed", user_id=user_id, entity=USER_ENTITY, record_id=user_id,
          detail={"fields": sorted(clean)})
    return saved


def check_zone(name: Any) -> str | None:
    """An IANA time zone name (``Asia/Shanghai``), or None for blank; else a ``ProfileError``."""
    if name in (None, ""):
        return None
    if not isinstance(name, str) or len(name) > 64 or name not in _zones():
        raise ProfileError("time_zone", "choice", Msg("{value} is not a time zone (e.g. Asia/Shanghai)",
                                                      value=repr(str(name)[:64])))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ProfileError("time_zone", "choice", Msg("{value} is not a time zone (e.g. Asia/Shanghai)",
                                                      value=repr(name))) from None
    return name


def zone_names() -> list[str]:
    return sorted(_zones())


_ZONES: set[str] = set()


def _zones() -> set[str]:
    if not _ZONES:
        _ZONES.update(available_timezones() | {"UTC"})
    return _ZONES


# -- passwords -----------------------------------------------------------------------------------

def change_password(records, user_id: int, current: str, new: str, *, keep_key: str | None, ip: str) -> None:
    """Change the user's own password (see the module's docstring); a ``ProfileError`` names the
    field when refused."""
    from .web import WINDOW, _attempt, _digest, throttled

    scope = f"{PASSWORD_SCOPE}{user_id}"
    if throttled(records, scope, ip):
        audit(records, "login_throttled", user_id=user_id, detail={"password_change": True}, ip=ip)
        raise ProfileError("current", "throttled", Msg("too many wrong passwords; try again in {minutes} minutes",
                                                       minutes=int(WINDOW.total_seconds() // 60)))
    users, creds = records.metadata.tables[USER_ENTITY], records.metadata.tables["_crm_credential"]
    with records.db.read() as conn:
        row = conn.execute(sa.select(users.c.email, creds.c.password_hash).join(creds, creds.c.user_id == users.c.id)
                           .where(users.c.id == user_id)).first()
    if row is None or not verify_password(current or "", row.password_hash):
        _attempt(records, scope, ip, False)
        raise ProfileError("current", "wrong", Msg("is not your current password"))
    problem = password_problem(new, row.email)
    if problem is None and verify_password(new, row.password_hash):
        problem = Msg("must differ from the current password")
    if problem is not None:
        raise ProfileError("new", "policy", problem)
    _attempt(records, scope, ip, True)
    sessions = records.metadata.tables["_crm_session"]
    with records.db.write() as conn:
        stmt = sessions.delete().where(sessions.c.user_id == user_id)
        if keep_key:
            stmt = stmt.where(sessions.c.key_hash != _digest(keep_key))
        conn.execute(stmt)
        _store(conn, creds, user_id, new, must_change=False)
        audit(records, "password_changed", user_id=user_id, entity=USER_ENTITY, record_id=user_id, ip=ip, conn=conn)


def reset_password(records, admin_id: int, user_id: int) -> str:
    """A temporary password for ``user_id`` (returned once), to change at the next login; every
    session of the user ends."""
    from .web import end_sessions

    password = new_password()
    creds = records.metadata.tables["_crm_credential"]
    with records.db.write() as conn:
        end_sessions(records, user_id, conn=conn)
        _store(conn, creds, user_id, password, must_change=True)
        audit(records, "password_reset", user_id=admin_id, entity=USER_ENTITY, record_id=user_id, conn=conn)
    return password


def must_change(records, user_id: int) -> bool:
    creds = records.metadata.tables["_crm_credential"]
    with records.db.read() as conn:
        return bool(conn.execute(sa.select(creds.c.must_change).where(creds.c.user_id == user_id)).scalar())


def _store(conn, creds, user_id: int, password: str, *, must_change: bool) -> None:
    conn.execute(creds.delete().where(creds.c.user_id == user_id))
    conn.execute(creds.insert().values(user_id=user_id, password_hash=hash_password(password),
                                       updated_at=datetime.now(timezone.utc), must_change=must_change))


# -- sessions ------------------------------------------------------------------------------------

def sessions_of(records, user_id: int, current_key: str | None = None) -> list[dict]:
    """The open sessions of ``user_id``, newest first: ``id`` (a short handle, not the key), times,
    address, browser, and whether it is the caller's own."""
    table = records.metadata.tables["_crm_session"]
    mine = _handle_of_key(current_key) if current_key else None
    with records.db.read() as conn:
        rows = conn.execute(sa.select(table).where(table.c.user_id == user_id,
                                                   table.c.expires_at > datetime.now(timezone.utc))
                            .order_by(table.c.created_at.desc())).all()
    return [{"id": r.key_hash[:16], "created_at": r.created_at, "last_seen_at": r.last_seen_at or r.created_at,
             "expires_at": r.expires_at, "ip": r.ip or "", "user_agent": r.user_agent or "",
             "current": r.key_hash[:16] == mine} for r in rows]


def end_session(records, actor_id: int, user_id: int, handle: str | None) -> int:
    """End the session ``handle`` (from ``sessions_of``) of ``user_id``, or all of them (None);
    returns how many ended."""
    table = records.metadata.tables["_crm_session"]
    stmt = table.delete().where(table.c.user_id == user_id)
    if handle is not None:
        if not handle.isalnum() or len(handle) != 16:
            return 0
        stmt = stmt.where(table.c.key_hash.startswith(handle, autoescape=True))
    with records.db.write() as conn:
        ended = conn.execute(stmt).rowcount or 0
        audit(records, "sessions_ended", user_id=actor_id, entity=USER_ENTITY, record_id=user_id,
              detail={"count": ended, "one": handle is not None}, conn=conn)
    return ended


def _handle_of_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


__all__ = ["CHANNELS", "NOTIFICATION_KINDS", "PROFILE_FIELDS", "ProfileError", "change_password", "check_zone",
           "end_session", "must_change", "notification_kind", "preferences", "reset_password", "sessions_of",
           "update_profile", "wants", "zone_names"]
