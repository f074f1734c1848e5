"""The store interface's contract, on the local store and on the S3 store.

The S3 store runs here against an in-process stand-in for boto3's client (the four calls it makes:
``upload_fileobj``, ``get_object``, ``head_object``, ``delete_object``): no S3 simulator (moto) is
installed in this environment, so the calls and keys are checked, not a real S3 protocol."""

from __future__ import annotations

import io

import pytest

from engine.files.storage import LocalStore, S3Store, make_store, new_key
from engine.settings import Settings


class NoSuchKey(Exception):
    pass


class FakeS3:
    class exceptions:
        NoSuchKey = NoSuchKey

    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}
        self.reads: list[int] = []

    def upload_fileobj(self, source, bucket, key):
        data = b""
        while chunk := source.read(8192):   # as boto3's multipart upload, in parts
            self.reads.append(len(chunk))
            data += chunk
        self.objects[(bucket, key)] = data

    def get_object(self, Bucket, Key):
        if (Bucket, Key) not in self.objects:
            raise NoSuchKey(Key)
        data = self.objects[(Bucket, Key)]

        class Body:
            closed = False

            def iter_chunks(self, size):
                for i in range(0, len(data), size):
                    yield data[i:i + size]

            def close(self):
                Body.closed = True
        return {"Body": Body()}

    def head_object(self, Bucket, Key):
        if (Bucket, Key) not in self.objects:
            raise NoSuchKey(Key)
        return {}

    def delete_object(self, Bucket, Key):
        self.objects.pop((Bucket, Key), None)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "files")
    return S3Store("crm-files", prefix="site1/", client=FakeS3())


def test_every_store_puts_streams_and_deletes_by_key(store):
    key = new_key()
    data = bytes(range(256)) * 1000
    assert store.put(key, io.BytesIO(data)) == len(data)
    assert store.exists(key) and store.get(key) == data
    chunks = list(store.stream(key))
    assert b"".join(chunks) == data and len(chunks) > 1   # in chunks, never the whole file at once
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.stream(key)
    with pytest.raises(ValueError):
        store.put("../../etc/passwd", io.BytesIO(b"x"))


def test_the_s3_store_keeps_keys_under_its_prefix():
    client = FakeS3()
    s3 = S3Store("crm-files", prefix="/site1/", client=client)
    key = new_key()
    s3.put(key, io.BytesIO(b"abc"))
    assert list(client.objects) == [("crm-files", f"site1/{key}")]


def test_the_settings_choose_the_store(tmp_path):
    local = make_store(Settings(var_dir=tmp_path))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "files"
    assert make_store(Settings(var_dir=tmp_path, files_dir=tmp_path / "x")).root == tmp_path / "x"
    with pytest.raises(RuntimeError, match="CRM_S3_BUCKET"):
        make_store(Settings(var_dir=tmp_path, files_store="s3"))
    with pytest.raises(RuntimeError, match="local or s3"):
        make_store(Settings(var_dir=tmp_path, files_store="ftp"))
