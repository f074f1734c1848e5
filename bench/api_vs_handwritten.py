"""The generated API against a hand-written Flask + SQLAlchemy ORM app (bench/handwritten_app.py) for
the same lead table, under the same WSGI server and settings (gunicorn, 2 sync workers), one after
the other in the same run: requests/s and p99 latency for GET by id, a filtered list and POST, and
the ratio engine/baseline (above 1.0 means the generated API is faster).

The generated list returns every field of a lead (44); the hand-written one the 13 its author
chose. "filtered list" compares them as they are; "list, 13 fields" asks the generated API for the
same 13 fields (fields=), the same output as the hand-written app."""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import load, request  # noqa: E402

from engine.runtime import Runtime  # noqa: E402
from engine.security.tokens import create_token  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.records import Context  # noqa: E402

LEADS = 20_000
SECONDS = float(os.environ.get("BENCH_SECONDS", 5))


def prepare(folder: Path) -> tuple[dict, str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder / 'crm.db'}", "CRM_BACKUP_DIR": str(folder / "backups"),
           "CRM_VAR_DIR": str(folder), "CRM_PLUGIN_DIRS": "", "SECRET_KEY": "bench"}
    rt = Runtime.boot(Settings.from_env(database_url=env["DATABASE_URL"], backup_dir=folder / "backups",
                                        var_dir=folder, plugin_dirs=()))
    rt.migrate()
    user = rt.records.create("user", {"name": "Bench", "email": "bench@example.com", "role": "admin"},
                             context=Context(system=True))
    statuses = ["new", "working", "qualified", "unqualified"]
    rt.records.bulk("lead", [{"last_name": f"Lee {i}", "company": f"Co {i % 900}", "status": statuses[i % 4],
                              "email": f"l{i}@example.com", "city": "Paris", "annual_revenue": f"{i}.50"}
                             for i in range(LEADS)], context=Context(user_id=user["id"]))
    _, token = create_token(rt.records, user["id"], "bench")
    rt.close()
    return env, token


def serve(target: str, env: dict, port: int, cwd: Path) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    # both apps under the deployment's configuration (docs/operations.md): the same sync worker
    proc = subprocess.Popen([str(gunicorn), "-c", "python:engine.serving", "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning", target],
                            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except urllib.error.HTTPError:
            return proc   # answering (401 or 404 both mean it is up)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{target} did not start: {proc.stderr.read().decode()[-2000:]}")


SAME_FIELDS = "id,created_at,updated_at,owner_id,version,first_name,last_name,company,email,phone,status,city,annual_revenue"


def measure(port: int, token: str, get_path, list_path: str, post_path: str, narrow_path: str) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    rng = random.Random(7)
    body = lambda n: json.dumps({"last_name": f"New {n}", "company": "Bench Co", "status": "new",  # noqa: E731
                                 "email": f"new{n}@example.com", "annual_revenue": "10.50"}).encode()
    shapes = {
        "GET by id": lambda n: request("GET", get_path(rng.randint(1, LEADS)), headers),
        "filtered list": lambda n: request("GET", list_path, headers),
        "list, 13 fields": lambda n: request("GET", narrow_path, headers),
        "POST": lambda n: request("POST", post_path, headers, body(n)),
    }
    load("127.0.0.1", port, shapes["GET by id"], seconds=1)   # warm up both workers
    return {name: load("127.0.0.1", port, make, seconds=SECONDS) for name, make in shapes.items()}


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env, token = prepare(folder)
        runs = {}
        proc = serve("engine.app:create_app()", env, 5081, ROOT)
        try:
            runs["engine"] = measure(5081, token, lambda i: f"/api/v1/lead/{i}",
                                     "/api/v1/lead?status=working&limit=50&sort=-created_at", "/api/v1/lead",
                                     f"/api/v1/lead?status=working&limit=50&sort=-created_at&fields={SAME_FIELDS}")
        finally:
            proc.terminate()
            proc.wait()
        proc = serve("handwritten_app:app", env, 5082, Path(__file__).resolve().parent)
        try:
            runs["handwritten"] = measure(5082, token, lambda i: f"/leads/{i}", "/leads?status=working&limit=50",
                                          "/leads", "/leads?status=working&limit=50")
        finally:
            proc.terminate()
            proc.wait()
    print(f"generated API vs hand-written Flask + SQLAlchemy ORM, gunicorn -w 2 sync, SQLite, {LEADS:,} leads, "
          f"{SECONDS:.0f} s per shape, 8 concurrent clients:")
    print(f"  {'':<16} {'engine req/s':>13} {'p99 ms':>8} {'hand req/s':>11} {'p99 ms':>8} {'ratio':>7}")
    ratios = {}
    for shape in runs["engine"]:
        e, h = runs["engine"][shape], runs["handwritten"][shape]
        ratios[shape] = e["rps"] / h["rps"]
        print(f"  {shape:<16} {e['rps']:>13,.0f} {e['p99_ms']:>8.1f} {h['rps']:>11,.0f} {h['p99_ms']:>8.1f} "
              f"{ratios[shape]:>7.2f}")
        bad = {k: v for k, v in {**e["statuses"], **h["statuses"]}.items() if k >= 400}
        if bad:
            print(f"    (error statuses seen: {bad})")
    return ratios


if __name__ == "__main__":
    main()
