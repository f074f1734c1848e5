"""Run every benchmark (``make bench``). Each prints its figures as ratios against a baseline
measured in the same run; nothing here asserts a time."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_vs_handwritten  # noqa: E402
import automation_runners  # noqa: E402
import bulk_upsert  # noqa: E402
import duplicate_scan  # noqa: E402
import formula_eval  # noqa: E402
import import_leads  # noqa: E402
import pools  # noqa: E402
import quote_lines  # noqa: E402
import search  # noqa: E402
import ui_list  # noqa: E402
import ui_pages  # noqa: E402

if __name__ == "__main__":
    bulk_upsert.main()
    import_leads.main()
    with tempfile.TemporaryDirectory() as folder:
        duplicate_scan.main(f"sqlite:///{folder}/dup.db")   # the scan over 1,000,000 leads (BENCH_DUP_ROWS)
    formula_eval.main()
    print()
    api_vs_handwritten.main()
    automation_runners.main()
    print()
    ui_list.main()
    ui_pages.main()   # the record page and home against their API calls (same 1,000,000-lead file)
    print()
    search.main()   # search over the same 1,000,000 leads
    print()
    pools.main()
    print()
    quote_lines.main()
