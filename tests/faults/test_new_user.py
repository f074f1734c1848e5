"""Traps for a new user: the path from a fresh clone through `make run` to the other `crm` commands.

A fresh clone, `crm up` (what `make run` runs) on a free port until it prints the login, then the
commands a user types next in the same shell, with nothing exported by hand: the development key
that `crm up` made must be found by every command. Also: a key that cannot read the stored values is
refused at start naming the missing key id, `crm up` over an existing database keeps the admin's
password, and a taken port is a clear message and exit status before anything is done.

The commands run as real subprocesses (`python -m engine.cli`, i.e. the `crm` script) with the test
venv's interpreter: installing a venv per test would cost a minute. In the clone, the clone's own
`engine/` is imported (the working directory comes first on `sys.path`), so HEAD's code is what runs.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import queue
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.settings import ROOT

from ..conftest import ON_POSTGRES, TEST_KEY
from .servers import free_port

UP_DEADLINE = 120   # seconds for `crm up` to print its login and listen (2 shared cores)


def _user_env(**extra: str) -> dict[str, str]:
    """The user's shell: this environment without the engine's settings (conftest exports a test key)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRM_") and k not in ("DATABASE_URL", "SECRET_KEY", "REDIS_URL", "PYTHONPATH")}
    env.update(extra)
    return env


def _crm(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


class Server:
    """`crm up` in the background: its merged output is read line by line in a thread."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int):
        self.port = port
        self.proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "up", "--records", "3", "--port", str(port)],
                                     cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.output = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text: str) -> str:
        """Output until ``text`` appears (an event: a printed line), the process ends, or the deadline."""
        deadline = time.monotonic() + UP_DEADLINE
        while text not in self.output and time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.output += line
        return self.output

    def ready(self) -> str:
        """Output once the server listens (werkzeug prints `Running on` after binding)."""
        out = self.wait_for(f"Running on http://127.0.0.1:{self.port}")
        assert f"Running on http://127.0.0.1:{self.port}" in out, out
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _get(port: int, path: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _signs_in(port: int, email: str, password: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"http://127.0.0.1:{port}/login", timeout=10).read().decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"email": email, "password": password, "csrf_token": csrf}).encode()
    try:
        page = opener.open(f"http://127.0.0.1:{port}/login", data=data, timeout=10).read().decode()
    except urllib.error.HTTPError:
        return False
    return "Welcome," in page


def _password(output: str) -> str:
    found = re.search(r"Admin login: \S+  password: (\S+)", output)
    assert found, output
    return found.group(1)


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh clone of the repository's HEAD: no var/, no key, nothing left by earlier runs."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, capture_output=True, timeout=120)
    return target


def _db_env(database_url: str) -> dict[str, str]:
    """SQLite: the default (var/crm.db of the clone), as a new user has it; PostgreSQL: this test's schema."""
    return {"DATABASE_URL": database_url} if ON_POSTGRES else {}


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_new_users_path_from_a_fresh_clone(clone, database_url):
    """`make run`, then `crm user list`, `crm migrate --dry-run` and `crm token create` in the same shell."""
    env = _user_env(**_db_env(database_url))
    assert not (clone / "var").exists()
    port = free_port()
    server = Server(clone, env, port)
    try:
        out = server.ready()
        assert "Web UI: http://127.0.0.1:%d/" % port in out
        password = _password(out)
        api_token = re.search(r"API token:\s+(\S+)", out).group(1)
        key_file = clone / "var" / "dev_encryption_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert _signs_in(port, "admin@example.com", password)
        status, body = _get(port, "/api/v1/account?limit=3", api_token)   # encrypted values decrypt
        assert status == 200 and body, body
    finally:
        server.stop()

    listed = _crm(["user", "list"], clone, env)
    assert listed.returncode == 0, listed.stderr
    assert "admin@example.com" in listed.stdout
    dry = _crm(["migrate", "--dry-run"], clone, env)
    assert dry.returncode == 0, dry.stderr
    assert "nothing to change" in dry.stdout
    made = _crm(["token", "create", "--email", "admin@example.com", "--name", "scripts"], clone, env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("crm_")
    assert "Traceback" not in listed.stderr + dry.stderr + made.stderr

    # the server started again in that shell reads the records with the new token and the same key
    server = Server(clone, env, port)
    try:
        out = server.ready()
        assert _password(out) == password
        status, body = _get(port, "/api/v1/account?limit=3", token)
        assert status == 200 and body, body
    finally:
        server.stop()


def test_make_run_takes_a_port_and_installs_without_the_test_extras(clone):
    """`make -n` prints what `make run PORT=5001` and `make test` would do, running nothing."""
    run = subprocess.run(["make", "-n", "run", "PORT=5001"], cwd=clone, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert re.search(r"crm up .*--port 5001", run.stdout), run.stdout
    installs = [line for line in run.stdout.splitlines() if "pip install" in line and "-e" in line]
    assert installs and not any("[test]" in line for line in installs), run.stdout
    test = subprocess.run(["make", "-n", "test"], cwd=clone, capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stderr
    assert any("pip install" in line and "[test]" in line for line in test.stdout.splitlines()), test.stdout


def _other_key(kid: str) -> str:
    return f"{kid}:{base64.b64encode(bytes(range(32))).decode()}"


@pytest.mark.parametrize("keys, says", [
    (_other_key("other"), "'test'"),                  # the key that wrote the values is not given
    (_other_key("test"), "does not decrypt with key 'test'"),   # same id, other bytes
    (None, "'test'"),                                 # no key at all: name the key the values need
])
def test_a_key_that_cannot_read_the_stored_values_is_refused_at_start(make_runtime, settings, tmp_path, keys, says):
    from engine.demo import seed
    from engine.storage.crypto import encrypted_fields

    rt = make_runtime()
    seed(rt.records, 2)
    entity, name = encrypted_fields(rt.model)[0]
    with rt.db.read() as conn:
        stored = conn.execute(sa.text(f'SELECT "{name}" FROM "{rt.records.table(entity).name}" '
                                      f'WHERE "{name}" IS NOT NULL')).scalars().all()
    assert stored and all(v.startswith("v1:test:") for v in stored)
    env = _user_env(DATABASE_URL=settings.database_url, CRM_PLUGIN_DIRS="", CRM_VAR_DIR=str(tmp_path / "empty_var"),
                    CRM_BACKUP_DIR=str(tmp_path / "backups"), **({"CRM_ENCRYPTION_KEYS": keys} if keys else {}))
    for args in (["user", "list"], ["migrate", "--dry-run"]):
        refused = _crm(args, tmp_path, env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.startswith("Cannot start:"), refused.stderr
        assert says in refused.stderr and f"{entity}.{name}" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    ok = _crm(["user", "list"], tmp_path, {**env, "CRM_ENCRYPTION_KEYS": f"{_other_key('new')},{TEST_KEY}"})
    assert ok.returncode == 0, ok.stderr    # the right key, behind a newer one, is accepted


def test_crm_up_with_a_new_var_dir_over_values_of_another_key_stops_and_leaves_no_key(make_runtime, settings,
                                                                                       tmp_path):
    """The development key that `crm up` would make in a new CRM_VAR_DIR cannot read the values of the
    old one: it stops before serving, names the key the values need, and removes the key it made."""
    from engine.demo import seed

    seed(make_runtime().records, 2)
    var = tmp_path / "new_var"
    env = _user_env(DATABASE_URL=settings.database_url, CRM_PLUGIN_DIRS="", CRM_VAR_DIR=str(var),
                    CRM_BACKUP_DIR=str(tmp_path / "backups"))
    result = _crm(["up", "--records", "3", "--port", str(free_port())], tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Cannot start:" in result.stderr and "'test'" in result.stderr, result.stderr
    assert "Web UI" not in result.stdout and "Traceback" not in result.stderr
    assert not (var / "dev_encryption_key").exists()


def test_crm_up_over_an_existing_database_keeps_the_admins_password(tmp_path, database_url):
    """A second `crm up` with a new CRM_VAR_DIR (no admin_login.txt) over the same database."""
    common = dict(DATABASE_URL=database_url, CRM_PLUGIN_DIRS="", CRM_ENCRYPTION_KEYS=TEST_KEY,
                  CRM_BACKUP_DIR=str(tmp_path / "backups"))
    port = free_port()
    first = Server(tmp_path, _user_env(CRM_VAR_DIR=str(tmp_path / "var1"), **common), port)
    try:
        password = _password(first.ready())
    finally:
        first.stop()
    env2 = _user_env(CRM_VAR_DIR=str(tmp_path / "var2"), **common)
    second = Server(tmp_path, env2, port)
    try:
        out = second.ready()
        assert "password: " not in out, out
        assert "crm admin --reset-password" in out
        assert _signs_in(port, "admin@example.com", password)
    finally:
        second.stop()
    # resetting is explicit, and prints the new password once
    reset = _crm(["admin", "--reset-password"], tmp_path, env2)
    assert reset.returncode == 0, reset.stderr
    new = _password(reset.stdout)
    assert new != password
    third = Server(tmp_path, env2, port)
    try:
        third.ready()
        assert _signs_in(port, "admin@example.com", new)
        assert not _signs_in(port, "admin@example.com", password)
    finally:
        third.stop()


@pytest.mark.parametrize("how", ["--port", "CRM_PORT"])
def test_a_taken_port_is_a_clear_message_before_anything_is_done(tmp_path, database_url, how):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = _user_env(DATABASE_URL=database_url, CRM_PLUGIN_DIRS="", CRM_ENCRYPTION_KEYS=TEST_KEY,
                        CRM_VAR_DIR=str(tmp_path / "var"), CRM_BACKUP_DIR=str(tmp_path / "backups"))
        args = ["up", "--records", "3"]
        if how == "--port":
            args += ["--port", str(port)]
        else:
            env["CRM_PORT"] = str(port)
        result = _crm(args, tmp_path, env, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {port}" in result.stderr and "in use" in result.stderr, result.stderr
    assert "PORT=" in result.stderr     # says how to choose another
    assert "http://" not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert _tables(database_url) == []   # nothing migrated, seeded or created


@pytest.mark.parametrize("url", ["postgresql+psycopg://crm:s3cret@127.0.0.1:{port}/crm", "sqlite:///{missing}/crm.db"])
def test_a_database_that_cannot_be_reached_is_one_line_naming_it_not_a_traceback(url, tmp_path):
    url = url.format(port=free_port(), missing=tmp_path / "no" / "such" / "folder")
    result = _crm(["user", "list"], tmp_path, _user_env(DATABASE_URL=url, CRM_ENCRYPTION_KEYS=TEST_KEY))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Database error (") and "s3cret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
