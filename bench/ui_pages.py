"""The record page and the home page against the API calls that read the same data, over the
1,000,000-lead database of ``ui_list`` (the same cached file; built once through the bulk path).

Issue 17's goal: a page at most 3x the API call(s) reading the same data. Requests go through
Flask's test client (in process: the cost of the page, not of HTTP), signed in as the bench admin.
Rounds interleave the page and its API calls after three rounds of warm-up; printed are p50 and p99
and the ratio page/API at each. Nothing is asserted about time.

- record page ``/ui/lead/<id>`` against ``GET /api/v1/lead/<id>`` plus the API lists of what the page
  shows beside the record (its activities, newest first, 5 rows; its field history is not in the API);
- home ``/`` against the API lists of what its panels show for the signed-in user: open activities
  due up to today (tasks), meetings from now, open deals, each ``limit=10``.
"""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import os
import statistics
import time
from urllib.parse import urlencode

import ui_list

ROUNDS = int(os.environ.get("BENCH_UI_PAGE_ROUNDS", "200"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client, page: str, api: list[str]) -> dict:
    ui_list._get(client, page)
    for url in api:
        ui_list._get(client, url)
    pages, apis = [], []
    for n in range(ROUNDS + 3):
        start = time.perf_counter()
        client.get(page)
        middle = time.perf_counter()
        for url in api:
            client.get(url)
        end = time.perf_counter()
        if n >= 3:
            pages.append((middle - start) * 1000)
            apis.append((end - middle) * 1000)
    return {"page": (statistics.median(pages), _pct(pages, 0.99)), "api": (statistics.median(apis), _pct(apis, 0.99))}


def main(rows: int = ui_list.ROWS) -> dict:
    rt, _path, _built = ui_list.database(rows)
    try:
        client = ui_list.signed_in(rt)
        lead = rows // 2
        record_api = [f"/api/v1/lead/{lead}",
                      "/api/v1/activity?" + urlencode({"related_to": f"lead:{lead}", "sort": "-created_at",
                                                       "limit": 5})]
        open_tasks = "status <> 'completed' AND status <> 'canceled' AND due_date <= TODAY()"
        home_api = ["/api/v1/activity?" + urlencode({"where": open_tasks, "sort": "due_date", "limit": 10}),
                    "/api/v1/activity?" + urlencode({"where": "type = 'meeting' AND start_at >= NOW()",
                                                     "sort": "start_at", "limit": 10}),
                    "/api/v1/opportunity?" + urlencode({"where": "stage <> 'won' AND stage <> 'lost'",
                                                        "sort": "close_date", "limit": 10})]
        results = {"record page": measure(client, f"/ui/lead/{lead}", record_api),
                   "home page": measure(client, "/", home_api)}
    finally:
        rt.close()
    print(f"UI pages against their API calls (Flask test client), {rows:,} leads in SQLite, {ROUNDS} rounds; "
          f"goal: page at most 3x its API calls")
    print(f"  {'':<14} {'page p50':>9} {'p99':>7} {'API p50':>8} {'p99':>7} {'ratio p50':>10} {'p99':>6}")
    ratios = {}
    for name, r in results.items():
        (pm, pp), (am, ap) = r["page"], r["api"]
        ratios[name] = pm / am
        print(f"  {name:<14} {pm:>9.2f} {pp:>7.2f} {am:>8.2f} {ap:>7.2f} {pm / am:>10.1f} {pp / ap:>6.1f}")
    return ratios


if __name__ == "__main__":
    import sys

    main(int(sys.argv[1]) if len(sys.argv) > 1 else ui_list.ROWS)
