"""Shared fixtures. Every test gets its own database: a SQLite file in tmp_path, or, when
DATABASE_URL points at PostgreSQL, a schema of its own in that database (dropped afterwards)."""

from __future__ import annotations

import itertools
import os
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.runtime import Runtime
from engine.settings import ROOT, Settings

#: The base CRM has encrypted fields: a fixed test key (never a real one), also for `crm` subprocesses.
TEST_KEY = "test:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="   # base64 of 32 ASCII bytes
os.environ.setdefault("CRM_ENCRYPTION_KEYS", TEST_KEY)
BASE_URL = os.environ.get("DATABASE_URL", "")
ON_POSTGRES = BASE_URL.startswith("postgresql")
_counter = itertools.count()


@pytest.fixture
def database_url(tmp_path, worker_id):
    if not ON_POSTGRES:
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    schema = f"t_{worker_id}_{os.getpid()}_{next(_counter)}"
    admin = sa.create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in BASE_URL else "?"
    yield f"{BASE_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    admin.dispose()


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """Settings for the base CRM on this test's database, with no plugins."""
    return Settings(database_url=database_url, backup_dir=tmp_path / "backups", var_dir=tmp_path, plugin_dirs=(),
                    entry_point_plugins=False, secret_key="test")


@pytest.fixture
def make_runtime(settings, tmp_path):
    """Boot (and by default migrate) a runtime; close them all at the end of the test."""
    made: list[Runtime] = []

    def make(*, migrate: bool = True, **changes) -> Runtime:
        rt = Runtime.boot(settings.with_(**changes))
        made.append(rt)
        if migrate:
            rt.migrate()
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def crm(make_runtime) -> Runtime:
    """The base CRM, migrated, empty."""
    return make_runtime()


@pytest.fixture
def write_tree(tmp_path):
    """Write a metadata tree: ``write_tree("name", {"file.yaml": "yaml text"})`` -> folder."""

    def write(name: str, files: dict[str, str]) -> Path:
        folder = tmp_path / name
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    return write


@pytest.fixture
def config_root(tmp_path):
    """A config root whose ``base`` layer is empty, for tests that declare their own entities."""
    root = tmp_path / "industries"
    (root / "base").mkdir(parents=True)
    return root


BASE_CONFIG = ROOT / "configs" / "industries"


@pytest.fixture
def api(crm):
    """A test client of the app on the base CRM, an admin user and its bearer headers."""
    from engine.app import create_app
    from engine.security.tokens import create_token
    from engine.storage.records import Context

    user = crm.records.create("user", {"name": "Api", "email": "api@example.com", "role": "admin"},
                              context=Context(system=True))
    _, token = create_token(crm.records, user["id"], "tests")
    app = create_app(runtime=crm)
    return ApiClient(app.test_client(), {"Authorization": f"Bearer {token}"}, crm, user, token, app)


class ApiClient:
    def __init__(self, client, headers, rt, user, token, app):
        self.client, self.headers, self.rt, self.user, self.token, self.app = client, headers, rt, user, token, app

    def __getattr__(self, method):
        def call(path, headers=None, **kwargs):
            return getattr(self.client, method)(path, headers={**self.headers, **(headers or {})}, **kwargs)
        return call


@pytest.fixture
def receiver():
    """A local HTTP receiver standing in for webhooks and chat platforms (``tests.automation_kit``)."""
    from tests.automation_kit import Receiver

    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp():
    """A local SMTP server keeping the messages it receives (``tests.automation_kit.SmtpSink``)."""
    from tests.automation_kit import SmtpSink

    sink = SmtpSink()
    yield sink
    sink.close()
