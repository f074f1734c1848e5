"""The web UI's list page over 1,000,000 leads, against the JSON API and raw sqlite3 in the same run.

One SQLite file holds 1,000,000 leads written through the record service's bulk path
(``bulk("lead", ..., mode="create")`` in chunks, ``Context(system=True, automations=False)``); the
bulk path stamps a whole chunk with one ``created_at``, so afterwards ``created_at`` is spread one
minute apart in id order (as an imported history would be; one UPDATE with sqlite3). Building it
takes a minute or two; the file is cached under ``var/bench/`` keyed by the model digest, the row
count and the generator's version, so later runs only open it. A second file holds 10,000 leads.

Each shape is requested with Flask's test client (in process: the cost of the page, not of HTTP),
signed in through ``/login`` as an admin, in rounds of: the UI page, the JSON API list with the
same query (same sort, ``where=``, cursor and page size, ``fields=`` the list's columns, same
session) and the same page's SQL run with plain ``sqlite3`` (same columns, ORDER BY, LIMIT and
keyset WHERE). Printed: median and p95 per request and the ratios page/API and page/raw SQL. Shapes:
  (a) the first page in the list layout's default sort (-created_at);
  (b) page 200, reached by following the page's own "Next page" link 199 times;
  (c) a filtered page, ``where=status = 'new'`` (an indexed picklist);
  (d) the list sorted by clicking the "Status" column header (indexed);
and, for scale, (a) on the 10,000-lead file, (b) half way, after row 500,000 (a cursor made from the row
there, as 20,000 clicks on Next would give) and the page's capped count query on its own.
Nothing is asserted about time; the rows of the page, the API and the SQL must be the same ones.
"""

from __future__ import annotations

import benchenv  # noqa: F401 - a throwaway key for encrypted fields

import base64
import html
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.app import create_app  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.security.passwords import set_password  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.storage.query import SortKey, encode_cursor  # noqa: E402
from engine.storage.records import Context  # noqa: E402

ROWS = 1_000_000
SMALL = 10_000
DEPTH = 200                 # page (b) is reached by following Next this many times minus one
ROUNDS = int(os.environ.get("BENCH_UI_ROUNDS", "100"))
CHUNK = 20_000
#: A keyset condition with no bound on the first key: SQLite reads the index from its first row.
UNBOUNDED = "(created_at < ? OR created_at = ? AND id < ?)"
GENERATOR = 1               # bump when make_rows changes: a new cache file is built
CACHE = ROOT / "var" / "bench"
EMAIL, PASSWORD = "bench@example.com", "bench list password"
COLUMNS = ["last_name", "first_name", "company", "status", "lead_source", "rating", "email", "owner_id", "created_at"]
SELECTED = "id, created_at, owner_id, version, " + ", ".join(c for c in COLUMNS if c not in ("owner_id", "created_at"))
STATUSES = ["new"] * 3 + ["working"] * 3 + ["qualified"] * 2 + ["unqualified", "converted"]
SOURCES = ["web"] * 3 + ["referral"] * 2 + ["trade_show", "email_campaign", "social_media", "phone_inquiry",
                                              "partner", "advertisement", "cold_call", "other"]
FIRST = ["Ann", "Bo", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lena", "Mei", "Nils"]
LAST = ["Lee", "Wang", "Smith", "Garcia", "Muller", "Rossi", "Dubois", "Tanaka", "Kim", "Nowak", "Silva", "Jones"]
CITIES = [("Paris", "France"), ("Berlin", "Germany"), ("Shanghai", "China"), ("Austin", "United States"),
          ("Osaka", "Japan"), ("Lagos", "Nigeria")]


# -- the database ---------------------------------------------------------------------------------

def _settings(path: Path) -> Settings:
    # migrate backs the (empty) database up before building it: into a throwaway folder
    backups = Path(tempfile.gettempdir()) / "crm-bench-ui-list-backups"
    return Settings(database_url=f"sqlite:///{path}", backup_dir=backups, var_dir=path.parent,
                    plugin_dirs=(), entry_point_plugins=False, secret_key="bench")


def make_rows(start: int, stop: int, owners: list[int], rng: random.Random) -> list[dict]:
    rows = []
    for i in range(start, stop):
        city, country = rng.choice(CITIES)
        rows.append({"last_name": f"{rng.choice(LAST)} {i}", "first_name": rng.choice(FIRST),
                     "company": f"Company {rng.randrange(50_000)}", "email": f"lead{i}@example.com",
                     "status": rng.choice(STATUSES), "lead_source": rng.choice(SOURCES),
                     "rating": rng.choice(["hot", "warm", "warm", "cold"]), "owner_id": rng.choice(owners),
                     "city": city, "country": country, "employees": rng.randint(1, 5000),
                     "annual_revenue": f"{rng.randint(50_000, 100_000_000)}.00"})
    return rows


def database(n: int) -> tuple[Runtime, Path, bool]:
    """A runtime on the cached file of ``n`` leads (built first if missing) and whether it was built."""
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f"ui_list-{n}.building.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{building}{suffix}").unlink(missing_ok=True)
    rt = Runtime.boot(_settings(building))
    path = CACHE / f"ui_list-{rt.model.digest}-{n}-g{GENERATOR}.db"
    if path.exists():
        rt.close()
        Path(building).unlink(missing_ok=True)
        rt = Runtime.boot(_settings(path))
        rt.migrate()   # the digest is in the name: nothing to do
        return rt, path, False
    for stale in CACHE.glob(f"ui_list-*-{n}-g*.db*"):   # an older model's file of this size
        stale.unlink()
    print(f"  building {n:,} leads through the bulk path into {path.relative_to(ROOT)} (once; cached) ...",
          flush=True)
    rt.migrate()
    system = Context(system=True, automations=False)
    users = rt.records.bulk("user", [{"name": f"Owner {i}", "email": f"owner{i}@example.com", "role": "sales"}
                                     for i in range(20)] + [{"name": "Bench", "email": EMAIL, "role": "admin"}],
                            mode="create", context=system)
    ids = [item["id"] for item in users.items]
    set_password(rt.records, ids[-1], PASSWORD)
    rng = random.Random(1)
    for start in range(0, n, CHUNK):
        result = rt.records.bulk("lead", make_rows(start, min(n, start + CHUNK), ids[:-1], rng), mode="create",
                                 context=system)
        if not result.ok:
            raise RuntimeError(f"bulk create refused a row: {next(i for i in result.items if i['status'] == 'error')}")
    rt.close()
    conn = sqlite3.connect(building, isolation_level=None)
    # one minute apart, oldest first, in the engine's stored format (UTC, microseconds)
    stamp = "strftime('%Y-%m-%d %H:%M:%S', '2023-01-01', '+' || id || ' minutes') || '.000000'"
    conn.execute(f"UPDATE lead SET created_at = {stamp}, updated_at = {stamp}")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    os.replace(building, path)
    shutil.rmtree(_settings(path).backup_dir, ignore_errors=True)
    rt = Runtime.boot(_settings(path))
    return rt, path, True


# -- measuring ------------------------------------------------------------------------------------

def signed_in(rt: Runtime):
    app = create_app(runtime=rt)
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    r = client.post("/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})
    if r.status_code != 302:
        raise RuntimeError(f"login failed: {r.status_code}")
    return client


def _get(client, url: str):
    r = client.get(url)
    if r.status_code != 200:
        raise RuntimeError(f"GET {url}: {r.status_code}\n{r.text[:3000]}")
    return r


def _stored(value):
    """A cursor value as sqlite3 compares it (datetimes are stored as naive UTC text)."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", value):
        return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def cursor_of(url: str) -> str | None:
    return (parse_qs(urlsplit(url).query).get("cursor") or [None])[0]


def raw_page(conn: sqlite3.Connection, size: int, *, where: str = "", order: str = "created_at DESC, id DESC",
             keyset: str = "", cursor: str | None = None, params: tuple = ()) -> tuple[str, tuple]:
    """The page's SQL as one would write it by hand for sqlite3: a row value seeks the index."""
    conditions, args = [where] if where else [], list(params)
    if cursor:
        created, last_id = (_stored(v) for v in json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))
        keyset = keyset or "(created_at, id) < (?, ?)"
        conditions.append(keyset)
        args += [created, created, last_id] if keyset.count("?") == 3 else [created, last_id]
    sql = f"SELECT {SELECTED} FROM lead {'WHERE ' + ' AND '.join(conditions) if conditions else ''} " \
          f"ORDER BY {order} LIMIT {size + 1}"
    return sql, tuple(args)


def _ids_html(text: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', text)]


def measure(client, conn: sqlite3.Connection, page_url: str, api_url: str, sql: tuple[str, tuple],
            rounds: int = ROUNDS, *, also: tuple | None = None) -> dict | tuple[dict, dict]:
    """Median and p95 (ms) of the page, the API call and the raw SQL, in interleaved rounds after
    three rounds of warm-up; checks first that all three return the same rows. ``also`` (the same
    arguments for another database) is measured in the same rounds."""
    shapes = [(client, conn, page_url, api_url, sql)] + ([also] if also else [])
    for client_, conn_, page_, api_, sql_ in shapes:
        page_ids = _ids_html(_get(client_, page_).text)
        api_ids = [r["id"] for r in _get(client_, api_).json["data"]]
        raw_ids = [r[0] for r in conn_.execute(*sql_).fetchall()][:len(page_ids)]
        if not page_ids or page_ids != api_ids or page_ids != raw_ids:
            raise RuntimeError(f"different rows for {page_}: page {page_ids[:3]}, API {api_ids[:3]}, SQL {raw_ids[:3]}")
    times: list[dict[str, list[float]]] = [{"page": [], "api": [], "raw": []} for _ in shapes]
    for n in range(rounds + 3):
        for (client_, conn_, page_, api_, sql_), out in zip(shapes, times):
            for name, call in (("page", lambda: client_.get(page_)), ("api", lambda: client_.get(api_)),
                               ("raw", lambda: conn_.execute(*sql_).fetchall())):
                start = time.perf_counter()
                call()
                if n >= 3:
                    out[name].append((time.perf_counter() - start) * 1000)
    found = [{name: (statistics.median(ts), _p95(ts)) for name, ts in out.items()} for out in times]
    return (found[0], found[1]) if also else found[0]


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _timed_sql(conn: sqlite3.Connection, sql: str, params: tuple = (), rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _api(size: int, sort: str, **extra) -> str:
    return "/api/v1/lead?" + urlencode({"limit": size, "sort": sort, "fields": ",".join(COLUMNS), **extra})


def run(rt: Runtime, path: Path, small_rt: Runtime, small_path: Path, deep_row: int) -> tuple[dict, dict]:
    client, small_client = signed_in(rt), signed_in(small_rt)
    small_conn = sqlite3.connect(small_path)
    conn = sqlite3.connect(path)
    results, notes = {}, {}
    size, default = 25, "-created_at"
    first = _get(client, "/ui/lead").text
    if 'data-field="status"' not in first:
        raise RuntimeError("the list page has no Status column to sort by")
    notes["total_text"] = re.search(r'id="total">([^<]*)<', first).group(1)

    results["(a) first page"], results[f"(a) first page, {SMALL:,} leads"] = measure(
        client, conn, "/ui/lead", _api(size, default), raw_page(conn, size),
        also=(small_client, small_conn, "/ui/lead", _api(size, default), raw_page(small_conn, size)))
    notes["small_total"] = re.search(r'id="total">([^<]*)<', _get(small_client, "/ui/lead").text).group(1)
    small_conn.close()

    # (b): follow the page's own Next link; time every page on the way
    url, text, walk = "/ui/lead", first, []
    for _ in range(DEPTH - 1):
        url = html.unescape(re.search(r'href="([^"]+)" id="next-page"', text).group(1))
        start = time.perf_counter()
        text = _get(client, url).text
        walk.append((time.perf_counter() - start) * 1000)
    cursor = cursor_of(url)
    offset_ids = [r[0] for r in conn.execute(f"SELECT id FROM lead ORDER BY created_at DESC, id DESC LIMIT {size} "
                                             f"OFFSET {(DEPTH - 1) * size}")]
    if _ids_html(_get(client, url).text) != offset_ids:
        raise RuntimeError(f"page {DEPTH} by cursor is not rows {(DEPTH - 1) * size + 1}.. by OFFSET")
    results[f"(b) page {DEPTH} by Next"] = measure(client, conn, url, _api(size, default, cursor=cursor),
                                                    raw_page(conn, size, cursor=cursor))
    notes["walk"] = (statistics.median(walk[:20]), statistics.median(walk[-20:]))
    seek = raw_page(conn, size, cursor=cursor, keyset=UNBOUNDED)
    notes["seek_200"] = (_timed_sql(conn, *seek), _timed_sql(conn, *raw_page(conn, size, cursor=cursor)))
    created, row_id = conn.execute(f"SELECT created_at, id FROM lead ORDER BY created_at DESC, id DESC LIMIT 1 "
                                   f"OFFSET {deep_row - 1}").fetchone()
    deep = encode_cursor([SortKey("created_at", True), SortKey("id", True)],   # as the page's Next link makes it
                         {"created_at": datetime.fromisoformat(created).replace(tzinfo=timezone.utc), "id": row_id})
    results[f"(b) after row {deep_row:,}"] = measure(client, conn, "/ui/lead?" + urlencode({"cursor": deep}),
                                                  _api(size, default, cursor=deep), raw_page(conn, size, cursor=deep),
                                                  rounds=max(10, ROUNDS // 4))
    seek = raw_page(conn, size, cursor=deep, keyset=UNBOUNDED)
    notes["seek_deep"] = (_timed_sql(conn, *seek), results[f"(b) after row {deep_row:,}"]["raw"][0])

    where = "status = 'new'"
    results["(c) where=status='new'"] = measure(
        client, conn, "/ui/lead?" + urlencode({"where": where}), _api(size, default, where=where),
        raw_page(conn, size, where="status = ?", params=("new",)))

    header = html.unescape(re.search(r'href="([^"]+)" data-field="status"', first).group(1))
    results["(d) Status header"] = measure(client, conn, header, _api(size, "status"),
                                           raw_page(conn, size, order="status ASC NULLS LAST, id ASC"))

    notes["count"] = (_timed_sql(conn, "SELECT count(*) FROM (SELECT id FROM lead LIMIT 10001)"),
                      _timed_sql(conn, "SELECT count(*) FROM (SELECT id FROM lead WHERE status = ? LIMIT 10001)",
                                 ("new",)))
    conn.close()
    return results, notes


def main(rows: int = ROWS) -> dict:
    started = time.perf_counter()
    rt, path, built = database(rows)
    small_rt, small_path, small_built = database(SMALL)
    ready = time.perf_counter()
    try:
        results, notes = run(rt, path, small_rt, small_path, rows // 2)
    finally:
        rt.close()
        small_rt.close()
    small = results[f"(a) first page, {SMALL:,} leads"]
    print(f"UI list page (Flask test client, in process), {rows:,} leads in SQLite, 25 rows a page, "
          f"{ROUNDS} rounds (databases {'built in ' + format(ready - started, '.0f') + ' s' if built or small_built else 'cached'}):")
    print(f"  {'':<30} {'page ms':>8} {'p95':>6} {'API ms':>7} {'p95':>6} {'SQL ms':>7} {'page/API':>9} {'page/SQL':>9}")
    for name, r in results.items():
        (pm, pp), (am, ap), (sm, _sp) = r["page"], r["api"], r["raw"]
        print(f"  {name:<30} {pm:>8.2f} {pp:>6.2f} {am:>7.2f} {ap:>6.2f} {sm:>7.3f} {pm / am:>9.1f} {pm / sm:>9.{0 if pm / sm >= 10 else 1}f}")
    a, b = results["(a) first page"], results[f"(b) page {DEPTH} by Next"]
    deep = results[f"(b) after row {rows // 2:,}"]
    ratios = {"depth_page": b["page"][0] / a["page"][0], "depth_sql": b["raw"][0] / a["raw"][0],
              "deep_page": deep["page"][0] / a["page"][0], "deep_sql": deep["raw"][0] / a["raw"][0],
              "table_page": a["page"][0] / small["page"][0], "table_sql": a["raw"][0] / small["raw"][0],
              "page_api": a["page"][0] / a["api"][0], "page_sql": a["page"][0] / a["raw"][0]}
    print(f"  depth: page {DEPTH}/page 1 = {ratios['depth_page']:.2f} (SQL {ratios['depth_sql']:.1f}); "
          f"after row {rows // 2:,}/page 1 = {ratios['deep_page']:.2f} (SQL {ratios['deep_sql']:.0f})")
    print(f"  walking Next: median of pages 2-21 {notes['walk'][0]:.1f} ms, of pages {DEPTH - 19}-{DEPTH} "
          f"{notes['walk'][1]:.1f} ms")
    print(f"  table size: first page at {rows:,}/{SMALL:,} leads = {ratios['table_page']:.2f} "
          f"(SQL {ratios['table_sql']:.2f})")
    print(f"  keyset SQL without a leading bound (a < ? OR a = ? AND id < ?; the engine before it added one) "
          f"vs a row value (a, id) < (?, ?): "
          f"page {DEPTH} {notes['seek_200'][0]:.2f} vs {notes['seek_200'][1]:.3f} ms, "
          f"after row {rows // 2:,} {notes['seek_deep'][0]:.1f} vs {notes['seek_deep'][1]:.3f} ms")
    print(f"  capped count on every page (COUNT_CAP 10,000), raw SQL: {notes['count'][0]:.2f} ms, "
          f"with status = 'new' {notes['count'][1]:.2f} ms")
    print(f"  total the page shows: {notes['total_text']!r} for {rows:,} leads, "
          f"{notes['small_total']!r} for {SMALL:,}")
    print(f"  ({time.perf_counter() - ready:.0f} s measuring)")
    return ratios


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS)
