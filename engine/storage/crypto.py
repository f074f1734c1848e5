"""Encryption at rest of fields marked ``encrypted: true``: AES-256-GCM (``cryptography``).

Keys are a comma-separated list of ``<key id>:<base64 of 32 bytes>``, newest first: from
``CRM_ENCRYPTION_KEYS``, or, when the environment has none, from the development key file that
``crm up`` keeps under ``CRM_VAR_DIR`` (``Settings`` finds them; ``Runtime.boot`` installs them with
``use_keys``). Values are written with the newest key and read with whichever key their envelope
names, so a new key can be put in front at any time and ``crm keys rotate`` then re-encrypts the
stored values with it; an old key may be removed once rotation has run. A stored value is the
envelope ``v1:<key id>:<base64(nonce + ciphertext+tag)>``; the table and column are bound into it as
associated data, so a value copied into another column does not decrypt. ``check_keys`` refuses at
start keys that cannot read a sample of the stored values, naming the key they need.
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

from engine.settings import DEV_KEY_FILE, KEYS_ENV as ENV

VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_installed: tuple[str, str] = ("", "")   # (keys, where from) given by the booted runtime's settings


class EncryptionError(RuntimeError):
    """No usable key, or a stored value that does not decrypt (never shown to API users)."""


class NoKeys(EncryptionError):
    """Neither CRM_ENCRYPTION_KEYS nor a development key file holds a key."""


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[tuple[str, bytes], ...]   # (id, key), newest first
    source: str = ENV                     # where the keys were found, for messages

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
            raise EncryptionError(f"a value of {aad} is encrypted with key {kid!r}, which the keys in use "
                                  f"(from {self.source}) do not hold")
        raw = base64.b64decode(data)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], aad.encode()).decode("utf-8")
        except InvalidTag:
            raise EncryptionError(f"a value of {aad} does not decrypt with key {kid!r} from {self.source} "
                                  "(another key with that id, or a tampered value)") from None


def envelope_parts(envelope: str) -> tuple[str, str, str]:
    parts = envelope.split(":", 2)
    if len(parts) != 3 or parts[0] != VERSION:
        raise EncryptionError("a stored value is not an encryption envelope (v1:<key id>:<data>)")
    return parts[0], parts[1], parts[2]


def use_keys(keys: str, source: str = "") -> None:
    """Install the keys the settings found (``Runtime.boot``); empty: ``CRM_ENCRYPTION_KEYS`` is read."""
    global _installed
    _installed = (keys or "", source or ENV)


def keyring() -> KeyRing:
    """The installed keys, else those of ``CRM_ENCRYPTION_KEYS`` (read on every call, parsed once per value)."""
    if _installed[0]:
        return parse_keys(*_installed)
    return parse_keys(os.environ.get(ENV, ""), ENV)


@lru_cache(maxsize=8)
def parse_keys(text: str, source: str = ENV) -> KeyRing:
    keys = []
    for item in (p.strip() for p in text.split(",") if p.strip()):
        kid, sep, b64 = item.partition(":")
        if not sep or not _KEY_ID.match(kid):
            raise EncryptionError(f"{source}: each key is <key id>:<base64 key>, the id of letters, digits, _ . -")
        try:
            key = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionError(f"{source}: key {kid!r} is not valid base64") from None
        if len(key) != 32:
            raise EncryptionError(f"{source}: key {kid!r} must be 32 bytes (AES-256), it is {len(key)}")
        if kid in dict(keys):
            raise EncryptionError(f"{source}: key id {kid!r} appears twice")
        keys.append((kid, key))
    if not keys:
        raise NoKeys(f"fields are marked encrypted but {ENV} is not set and there is no development "
                              f"key ($CRM_VAR_DIR/{DEV_KEY_FILE}, made by `crm up`): set {ENV} (a new key: "
                              "`crm keys generate`), or on a laptop run `crm up` once, whose key every `crm` "
                              "command then finds (see docs/security.md)")
    return KeyRing(tuple(keys), source)


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


def check_keys(records) -> None:
    """Refuse keys that cannot read what is stored, at start: for every encrypted field, its first and
    last stored value (by id, two indexed reads) must name a key the ring holds and decrypt with it.
    Raises ``EncryptionError`` naming the field and the key id the values need; tables or columns
    that no migration has made yet are skipped, and so is the whole check while the database cannot
    be reached (boot then goes on as without encrypted fields; the first query reports the outage)."""
    try:
        samples = _stored_samples(records)
    except sa.exc.DBAPIError:
        samples = []
    try:
        ring = keyring()
    except NoKeys:
        if not samples:
            raise
        where, _aad, envelope = samples[0]
        kid = _key_id(where, envelope)
        raise EncryptionError(f"{where} holds values encrypted with key {kid!r}, but {ENV} is not set and there is "
                              f"no development key ($CRM_VAR_DIR/{DEV_KEY_FILE}). Set {ENV} to a list holding key "
                              f"{kid!r}: only that key reads those values, a new one cannot (a key that `crm up` "
                              f"made is the line of {DEV_KEY_FILE} in the CRM_VAR_DIR it ran with)") from None
    held = dict(ring.keys)
    for where, aad, envelope in samples:
        kid = _key_id(where, envelope)
        if kid not in held:
            raise EncryptionError(f"{where} holds values encrypted with key {kid!r}, which the keys in use "
                                  f"(from {ring.source}: {', '.join(held)}) do not include. Put key {kid!r} in "
                                  f"{ENV} (newest key first); a new key cannot read values written with another "
                                  "(see docs/security.md)")
        try:
            ring.decrypt(envelope, aad)
        except EncryptionError:
            raise EncryptionError(f"a value of {where} does not decrypt with key {kid!r} from {ring.source}: that "
                                  f"is another key with the same id. Set {ENV} to the key {kid!r} that wrote "
                                  "the values (see docs/security.md)") from None


def _key_id(where: str, envelope: str) -> str:
    try:
        return envelope_parts(envelope)[1]
    except EncryptionError as exc:
        raise EncryptionError(f"{where}: {exc}") from None


def _stored_samples(records) -> list[tuple[str, str, str]]:
    """(entity.field, associated data, envelope) of the first and last stored value of each encrypted field."""
    samples = []
    with records.db.read() as conn:
        inspector = sa.inspect(conn)
        for entity, name in encrypted_fields(records.model):
            table = records.table(entity)
            if not inspector.has_table(table.name, schema=table.schema):
                continue
            if name not in {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}:
                continue
            raw = sa.type_coerce(table.c[name], sa.Text())
            for order in (table.c.id.asc(), table.c.id.desc()):
                value = conn.execute(sa.select(raw).where(raw.is_not(None)).order_by(order).limit(1)).scalar()
                if value is not None:
                    samples.append((f"{entity}.{name}", table.c[name].type.aad, value))
    return samples


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
