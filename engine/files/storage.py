"""Where the bytes of files live: a ``Store`` puts, streams and deletes them by key.

Keys are random (``new_key``), never a name a user typed, so no upload can name a path. ``LocalStore``
keeps them in a folder (``CRM_FILES_DIR``, by default ``$CRM_VAR_DIR/files``): one server, or several
sharing that folder. ``S3Store`` keeps them in an S3-compatible bucket (AWS S3, MinIO, Ceph...) for
several servers; it needs ``boto3`` (``pip install 'crm-engine[s3]'``), and reads its credentials the
way boto3 does (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` in the environment, an instance role).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

CHUNK = 64 * 1024
_KEY = re.compile(r"^[a-z0-9]{2}/[a-z0-9]{30,64}$")


def new_key() -> str:
    """A random key (``ab/abcdef...``): 160 bits, spread over 1296 folders."""
    token = secrets.token_hex(20)
    return f"{token[:2]}/{token}"


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"not a file key: {key!r}")
    return key


class Store(Protocol):
    """What every store does; ``stream`` yields chunks (never the whole file at once)."""

    def put(self, key: str, source: BinaryIO) -> int: ...

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class LocalStore:
    """Files in a folder: ``<root>/<key>``; written to a temporary name and renamed, so a reader never
    sees half a file."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        size = 0
        try:
            with open(part, "wb") as out:
                while chunk := source.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            os.replace(part, path)
        finally:
            if part.exists():
                part.unlink()
        return size

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def stream(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        handle = open(path, "rb")

        def chunks():
            with handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        return chunks()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)   # deleting twice is not an error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def clear(self) -> None:   # tests
        shutil.rmtree(self.root, ignore_errors=True)


class S3Store:
    """Files in an S3-compatible bucket (``CRM_S3_BUCKET``, ``CRM_S3_ENDPOINT_URL`` for MinIO and the
    like, ``CRM_S3_REGION``, ``CRM_S3_PREFIX``). Uploads go as multipart uploads in chunks
    (``upload_fileobj``); downloads stream the body."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None, region: str | None = None,
                 prefix: str = "", client=None):
        if client is None:
            try:
                import boto3
            except ImportError:
                raise RuntimeError("CRM_FILES_STORE=s3 needs boto3: pip install 'crm-engine[s3]'") from None
            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def _name(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: BinaryIO) -> int:
        counted = _Counting(source)
        self.client.upload_fileobj(counted, self.bucket, self._name(key))
        return counted.size

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(key) from None

        def chunks():
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()
        return chunks()

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception:   # botocore's ClientError (404) without importing botocore here
            return False
        return True


class _Counting:
    def __init__(self, source: BinaryIO):
        self.source, self.size = source, 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.source.read(n)
        self.size += len(chunk)
        return chunk


def make_store(settings) -> Store:
    """The store the settings name (``CRM_FILES_STORE``: ``local``, the default, or ``s3``)."""
    kind = (settings.files_store or "local").lower()
    if kind == "local":
        return LocalStore(Path(settings.files_dir) if settings.files_dir else Path(settings.var_dir) / "files")
    if kind == "s3":
        if not settings.s3_bucket:
            raise RuntimeError("CRM_FILES_STORE=s3 needs CRM_S3_BUCKET")
        return S3Store(settings.s3_bucket, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region,
                       prefix=settings.s3_prefix)
    raise RuntimeError(f"CRM_FILES_STORE must be local or s3, not {kind!r}")
