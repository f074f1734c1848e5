"""Peak memory of exporting 100,000 leads as CSV and as XLSX through the API (streamed).

Seeds the leads with the bulk path (owners and picklists set, so titles and labels are looked up),
then reads each export through the Flask test client chunk by chunk, as a browser would, and
reports the time, the size and two peaks: Python's own allocations during the export (tracemalloc)
and the process's resident set (ru_maxrss, which also holds the seeded model and connections).
A whole-file-in-memory export would show a tracemalloc peak of the order of the file's size.

    .venv/bin/python bench/export_memory.py [rows] [--time]

``--time`` measures the time without tracemalloc (which slows openpyxl's many small allocations about
tenfold); the peaks are then the process's only.
"""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.app import create_app  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.security.tokens import create_token  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.records import Context  # noqa: E402

SYSTEM = Context(system=True, automations=False)
STATUSES = ["new", "working", "qualified", "unqualified"]


def main(n: int = 100_000, trace: bool = True) -> None:
    folder = Path(tempfile.mkdtemp(prefix="crm-export-bench-"))
    rt = Runtime.boot(Settings(database_url=f"sqlite:///{folder / 'crm.db'}", var_dir=folder, backup_dir=folder / "b",
                               plugin_dirs=(), entry_point_plugins=False, secret_key="bench"))
    rt.migrate()
    admin = rt.records.create("user", {"name": "Admin", "email": "admin@example.com", "role": "admin"}, context=SYSTEM)
    owners = [rt.records.create("user", {"name": f"Owner {i}", "email": f"o{i}@example.com", "role": "sales"},
                                context=SYSTEM)["id"] for i in range(20)]
    started = time.perf_counter()
    for start in range(0, n, 10_000):
        rows = [{"first_name": f"Ann{i % 97}", "last_name": f"Lee{i}", "company": f"Company {i % 5000}",
                 "email": f"lead{i}@example.com", "status": STATUSES[i % 4], "owner_id": owners[i % 20],
                 "annual_revenue": i * 10} for i in range(start, min(n, start + 10_000))]
        assert rt.records.bulk("lead", rows, mode="create", atomic=True, context=SYSTEM).ok
    print(f"seeded {n:,} leads in {time.perf_counter() - started:.1f} s")
    _, token = create_token(rt.records, admin["id"], "bench")
    client = create_app(runtime=rt).test_client()
    fields = "first_name,last_name,company,email,status,owner_id,annual_revenue,created_at"
    for file in ("csv", "xlsx"):
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        response = client.get(f"/api/v1/lead/_export?file={file}&fields={fields}&format=readable&headers=label"
                              "&tz=Asia/Shanghai", headers={"Authorization": f"Bearer {token}"}, buffered=False)
        size = sum(len(chunk) for chunk in response.response)
        _, peak = tracemalloc.get_traced_memory() if trace else (0, 0)
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{file}: {n:,} rows, {size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s; "
              f"peak Python allocations {peak / 1e6:.1f} MB; process peak RSS so far {rss:.0f} MB")


if __name__ == "__main__":
    numbers = [a for a in sys.argv[1:] if a.isdigit()]
    main(int(numbers[0]) if numbers else 100_000, trace="--time" not in sys.argv)
