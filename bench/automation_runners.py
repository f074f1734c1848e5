"""Events through a simple after-commit automation, with each runner.

N leads are created one by one (each its own write transaction, as API calls would be); an
automation on ``lead created`` runs one ``notify`` action (a notification record) after the commit.
Figures:

* events/s: leads created per second until every run is done, against the same creates with no
  automation (the baseline, in the same run): the ratio is what automations cost the writer;
* delay from commit to action done (the run row is written in the write's transaction; the
  action's done marker when the notification is committed): p50 and p99, measured with the leads
  created at a steady 20 per second (under the burst above the delay is mostly queueing).

Runners: in-process (a thread of this process) and rq with ``crm worker`` processes (when Redis is
reachable at ``REDIS_URL`` or redis://127.0.0.1:6379/0).
"""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.runtime import Runtime  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.records import Context  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", 2000))
REDIS = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
AUTOMATION = """
automation: bench_notify
on: {entity: lead, events: [created]}
actions:
  - {do: notify, to: "owner", message: "'New lead: ' & last_name"}
"""


def _runtime(tmp: Path, name: str, *, automations: bool, redis: str | None = None) -> Runtime:
    site = tmp / f"site-{name}"
    site.mkdir()
    if automations:
        (site / "bench.yaml").write_text(AUTOMATION)
    settings = Settings(database_url=f"sqlite:///{tmp / name}.db", site_dir=site, plugin_dirs=(),
                        entry_point_plugins=False, backup_dir=tmp / "backups", var_dir=tmp,
                        redis_url=redis, queue_name=f"bench-{uuid.uuid4().hex[:8]}")
    rt = Runtime.boot(settings)
    rt.migrate()
    return rt


def _create(rt: Runtime, user_id: int, count: int = N, pace: float = 0.0) -> float:
    ctx = Context(user_id=user_id, automations=True)
    started = time.perf_counter()
    for i in range(count):
        rt.records.create("lead", {"last_name": f"L{i}", "company": "Bench", "owner_id": user_id}, context=ctx)
        if pace:
            time.sleep(max(0.0, started + (i + 1) * pace - time.perf_counter()))
    return started


def _wait(rt: Runtime, timeout: float = 600) -> None:
    runs = rt.workflow.runs
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.db.read() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(runs).where(
                runs.c.automation == "bench_notify", runs.c.status.not_in(("done", "dead")))).scalar()
        if not left:
            return
        time.sleep(0.02)
    raise RuntimeError("the runs did not finish in time")


def _delays(rt: Runtime, after: int) -> list[float]:
    runs, done = rt.workflow.runs, rt.workflow.done
    stmt = sa.select(runs.c.created_at, done.c.done_at).join(done, done.c.run_id == runs.c.id).where(
        runs.c.automation == "bench_notify", runs.c.id > after)
    with rt.db.read() as conn:
        return [(d - c).total_seconds() * 1000 for c, d in conn.execute(stmt)]


def _user(rt: Runtime) -> int:
    return rt.records.create("user", {"name": "Bench", "email": "bench@example.com", "role": "sales"},
                             context=Context(system=True))["id"]


def _measure(rt: Runtime) -> tuple[float, list[float]]:
    user = _user(rt)
    started = _create(rt, user)
    _wait(rt)
    rate = N / (time.perf_counter() - started)
    with rt.db.read() as conn:
        last = conn.execute(sa.select(sa.func.max(rt.workflow.runs.c.id))).scalar()
    _create(rt, user, 200, pace=1 / 20)
    _wait(rt)
    return rate, _delays(rt, last)


def _redis_up() -> bool:
    try:
        from redis import Redis

        return bool(Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    print(f"\nAutomations: {N} leads created one by one, each firing one notify action after commit (SQLite)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain = _runtime(tmp, "plain", automations=False)
        user = _user(plain)
        started = _create(plain, user)
        base = N / (time.perf_counter() - started)
        plain.close()
        print(f"  baseline (no automation): {base:8.0f} creates/s")
        rows = [("in-process", _runtime(tmp, "inproc", automations=True), [])]
        if _redis_up():
            for workers in (1, 2):
                rows.append((f"rq, {workers} worker{'s' if workers > 1 else ''}",
                             _runtime(tmp, f"rq{workers}", automations=True, redis=REDIS), workers))
        else:
            print(f"  (rq skipped: no Redis at {REDIS})")
        for label, rt, workers in rows:
            procs = []
            if workers:
                env = {**os.environ, "DATABASE_URL": rt.settings.database_url, "REDIS_URL": REDIS,
                       "CRM_QUEUE": rt.settings.queue_name, "CRM_SITE_DIR": str(rt.settings.site_dir),
                       "CRM_PLUGIN_DIRS": "", "CRM_VAR_DIR": str(tmp)}
                procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=env, cwd=ROOT)
                         for _ in range(workers)]
                time.sleep(2)   # let the workers connect
            try:
                rate, delays = _measure(rt)
            finally:
                for proc in procs:
                    proc.terminate()
                    proc.wait(timeout=30)
                rt.close()
            print(f"  {label:<14} {rate:8.0f} events/s  ({rate / base:.2f} of baseline)   "
                  f"commit -> done p50 {statistics.median(delays):7.1f} ms  p99 {_pct(delays, 99):8.1f} ms")


if __name__ == "__main__":
    main()
