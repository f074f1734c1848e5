"""Pools: recycling 100,000 records due at once, and claim latency under 8 concurrent claimers.

* Recycling: 100,000 leads owned from the lead pool, every hold due. The baseline, in the same run
  and on the same rows, is a plain bulk update of their ``owner_id`` to NULL (SQLAlchemy Core
  executemany in batches of 1,000, no history, no audit); then the owners are put back and the
  ``pools.recycle`` job returns them all (the record service's bulk path, owner history, audit rows,
  pool events, the ``recycled`` trigger, hold rows dropped). Reported: records/s and the ratio.
* Claims: 8 threads, each a user of its own, claim one record at a time from the pool (each claim
  one write transaction: lock, counts, conditional owner update, history, audit, event, hold).
  Reported: p50 and p99 latency and claims/s.

SQLite by default; ``BENCH_DATABASE_URL=postgresql+psycopg://...`` runs it on PostgreSQL (a schema of
its own). ``BENCH_POOL_ROWS`` changes the 100,000.
"""

from __future__ import annotations

import benchenv  # a throwaway key for encrypted fields; the database

import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from engine.runtime import Runtime  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.records import Context  # noqa: E402

ROWS = int(os.environ.get("BENCH_POOL_ROWS", "100000"))
CLAIMERS = 8
CLAIMS_EACH = 40
BATCH = 1000


def _runtime(folder: Path) -> tuple[Runtime, str | None]:
    url, schema = benchenv.database_url(folder / "pools.db", "pools")
    rt = Runtime.boot(Settings(database_url=url, backup_dir=folder / "backups", var_dir=folder, plugin_dirs=(),
                               entry_point_plugins=False, secret_key="bench"))
    rt.migrate()
    return rt, schema


def _leads(rt: Runtime, n: int, owner: int | None) -> list[int]:
    rows = [{"last_name": f"Lee{i}", "company": f"Company {i % 5000}", "status": "new", "owner_id": owner}
            for i in range(n)]
    result = rt.records.bulk("lead", rows, context=Context(system=True, automations=False))
    return [item["id"] for item in result.items]


def recycling(rt: Runtime) -> None:
    from engine.processes.pools.recycle import recycle

    system = Context(system=True)
    owner = rt.records.create("user", {"name": "Owner", "email": "owner@example.com", "role": "sales"}, context=system)
    ids = _leads(rt, ROWS, owner["id"])
    lead, holds = rt.records.table("lead"), rt.records.metadata.tables["_crm_pool_hold"]
    now = datetime.now(timezone.utc)
    with rt.db.write() as conn:
        for start in range(0, len(ids), BATCH):
            conn.execute(holds.insert(), [{"pool": "lead_pool", "record_id": i, "user_id": owner["id"],
                                           "claimed_at": now - timedelta(days=30), "due_at": now - timedelta(hours=1),
                                           "warn_at": None, "warned": True} for i in ids[start:start + BATCH]])

    def set_owner(value):
        stmt = lead.update().where(lead.c.id == sa.bindparam("i")).values(owner_id=value)
        started = time.perf_counter()
        for start in range(0, len(ids), BATCH):
            with rt.db.write() as conn:
                conn.execute(stmt, [{"i": i} for i in ids[start:start + BATCH]])
        return time.perf_counter() - started

    plain = set_owner(None)
    set_owner(owner["id"])
    started = time.perf_counter()
    counts = recycle(rt.extensions["pools"], now)
    engine = time.perf_counter() - started
    with rt.db.read() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(lead).where(lead.c.owner_id.is_not(None))).scalar()
    assert counts["recycled"] == ROWS and left == 0, (counts, left)
    print(f"  recycle {ROWS:,} due records:      {ROWS / engine:>10,.0f} records/s ({engine:.1f} s)")
    print(f"  plain bulk owner_id update:        {ROWS / plain:>10,.0f} records/s ({plain:.1f} s)")
    print(f"  ratio recycle / plain update:      {plain / engine:>10.2f}")


def claims(rt: Runtime) -> None:
    pools = rt.extensions["pools"]
    system = Context(system=True)
    users = [rt.records.create("user", {"name": f"Rep {i}", "email": f"rep{i}@example.com", "role": "sales"},
                               context=system) for i in range(CLAIMERS)]
    for user in users:
        pools.set_limit("lead_pool", user["id"], owned=100_000, per_day=100_000, role="admin")
    ids = _leads(rt, CLAIMERS * CLAIMS_EACH, None)
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLAIMERS)

    def work(k: int) -> None:
        mine = ids[k::CLAIMERS]
        barrier.wait()
        for rid in mine:
            started = time.perf_counter()
            pools.claim("lead_pool", [rid], user_id=users[k]["id"], role="sales")
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(CLAIMERS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"  claims, {CLAIMERS} concurrent claimers:     p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, {len(latencies) / total:,.0f} claims/s ({len(latencies)} claims)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rt, schema = _runtime(Path(tmp))
        print(f"Pools ({rt.db.dialect})")
        try:
            recycling(rt)
            claims(rt)
        finally:
            rt.close()
            benchenv.drop_schema(schema)


if __name__ == "__main__":
    main()
