"""Faults of writes and retries: a server killed between the commit and the answer, blind writes
racing each other, and a deployment that requires ``If-Match``.

The crash tests run a real ``crm serve`` subprocess armed with a fail point (``CRM_FAILPOINTS``,
engine/failpoints.py) that exits with 137 right after the idempotent write commits, before the
answer leaves; the retry goes to a fresh server on the same database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from engine.app import create_app
from engine.failpoints import KILLED
from engine.security.tokens import create_token
from engine.settings import Settings
from engine.storage.bulk import CHUNK
from engine.storage.records import Context

from ..conftest import ApiClient
from .servers import free_port, wait_for_output

CRASH_POINT = "after_commit:idempotent-write"
BOOT_SECONDS = 90


# -- a real server, killed at a fail point --------------------------------------------------------

@pytest.fixture
def served(crm, database_url, tmp_path):
    """``start(failpoints)`` -> (base url, process): ``crm serve`` on this test's database, with an
    admin's token in ``served.headers``."""
    user = crm.records.create("user", {"name": "Retry", "email": "retry@example.com", "role": "admin"},
                              context=Context(system=True))
    _, token = create_token(crm.records, user["id"], "faults")
    procs: list[subprocess.Popen] = []

    def start(failpoints: str = "") -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": database_url, "CRM_PLUGIN_DIRS": "", "CRM_VAR_DIR": str(tmp_path),
               "CRM_BACKUP_DIR": str(tmp_path / "backups"), "SECRET_KEY": "test", "CRM_FAILPOINTS": failpoints}
        crm_command = Path(sys.executable).with_name("crm")
        proc = subprocess.Popen([str(crm_command), "serve", "--port", str(port)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        wait_for_output(proc, "Running on", BOOT_SECONDS)
        return f"http://127.0.0.1:{port}", proc

    start.headers = {"Authorization": f"Bearer {token}"}
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def _count(database_url: str, sql: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def _crash_then_retry(served, path: str, body: dict, key: str) -> httpx.Response:
    """POST with ``key`` to a server that dies after committing; then the same request to a new one."""
    headers = {**served.headers, "Idempotency-Key": key}
    base, proc = served(CRASH_POINT)
    try:
        answer = httpx.post(base + path, json=body, headers=headers, timeout=120)
        pytest.fail(f"the server answered instead of dying at the fail point: {answer.status_code} {answer.text[:500]}")
    except httpx.TransportError:   # no answer: the server died
        pass
    assert proc.wait(timeout=30) == KILLED   # it died at the fail point, not before
    base, _ = served()
    retry = httpx.post(base + path, json=body, headers=headers, timeout=120)
    assert httpx.get(base + "/health", timeout=10).json()["status"] == "ok"
    return retry


def test_a_create_killed_after_its_commit_is_answered_from_the_commit_on_retry(served, database_url):
    body = {"name": "Crash Ltd", "account_number": "CRASH-1"}
    retry = _crash_then_retry(served, "/api/v1/account", body, "crash-create-1")
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert _count(database_url, "SELECT COUNT(*) FROM account") == 1
    stored = _count(database_url, "SELECT id FROM account")
    assert retry.json()["id"] == stored and retry.headers["Location"] == f"/api/v1/account/{stored}"


def test_a_bulk_killed_after_its_commit_writes_once(served, database_url):
    rows = [{"name": f"Bulk {i}", "account_number": f"BULK-{i}"} for i in range(500)]
    retry = _crash_then_retry(served, "/api/v1/account/_bulk", {"records": rows}, "crash-bulk-1")
    assert retry.status_code == 200, retry.text[:2000]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["counts"] == {"created": 500}
    assert _count(database_url, "SELECT COUNT(*) FROM account") == 500
    ids = sorted(item["id"] for item in retry.json()["items"])
    assert ids[0] == _count(database_url, "SELECT MIN(id) FROM account")
    assert ids[-1] == _count(database_url, "SELECT MAX(id) FROM account")


def test_concurrent_duplicates_of_one_idempotent_create_write_once_and_share_its_answer(api):
    """Five clients send the same request with the same key at once: one writes, the others wait
    for it and get its answer (not a 409, not a second record)."""
    clients, start = 5, threading.Barrier(5)
    answers: list = []

    def client() -> None:
        test_client = api.app.test_client()
        start.wait()
        answers.append(test_client.post("/api/v1/account", json={"name": "Once Ltd"},
                                        headers={**api.headers, "Idempotency-Key": "same-key"}))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201] * clients, [a.get_data(as_text=True) for a in answers]
    assert len({a.json["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == clients - 1
    assert len(api.rt.records.query("account")) == 1


@pytest.mark.parametrize("bad", [{"name": None}, {"name": "Taken", "account_number": "TAKEN-1"}],
                         ids=["refused-item", "unique-violation"])
def test_a_refused_idempotent_bulk_writes_nothing_and_replays_its_refusal(api, bad):
    """The write runs inside the key's transaction: a refused atomic bulk (an invalid item, or a
    unique value the database refuses) must undo its own rows there, not commit them with the key.
    The bad item comes after a whole chunk (``CHUNK`` rows), which is written before it is seen."""
    assert api.post("/api/v1/account", json={"name": "Holder", "account_number": "TAKEN-1"}).status_code == 201
    rows = [{"name": f"Fine {i}", "account_number": f"FINE-{i}"} for i in range(CHUNK)] + [bad]
    headers = {"Idempotency-Key": f"refused-{list(bad)[-1]}"}
    first = api.post("/api/v1/account/_bulk", json={"records": rows}, headers=headers)
    assert first.status_code == 422, first.get_data(as_text=True)
    again = api.post("/api/v1/account/_bulk", json={"records": rows}, headers=headers)
    assert again.status_code == 422 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert [r["name"] for r in api.rt.records.query("account")] == ["Holder"]


# -- blind writes racing each other ---------------------------------------------------------------

def test_concurrent_patches_without_if_match_all_apply_and_none_is_refused(api):
    """20 clients PATCH one record at once with no precondition: no 412 (a version nobody sent),
    and every write is applied: the version rose once per write, each left its history row."""
    made = api.post("/api/v1/account", json={"name": "Contended Ltd"})
    assert made.status_code == 201
    record_id, clients, rounds = made.json["id"], 20, 5
    start = threading.Barrier(clients)
    answers: list[tuple[int, str]] = []

    def writer(n: int) -> None:
        client = api.app.test_client()
        start.wait()
        for r in range(rounds):
            answer = client.patch(f"/api/v1/account/{record_id}", json={"name": f"Writer {n} round {r}"},
                                  headers=api.headers)
            answers.append((answer.status_code, answer.get_data(as_text=True)))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [a for a in answers if a[0] != 200]
    assert not refused, f"{len(refused)} of {len(answers)} blind writes refused, e.g. {refused[0]}"
    record = api.get(f"/api/v1/account/{record_id}").json
    assert record["version"] == 1 + clients * rounds
    history = api.get(f"/api/v1/account/{record_id}/history").json["data"]
    assert len([h for h in history if h["field"] == "name"]) == clients * rounds


def test_a_stale_if_match_still_answers_412_and_writes_nothing(api):
    made = api.post("/api/v1/account", json={"name": "Careful Ltd"})
    etag = made.headers["ETag"]
    assert api.patch(f"/api/v1/account/{made.json['id']}", json={"name": "First"},
                     headers={"If-Match": etag}).status_code == 200
    stale = api.patch(f"/api/v1/account/{made.json['id']}", json={"name": "Second"}, headers={"If-Match": etag})
    assert stale.status_code == 412 and stale.json["current_version"] == 2
    assert stale.headers["Content-Type"] == "application/problem+json"
    assert api.get(f"/api/v1/account/{made.json['id']}").json["name"] == "First"


# -- a deployment that requires If-Match ----------------------------------------------------------

@pytest.fixture
def careful_api(make_runtime):
    """The API of a deployment with CRM_REQUIRE_IF_MATCH on, and an admin's token."""
    rt = make_runtime(require_if_match=True)
    user = rt.records.create("user", {"name": "Careful", "email": "careful@example.com", "role": "admin"},
                             context=Context(system=True))
    _, token = create_token(rt.records, user["id"], "faults")
    app = create_app(runtime=rt)
    return ApiClient(app.test_client(), {"Authorization": f"Bearer {token}"}, rt, user, token, app)


def test_the_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CRM_REQUIRE_IF_MATCH", "true")
    assert Settings.from_env().require_if_match
    monkeypatch.delenv("CRM_REQUIRE_IF_MATCH")
    assert not Settings.from_env().require_if_match


@pytest.mark.parametrize("if_match", [None, "*"])
def test_required_if_match_missing_is_428_naming_it_and_nothing_changes(careful_api, if_match):
    api = careful_api
    made = api.post("/api/v1/account", json={"name": "Strict Ltd"})
    record_id = made.json["id"]
    headers = {} if if_match is None else {"If-Match": if_match}
    for answer in (api.patch(f"/api/v1/account/{record_id}", json={"name": "Blind"}, headers=headers),
                   api.delete(f"/api/v1/account/{record_id}", headers=headers)):
        assert answer.status_code == 428, answer.get_data(as_text=True)
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert answer.json["type"].endswith("/precondition-required")
        assert "If-Match" in answer.json["detail"]
        assert [e["field"] for e in answer.json["errors"]] == ["If-Match"]
    kept = api.get(f"/api/v1/account/{record_id}")
    assert kept.status_code == 200 and kept.json["name"] == "Strict Ltd" and kept.json["version"] == 1
    assert api.get("/health").json["status"] == "ok"


def test_required_if_match_present_lets_the_write_through(careful_api):
    api = careful_api
    made = api.post("/api/v1/account", json={"name": "Strict Ltd"})   # a create needs no If-Match
    assert made.status_code == 201
    path = f"/api/v1/account/{made.json['id']}"
    changed = api.patch(path, json={"name": "Checked"}, headers={"If-Match": made.headers["ETag"]})
    assert changed.status_code == 200 and changed.json["name"] == "Checked"
    stale = api.delete(path, headers={"If-Match": made.headers["ETag"]})
    assert stale.status_code == 412
    assert api.delete(path, headers={"If-Match": changed.headers["ETag"]}).status_code == 204
    assert api.get(path).status_code == 404


# -- work after the commit ------------------------------------------------------------------------

class _FailsAfterCommit:
    """A plugin whose after-commit hook always raises, and a record of the hooks that ran."""

    def __init__(self):
        self.ran: list[str] = []

    from engine.plugins import hookimpl

    @hookimpl(tryfirst=True)
    def crm_after_commit(self, event, entity, record, context):
        self.ran.append(event)
        raise RuntimeError("the after-commit hook is down")


def test_work_that_fails_after_the_commit_never_turns_the_committed_write_into_a_500(api, caplog):
    plugin = _FailsAfterCommit()
    api.rt.pm.register(plugin)
    before = len(api.rt.records.query("account"))
    created = api.post("/api/v1/account", json={"name": "Committed"})
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.json["name"] == "Committed"
    assert len(api.rt.records.query("account")) == before + 1
    changed = api.patch(f"/api/v1/account/{created.json['id']}", json={"name": "Still committed"})
    assert changed.status_code == 200
    assert plugin.ran == ["create", "update"]
    assert "the write stands" in caplog.text
    assert api.get("/api/v1/account").status_code == 200
