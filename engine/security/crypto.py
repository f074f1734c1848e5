"""Moved: encryption at rest is a storage concern, now ``engine.storage.crypto``. This name stays so
that existing imports (``engine.cli``) keep working until they point there."""

from engine.storage.crypto import (ENV, EncryptedText, EncryptionError, KeyRing, NoKeys, check_keys,  # noqa: F401
                                   encrypted_fields, keyring, new_key_line, parse_keys, rotate, use_keys)
