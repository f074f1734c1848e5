"""The duplicate scan over BENCH_DUP_ROWS leads (default 1,000,000): the leads are written with raw
inserts (one in twenty shares an e-mail with the lead before it), their keys indexed by the backfill
(``crm duplicates backfill``), then ``duplicate_groups`` over the base CRM's rules; prints each time,
the groups and the peak memory. ``python bench/duplicate_scan.py [DATABASE_URL]`` (default: a SQLite
file in a temporary folder). Part of ``make bench`` (it takes minutes at a million: its time is
set against the raw inserts of the same rows)."""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.dataio.duplicates.keys import backfill  # noqa: E402
from engine.dataio.duplicates.plugin import service_of  # noqa: E402
from engine.dataio.duplicates.scan import duplicate_groups  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.settings import Settings  # noqa: E402

ROWS = int(os.environ.get("BENCH_DUP_ROWS", "1000000"))


def main(url: str) -> None:
    rt = Runtime.boot(Settings(database_url=url, plugin_dirs=(), entry_point_plugins=False, secret_key="bench"))
    rt.migrate()
    table, now = rt.records.table("lead"), datetime.now(timezone.utc)
    started = time.perf_counter()
    with rt.records.db.write() as conn:
        for start in range(0, ROWS, 50_000):
            conn.execute(table.insert(), [
                {"last_name": f"L{i}", "company": f"C{i}", "status": "new", "rating": "warm", "email_opt_out": False,
                 "email": f"p{i - 1 if i % 20 == 19 else i}@example.com", "mobile": f"13{i:09d}",
                 "created_at": now, "updated_at": now, "version": 1} for i in range(start, min(ROWS, start + 50_000))])
    raw = time.perf_counter() - started
    started = time.perf_counter()
    indexed = backfill(rt, service_of(rt), "lead")
    fill = time.perf_counter() - started
    started = time.perf_counter()
    groups = duplicate_groups(rt, "lead", backfill=False)
    scan = time.perf_counter() - started
    print(f"{ROWS} leads: raw inserts {raw:.0f} s; backfill {indexed} in {fill:.0f} s ({indexed / fill:.0f}/s); "
          f"scan {scan:.1f} s, {len(groups)} groups; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    rt.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(f"sqlite:///{folder}/dup.db")
