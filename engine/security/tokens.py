"""API tokens: shown once, stored as a SHA-256 hash (they are random, so a fast hash is enough),
revocable, with an optional expiry. Sent as ``Authorization: Bearer <token>``."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache

import sqlalchemy as sa

PREFIX = "crm_"


@dataclass(frozen=True)
class Identity:
    """Who is calling: the user's id and the fields permissions will need."""

    user_id: int
    email: str
    role: str | None
    token_id: int | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(records, user_id: int, name: str, *, days: int | None = None) -> tuple[int, str]:
    """A new token for ``user_id``; returns (token id, the token text, shown only now)."""
    token = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    table = records.metadata.tables["_crm_token"]
    with records.db.write() as conn:
        token_id = conn.execute(table.insert().values(
            user_id=user_id, name=name, token_hash=hash_token(token), created_at=now,
            expires_at=now + timedelta(days=days) if days else None).returning(table.c.id)).scalar_one()
    return token_id, token


def revoke_token(records, token_id: int) -> bool:
    table = records.metadata.tables["_crm_token"]
    with records.db.write() as conn:
        done = conn.execute(table.update().where(table.c.id == token_id, table.c.revoked_at.is_(None))
                            .values(revoked_at=datetime.now(timezone.utc)))
    return done.rowcount == 1


@lru_cache(maxsize=8)
def _lookup(metadata: sa.MetaData) -> sa.Select:
    """The token lookup, built once per model (every API request runs it)."""
    tokens, users = metadata.tables["_crm_token"], metadata.tables["user"]
    return (sa.select(tokens.c.id, tokens.c.expires_at, users.c.id.label("user_id"), users.c.email, users.c.role,
                      users.c.active)
            .join(users, users.c.id == tokens.c.user_id)
            .where(tokens.c.token_hash == sa.bindparam("digest"), tokens.c.revoked_at.is_(None)))


def authenticate(records, token: str) -> Identity | None:
    """The active user behind a valid, unexpired, unrevoked token; None otherwise."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with records.db.read() as conn:
        row = conn.execute(_lookup(records.metadata), {"digest": hash_token(token)}).first()
    if row is None or row.active is False:
        return None
    if row.expires_at is not None and row.expires_at <= datetime.now(timezone.utc):
        return None
    return Identity(row.user_id, row.email, row.role, row.id)
