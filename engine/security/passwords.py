"""Password hashing with scrypt (memory-hard, in the standard library) and constant-time checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return "$".join(["scrypt", str(N), str(R), str(P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                            dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def new_password() -> str:
    return secrets.token_urlsafe(12)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def set_password(records, user_id: int, password: str) -> None:
    """Store (replace) the scrypt hash of ``user_id``'s password in ``_crm_credential``; the user's
    web sessions end (a cookie copied before the change stops working)."""
    from datetime import datetime, timezone

    from .web import end_sessions

    credentials = records.metadata.tables["_crm_credential"]
    with records.db.write() as conn:
        end_sessions(records, user_id, conn=conn)
        conn.execute(credentials.delete().where(credentials.c.user_id == user_id))
        conn.execute(credentials.insert().values(user_id=user_id, password_hash=hash_password(password),
                                                 updated_at=datetime.now(timezone.utc)))


#: The password policy: at least this many characters, not the e-mail, not one character repeated.
MIN_LENGTH = 10


def password_problem(password: str, email: str = ""):
    """Why ``password`` may not be chosen (a message, marked for translation), or None."""
    from engine.messages import Msg

    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        return Msg("must be at least {n} characters long", n=MIN_LENGTH)
    if len(password) > 200:
        return Msg("must be at most {n} characters long", n=200)
    if email and password.strip().lower() == email.strip().lower():
        return Msg("must not be your e-mail address")
    if len(set(password)) < 3:
        return Msg("is too simple: use more different characters")
    return None
