"""Bulk upsert of 100,000 leads through the record service, against raw sqlite3 executemany.

Every side writes the same rows, in one transaction, into SQLite files with the same pragmas
(WAL, synchronous=NORMAL). Two raw baselines, which do no validation at all:
  * "raw, same table": plain sqlite3 executemany into the lead table exactly as the engine's
    migration created it (same columns and indexes), values pre-converted to what is stored;
    the ratio against it is the engine's own overhead (the target is >= 0.3).
  * "raw, bare table": executemany into a table with only these ten columns and one unique
    index, for scale (index maintenance of the real table is part of the gap).
The engine side does everything a user's write does: type coercion, defaults, required fields,
unique-key lookup for the upsert, lookup checks, and on the second pass field history.
"""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.runtime import Runtime  # noqa: E402
from engine.settings import Settings  # noqa: E402

STATUSES = ["new", "working", "qualified", "unqualified"]
COLUMNS = ["external_id", "first_name", "last_name", "company", "email", "phone", "status", "city",
           "annual_revenue", "employees"]


def make_rows(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [{"external_id": f"EXT-{i:07d}", "first_name": f"Ann{i % 97}", "last_name": f"Lee{i}",
             "company": f"Company {i % 5000}", "email": f"lead{i}@example.com", "phone": f"+1 201 {200 + i // 10000 % 800:03d} {i % 10000:04d}",
             "status": STATUSES[i % 4], "city": rng.choice(["Paris", "Berlin", "Shanghai", "Austin"]),
             "annual_revenue": f"{rng.randint(1, 10_000_000)}.00", "employees": rng.randint(1, 5000)}
            for i in range(n)]


def raw_sqlite(folder: Path, rows: list[dict]) -> float:
    path = folder / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE lead (id INTEGER PRIMARY KEY, external_id TEXT UNIQUE, first_name TEXT, "
                 "last_name TEXT, company TEXT, email TEXT, phone TEXT, status TEXT, city TEXT, "
                 "annual_revenue INTEGER, employees INTEGER)")
    tuples = [tuple(r[c] for c in COLUMNS) for r in rows]
    start = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO lead ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", tuples)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def raw_same_table(folder: Path, rows: list[dict]) -> float:
    """executemany into the engine's own lead table (created by its migration), no validation."""
    from datetime import datetime, timezone

    settings = Settings(database_url=f"sqlite:///{folder / 'same.db'}", backup_dir=folder / "backups",
                        plugin_dirs=(), entry_point_plugins=False)
    rt = Runtime.boot(settings)
    rt.migrate()
    rt.close()
    now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    tuples = [tuple(int(r[c].replace(".", "")) if c == "annual_revenue" else r[c] for c in COLUMNS) + (now, now, 1)
              for r in rows]
    conn = sqlite3.connect(folder / "same.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO lead ({', '.join(COLUMNS)}, created_at, updated_at, version) "
                     f"VALUES ({', '.join('?' * (len(COLUMNS) + 3))})", tuples)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def engine_upsert(folder: Path, rows: list[dict]) -> tuple[float, float]:
    settings = Settings(database_url=f"sqlite:///{folder / 'crm.db'}", backup_dir=folder / "backups",
                        plugin_dirs=(), entry_point_plugins=False)
    rt = Runtime.boot(settings)
    rt.migrate()
    start = time.perf_counter()
    result = rt.records.bulk("lead", rows, mode="upsert", key="external_id")
    created = time.perf_counter() - start
    assert result.counts() == {"created": len(rows)}, result.counts()
    changed = [{**r, "status": "qualified"} for r in rows]
    start = time.perf_counter()
    result = rt.records.bulk("lead", changed, mode="upsert", key="external_id")
    updated = time.perf_counter() - start
    assert set(result.counts()) <= {"updated", "unchanged"}, result.counts()
    rt.close()
    return created, updated


def main(n: int = 100_000, repeats: int = 3) -> dict:
    rows = make_rows(n)
    raw, same, new, upd = [], [], [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            raw.append(raw_sqlite(Path(tmp), rows))
        with tempfile.TemporaryDirectory() as tmp:
            same.append(raw_same_table(Path(tmp), rows))
        with tempfile.TemporaryDirectory() as tmp:
            created, updated = engine_upsert(Path(tmp), [dict(r) for r in rows])
            new.append(created)
            upd.append(updated)
    r, t, c, u = (statistics.median(x) for x in (raw, same, new, upd))
    print(f"bulk upsert of {n:,} leads into SQLite (median of {repeats}):")
    print(f"  raw executemany, bare table   {n / r:>10,.0f} rows/s")
    print(f"  raw executemany, same table   {n / t:>10,.0f} rows/s")
    print(f"  engine upsert, all new        {n / c:>10,.0f} rows/s   ratio {t / c:.2f} to same table, {r / c:.2f} to bare")
    print(f"  engine upsert, all existing   {n / u:>10,.0f} rows/s   ratio {t / u:.2f} to same table, {r / u:.2f} to bare")
    return {"insert_ratio_same_table": t / c, "update_ratio_same_table": t / u, "insert_ratio_bare": r / c}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
