"""Encryption at rest of fields marked ``encrypted: true``: AES-256-GCM (``cryptography``).

Keys come from the environment only: ``CRM_ENCRYPTION_KEYS`` is a comma-separated list of
``<key id>:<base64 of 32 bytes>``, newest first. Values are written with the newest key and read
with whichever key their envelope names, so a new key can be put in front at any time and
``crm keys rotate`` then re-encrypts the stored values with it; an old key may be removed once
rotation has run. A stored value is the envelope ``v1:<key id>:<base64(nonce + ciphertext+tag)>``;
the table and column are bound into it as associated data, so a value copied into another column
does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV = "CRM_ENCRYPTION_KEYS"
VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class EncryptionError(RuntimeError):
    """No usable key, or a stored value that does not decrypt (never shown to API users)."""


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[tuple[str, bytes], ...]   # (id, key), newest first

    @property
    def current(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: str, aad: str) -> str:
        kid, key = self.keys[0]
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), aad.encode())
        return f"{VERSION}:{kid}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, envelope: str, aad: str) -> str:
        version, kid, data = envelope_parts(envelope)
        key = dict(self.keys).get(kid)
        if key is None:
            raise EncryptionError(f"a value of {aad} is encrypted with key {kid!r}, which {ENV} does not hold")
        raw = base64.b64decode(data)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], aad.encode()).decode("utf-8")
        except InvalidTag:
            raise EncryptionError(f"a value of {aad} does not decrypt with key {kid!r} (wrong key or tampered)") from None


def envelope_parts(envelope: str) -> tuple[str, str, str]:
    parts = envelope.split(":", 2)
    if len(parts) != 3 or parts[0] != VERSION:
        raise EncryptionError("a stored value is not an encryption envelope (v1:<key id>:<data>)")
    return parts[0], parts[1], parts[2]


def keyring() -> KeyRing:
    """The keys of ``CRM_ENCRYPTION_KEYS`` (read on every call, parsed once per value)."""
    return parse_keys(os.environ.get(ENV, ""))


@lru_cache(maxsize=8)
def parse_keys(text: str) -> KeyRing:
    keys = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        kid, sep, b64 = item.partition(":")
        if not sep or not _KEY_ID.match(kid):
            raise EncryptionError(f"{ENV}: each key is <key id>:<base64 key>, the id of letters, digits, _ . -")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionError(f"{ENV}: key {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise EncryptionError(f"{ENV}: key {kid!r} must be 32 bytes (AES-256), it is {len(key)}")
        if kid in dict(keys):
            raise EncryptionError(f"{ENV}: key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise EncryptionError(f"fields are marked encrypted but {ENV} is not set; generate a key with "
                              f"`crm keys generate` and set {ENV}=<that line> (see docs/security.md)")
    return KeyRing(tuple(keys))


def new_key_line(kid: str | None = None) -> str:
    """A fresh ``<id>:<base64 key>`` for ``CRM_ENCRYPTION_KEYS``."""
    from datetime import datetime, timezone

    kid = kid or datetime.now(timezone.utc).strftime("k%Y%m%d%H%M%S")
    return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"


class EncryptedText(sa.types.TypeDecorator):
    """A text column whose values are encrypted on the way in and decrypted on the way out."""

    impl = sa.Text
    cache_ok = True

    def __init__(self, aad: str):
        super().__init__()
        self.aad = aad

    def process_bind_param(self, value, dialect):
        return None if value is None else keyring().encrypt(str(value), self.aad)

    def process_result_value(self, value, dialect):
        return None if value is None else keyring().decrypt(value, self.aad)


def encrypted_fields(model) -> list[tuple[str, str]]:
    """(entity, field) of every encrypted field of the model."""
    return [(e.name, f.name) for e in model.entities.values() for f in e.fields.values() if f.prop("encrypted")]


def rotate(records, batch: int = 500) -> int:
    """Re-encrypt with the newest key every stored value written with an older one, ``batch`` rows
    per transaction; returns how many values changed. Safe to run again (or after an interruption)."""
    ring = keyring()
    changed = 0
    for entity, name in encrypted_fields(records.model):
        table = records.table(entity)
        raw = sa.type_coerce(table.c[name], sa.Text())
        last = 0
        while True:
            with records.db.write() as conn:
                rows = conn.execute(sa.select(table.c.id, raw.label("v")).where(table.c.id > last, raw.is_not(None))
                                    .order_by(table.c.id).limit(batch)).all()
                for row in rows:
                    if envelope_parts(row.v)[1] != ring.current:
                        plain = ring.decrypt(row.v, table.c[name].type.aad)
                        conn.execute(table.update().where(table.c.id == row.id).values({name: plain}))
                        changed += 1
            if len(rows) < batch:
                break
            last = rows[-1].id
    return changed
