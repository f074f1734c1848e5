"""Search over the leads of the list bench's database (1,000,000 by default, ``BENCH_SEARCH_ROWS``):
the p50 and p99 of ``engine.storage.search.search`` as an admin, for a full name, a prefix and a
word that matches nothing. The goal is p99 under 50 ms on SQLite; this reports where it stands
(there is no timed assertion anywhere in the tests).

Builds (once, cached in var/bench) the same database as ``bench/ui_list.py``."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ui_list  # noqa: E402

from engine.storage.records import Context  # noqa: E402
from engine.storage.search import search  # noqa: E402

ROWS = int(os.environ.get("BENCH_SEARCH_ROWS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_SEARCH_ROUNDS", "20"))
GOAL_MS = 50.0


def main(rows: int = ROWS) -> dict:
    rt, _path, _built = ui_list.database(rows)
    try:
        system = Context(system=True)
        sample = rt.records.query("lead", order_by=("id",), limit=1)[0]
        queries = {"full name": f"{sample['first_name']} {sample['last_name']}", "prefix": sample["first_name"][:3],
                   "no match": "zzqx-nothing"}
        out = {}
        for label, text in queries.items():
            times = []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                search(rt.records, text, system, limit=10)
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            out[label] = {"p50_ms": round(statistics.median(times), 1), "p99_ms": round(p99, 1)}
            verdict = "meets" if p99 < GOAL_MS else "misses"
            print(f"  search {label!r} over {rows:,} leads: p50 {out[label]['p50_ms']} ms, "
                  f"p99 {out[label]['p99_ms']} ms ({verdict} the {GOAL_MS:.0f} ms goal)", flush=True)
        return out
    finally:
        rt.close()


if __name__ == "__main__":
    main()
