"""Import of 1,000,000 leads through the record service's bulk path, against raw sqlite3 executemany.

What an import does once a file is read and mapped: ``records.bulk("lead", rows, mode="create")``
chunk by chunk, each chunk its own transaction (the import's checkpoint), as a real user (role
``sales``, and ``admin`` for comparison) with the base CRM's rules, automations, follow-up signals,
encrypted fields, audit and indexes. Rows come as a CSV reader gives them: every value a string.

The baseline writes the same rows (the same columns the engine writes, values already converted to
what is stored) into the same lead table, created by the engine's migration (same indexes), with
the same pragmas (WAL, synchronous=NORMAL, foreign keys checked), with sqlite3 executemany and one commit per chunk. The
goal is a ratio of at least 0.5 (baseline time / engine time).

Each side runs in a child process, so its peak memory (ru_maxrss) is its own; rows are made chunk
by chunk as a streamed file would give them.

    python bench/import_leads.py [ROWS] [--chunk N] [--role sales|admin]
    (ROWS defaults to 1,000,000; ``--quick`` is 100,000)
    BENCH_DATABASE_URL=postgresql+psycopg://... runs the engine side alone on PostgreSQL (rows/s).
"""

from __future__ import annotations

import benchenv  # a throwaway key for encrypted fields; the PostgreSQL schema of BENCH_DATABASE_URL

import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL = 0.5
CHUNK = 5000
STATUSES = ["new", "working", "qualified", "unqualified"]
SOURCES = ["web", "referral", "trade_show", "partner", "cold_call"]
CITIES = ["Paris", "Berlin", "Shanghai", "Austin", "Hangzhou"]
#: The columns of the file (what the import maps), as strings.
COLUMNS = ["external_id", "salutation", "first_name", "last_name", "company", "job_title", "email", "phone",
           "status", "lead_source", "industry", "annual_revenue", "employees", "city", "country"]


def make_chunk(start: int, n: int) -> list[dict]:
    """Rows ``start`` .. ``start + n`` of the file, as a CSV reader gives them (strings)."""
    rng = random.Random(start)
    return [{"external_id": f"EXT-{i:08d}", "salutation": ("mr", "ms", "dr")[i % 3], "first_name": f"Ann{i % 97}",
             "last_name": f"Lee{i}", "company": f"Company {i % 5000}", "job_title": "Buyer",
             "email": f"lead{i}@example.com", "phone": f"+1 201 {200 + i // 10000 % 800:03d} {i % 10000:04d}", "status": STATUSES[i % 4],
             "lead_source": SOURCES[i % 5], "industry": "retail", "annual_revenue": f"{rng.randint(1, 10_000_000)}.00",
             "employees": str(rng.randint(1, 5000)), "city": rng.choice(CITIES), "country": "France"}
            for i in range(start, start + n)]


def _runtime(folder: Path, url: str | None = None):
    from engine.runtime import Runtime
    from engine.settings import Settings

    settings = Settings(database_url=url or f"sqlite:///{folder / 'crm.db'}", backup_dir=folder / "backups",
                        plugin_dirs=(), entry_point_plugins=False)
    rt = Runtime.boot(settings)
    rt.migrate()
    return rt


def _user(rt, role: str) -> int:
    from engine.storage.context import Context

    return rt.records.create("user", {"name": "Importer", "email": "importer@example.com", "role": role,
                                      "team": "east"}, context=Context(system=True))["id"]


def engine_side(folder: Path, n: int, chunk: int, role: str, postgres: bool = False) -> dict:
    """The import: bulk creates chunk by chunk, as ``role``, through the same Context an import uses."""
    from engine.security.permissions import access_for
    from engine.storage.context import Context

    url, schema = benchenv.database_url(folder / "crm.db", "import") if postgres else (None, None)
    rt = _runtime(folder, url)
    uid = _user(rt, role)
    booted = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    context = Context(user_id=uid, access=access_for(rt.records, uid, role))
    elapsed = cpu = 0.0
    for start in range(0, n, chunk):
        rows = make_chunk(start, min(chunk, n - start))
        began, cpu_began = time.perf_counter(), time.process_time()
        result = rt.records.bulk("lead", rows, mode="create", context=context)
        elapsed += time.perf_counter() - began
        cpu += time.process_time() - cpu_began
        counts = result.counts()
        assert counts == {"created": len(rows)}, (counts, [i for i in result.items if i["status"] == "error"][:3])
    with rt.db.read() as conn:
        import sqlalchemy as sa

        table = rt.records.table("lead")
        stored = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
        sample = dict(conn.execute(sa.select(table).order_by(table.c.id.desc()).limit(1)).one()._mapping)
    assert stored == n, stored
    rt.close()
    benchenv.drop_schema(schema)
    columns = sorted(k for k, v in sample.items() if v is not None and k != "id")
    return {"seconds": elapsed, "cpu": cpu, "columns": columns, "boot_kib": booted}


def _stored(row: dict, now: str, uid: int) -> tuple:
    """A file row as the engine stores it (currency in minor units), plus what the engine adds."""
    values = dict(row, annual_revenue=int(Decimal(row["annual_revenue"]) * 100), employees=int(row["employees"]))
    return tuple(values[c] for c in COLUMNS) + ("warm", 0, now, now, now, now, uid, uid, uid, 1)


RAW_EXTRA = ["rating", "email_opt_out", "created_at", "updated_at", "owner_assigned_at", "owner_touched_at",
             "created_by", "updated_by", "owner_id", "version"]


def raw_side(folder: Path, n: int, chunk: int, role: str) -> dict:
    """executemany into the same lead table (the engine's migration made it), one commit per chunk."""
    rt = _runtime(folder)
    uid = _user(rt, role)
    rt.close()
    conn = sqlite3.connect(folder / "crm.db", isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):   # the engine's own pragmas
        conn.execute(f"PRAGMA {pragma}")
    names = COLUMNS + RAW_EXTRA
    sql = f"INSERT INTO lead ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    elapsed = cpu = 0.0
    for start in range(0, n, chunk):
        rows = make_chunk(start, min(chunk, n - start))
        began, cpu_began = time.perf_counter(), time.process_time()
        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, [_stored(r, now, uid) for r in rows])
        conn.execute("COMMIT")
        elapsed += time.perf_counter() - began
        cpu += time.process_time() - cpu_began
    assert conn.execute("SELECT count(*) FROM lead").fetchone()[0] == n
    conn.close()
    return {"seconds": elapsed, "cpu": cpu, "columns": sorted(names), "boot_kib": 0}


def _child(side: str, n: int, chunk: int, role: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = {"engine": engine_side, "raw": raw_side}[side](Path(tmp), n, chunk, role)
    out["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("RESULT " + json.dumps(out))


def _run(side: str, n: int, chunk: int, role: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--side", side, str(n), "--chunk", str(chunk), "--role", role],
                          capture_output=True, text=True, env=os.environ.copy())
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} side failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][7:])


def main(n: int = 1_000_000, chunk: int = CHUNK, roles: tuple[str, ...] = ("sales",)) -> dict:
    figures = {}
    print(f"import of {n:,} leads into SQLite, bulk create in chunks of {chunk:,} (one transaction each):")
    raw = _run("raw", n, chunk, roles[0])
    print(f"  raw executemany, same table    {n / raw['seconds']:>9,.0f} rows/s   {raw['seconds']:7.1f} s "
          f"({raw['cpu']:.1f} s CPU)   peak {raw['peak_kib'] / 1024:5.0f} MiB")
    for role in roles:
        eng = _run("engine", n, chunk, role)
        missing = set(eng["columns"]) - set(raw["columns"])
        assert not missing, f"the baseline does not write {missing}"
        ratio, cpu_ratio = raw["seconds"] / eng["seconds"], raw["cpu"] / eng["cpu"]
        state = "meets" if ratio >= GOAL else "below"
        print(f"  engine bulk create as {role:<7} {n / eng['seconds']:>9,.0f} rows/s   {eng['seconds']:7.1f} s "
              f"({eng['cpu']:.1f} s CPU)   peak {eng['peak_kib'] / 1024:5.0f} MiB "
              f"({eng['boot_kib'] / 1024:.0f} after boot)")
        print(f"    ratio {ratio:.2f} (CPU time: {cpu_ratio:.2f}); the goal is {GOAL}: {state}")
        figures[role] = {"ratio": ratio, "cpu_ratio": cpu_ratio, "rows_per_s": n / eng["seconds"],
                         "peak_mib": eng["peak_kib"] / 1024}
    return figures


if __name__ == "__main__":
    args = sys.argv[1:]

    def _opt(name: str, default):
        if name in args:
            at = args.index(name)
            value = args[at + 1]
            del args[at:at + 2]
            return value
        return default

    side = _opt("--side", None)
    chunk = int(_opt("--chunk", CHUNK))
    role = _opt("--role", None)
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    n = int(args[0]) if args else (100_000 if quick else 1_000_000)
    if side:
        _child(side, n, chunk, role or "sales")
    elif os.environ.get("BENCH_DATABASE_URL", "").startswith("postgresql"):   # absolute figures only
        with tempfile.TemporaryDirectory() as tmp:
            out = engine_side(Path(tmp), n, chunk, role or "sales", postgres=True)
        print(f"import of {n:,} leads into PostgreSQL as {role or 'sales'}: {n / out['seconds']:,.0f} rows/s "
              f"({out['seconds']:.1f} s, {out['cpu']:.1f} s CPU in the engine's process)")
    else:
        main(n, chunk, (role,) if role else ("sales", "admin"))
