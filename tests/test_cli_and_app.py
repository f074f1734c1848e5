"""The `crm` command and the server that `make run` starts."""

from __future__ import annotations

import http.cookiejar
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from engine.app import create_app
from engine.cli import main
from engine.demo import seed

from .conftest import BASE_CONFIG
from .test_metadata import BROKEN


def env_for(settings, **extra) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "CRM_BACKUP_DIR": str(settings.backup_dir),
            "CRM_PLUGIN_DIRS": "", **extra}


def test_validate_passes_on_the_base_crm_and_each_industry(settings):
    runner = CliRunner()
    for industry in ("base", "real_estate"):
        result = runner.invoke(main, ["validate"], env=env_for(settings, CRM_INDUSTRY=industry))
        assert result.exit_code == 0, result.output
        assert result.output.startswith("OK: ") and " entities, " in result.output
    result = runner.invoke(main, ["validate", str(BASE_CONFIG / "real_estate")], env=env_for(settings))
    assert result.exit_code == 0 and "industry:real_estate" in result.output


def test_validate_lists_every_error_with_file_and_line_and_exits_1(settings, write_tree):
    tree = write_tree("broken", BROKEN)
    result = CliRunner().invoke(main, ["validate", "--alone", str(tree)], env=env_for(settings))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s) in the metadata."
    assert any("deal.yaml:5" in line and "snake_case" in line for line in lines)
    assert any("bad.yaml:2" in line for line in lines) and any("two.yaml:5" in line for line in lines)


def test_demo_data_is_deterministic(make_runtime, tmp_path, settings):
    first = make_runtime()
    second = make_runtime(database_url=f"sqlite:///{tmp_path / 'other.db'}", backup_dir=tmp_path / "b2")
    counts = seed(first.records, 10, seed_value=7)
    assert counts == seed(second.records, 10, seed_value=7)
    assert counts["account"] == 10 and all(n > 0 for n in counts.values())
    leads = first.records.query("lead", limit=1000)      # demo: {unowned: 0.15}: some for the lead pool
    assert 0 < sum(r["owner_id"] is None for r in leads) < len(leads) / 2
    assert all(r["owner_id"] is not None for r in first.records.query("opportunity", limit=1000))
    for name in ("account", "opportunity", "activity"):
        # the times the engine takes from the clock: the write's, and the follow-up signals (when the
        # owner got the record; activities without a date count from their creation)
        clocked = ("created_at", "updated_at", "owner_assigned_at", "owner_touched_at", "last_activity_at",
                   "next_activity_at")
        cols = [c for c in first.records.table(name).c.keys() if c not in clocked]
        a = [[r[c] for c in cols] for r in first.records.query(name, limit=1000)]
        b = [[r[c] for c in cols] for r in second.records.query(name, limit=1000)]
        assert a == b


def test_health_reports_ok_only_when_the_model_is_applied(make_runtime):
    rt = make_runtime(migrate=False)
    client = create_app(runtime=rt).test_client()
    assert client.get("/health").status_code == 503
    rt.migrate()
    response = client.get("/health")
    assert response.status_code == 200 and response.json["status"] == "ok"
    assert response.json["model_digest"] == rt.model.digest
    page = client.get("/")   # the UI needs a login; /health does not
    assert page.status_code == 302 and page.location.startswith("/login")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_crm_up_migrates_seeds_prints_a_login_and_serves(tmp_path):
    """What `make run` runs, end to end, on a fresh SQLite file."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'crm.db'}",
           "CRM_BACKUP_DIR": str(tmp_path / "var" / "backups"), "CRM_VAR_DIR": str(tmp_path / "var"),
           "CRM_PLUGIN_DIRS": ""}
    crm = Path(sys.executable).with_name("crm")
    proc = subprocess.Popen([str(crm), "up", "--records", "5", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()   # read in a thread: a silent server must not block the test past its deadline
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        output = ""
        deadline = time.time() + 60
        while "Web UI: " not in output and time.time() < deadline and proc.poll() is None:
            try:
                output += lines.get(timeout=0.5)
            except queue.Empty:
                continue
        assert "Admin login: admin@example.com  password: " in output, output
        body = None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = json.load(response)
                    break
            except OSError:
                time.sleep(0.2)
        assert body and body["status"] == "ok"
        # the printed login opens the web UI
        password = re.search(r"password: (\S+)", output).group(1)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        form = opener.open(f"http://127.0.0.1:{port}/login", timeout=5).read().decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        data = urllib.parse.urlencode({"email": "admin@example.com", "password": password, "csrf_token": token})
        home = opener.open(f"http://127.0.0.1:{port}/login", data=data.encode(), timeout=5).read().decode()
        assert "Welcome, Administrator" in home and "/ui/opportunity" in home, home[:500]
        engine = sa.create_engine(env["DATABASE_URL"])
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM account")).scalar() == 5
            assert conn.execute(sa.text("SELECT role FROM \"user\" WHERE email='admin@example.com'")).scalar() == "admin"
        engine.dispose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_admin_is_created_once_whatever_the_case_of_its_email(make_runtime):
    from engine.cli import ensure_admin

    rt = make_runtime()
    first = ensure_admin(rt, "Admin@Example.COM", "Admin")
    assert ensure_admin(rt, "admin@example.com", "Admin") == first
    assert len(rt.records.query("user")) == 1


def test_validate_knows_the_plugins_actions_as_migrate_does(settings, write_tree):
    tree = write_tree("loud", {"loud.yaml": """
        automation: loud_names
        on: {entity: account, events: [created]}
        actions:
          - {do: shout, field: name}
        """})
    plugins = str(Path(__file__).parent / "plugins")
    result = CliRunner().invoke(main, ["validate", str(tree)], env=env_for(settings, CRM_PLUGIN_DIRS=plugins))
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["validate", str(tree)], env=env_for(settings))
    assert result.exit_code == 1 and "unknown action 'shout'" in result.output, result.output
