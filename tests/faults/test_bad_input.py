"""Bad input never gives a 500: hostile and malformed input at every door of the API, by class.

Each case is one line of ``CASES``: a class of input (depth, encoding, range, size), the door it
comes through (a body of POST/PATCH/_bulk, a query parameter, a header, _search, _audit, _export)
and what the answer must name. Every case asserts a 4xx answer naming the parameter or field (a
problem+json, or the bulk call's per-item errors), that nothing was written (the row count of every
table but the audit log is unchanged), and that the server still answers a normal request. The
request-line and header limits are gunicorn's own: those cases run a real gunicorn subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa

from engine.security.tokens import create_token
from engine.storage.records import Context

from .servers import free_port, wait_for_output

PROBLEM = "application/problem+json"
NESTED = "[" * 1000 + "]" * 1000
OVER_UTC = "9999-12-31T23:59:59-01:00"     # the year 10000 once moved to UTC
UNDER_UTC = "0001-01-01T00:00:00+01:00"    # the year 0 once moved to UTC
DEEP_CALLS = "ABS(" * 300 + "1" + ")" * 300 + " = 1"
DOUBLING = "ABS(" * 20 + "employees" + ")" * 20 + " >= 0"   # a blank-able argument is written twice per level
LONG_CHAIN = "employees" + " + 1" * 3000 + " > 0"
WIDE = "employees IN (" + ", ".join(["1"] * 2500) + ")"


def _raw(text: str) -> dict:
    """A body sent as it is (a JSON document the test client's encoder would never write)."""
    return {"data": text.encode("utf-8", "surrogatepass"), "headers": {"Content-Type": "application/json"}}


def _q(text: str) -> str:
    return quote(text, safe="")


#: (class, door, method, path, request keywords, status, the parameter or field the answer names)
#: ``{account}``/``{activity}`` stand for the seeded records' ids.
CASES = [
    # -- depth --------------------------------------------------------------------------------
    ("depth", "POST body", "post", "/api/v1/account", _raw('{"name": "x", "tags": ' + NESTED + "}"), 400, None),
    ("depth", "PATCH body", "patch", "/api/v1/account/{account}", _raw('{"name": ' + NESTED + "}"), 400, None),
    ("depth", "_bulk body", "post", "/api/v1/account/_bulk", _raw('{"records": [' + NESTED + "]}"), 400, None),
    ("depth", "deep JSON past the parser", "post", "/api/v1/account", _raw("[" * 100_000 + "]" * 100_000), 400, None),
    ("depth", "where nested calls", "get", f"/api/v1/account?where={_q(DEEP_CALLS)}", {}, 400, "where"),
    ("depth", "where operator chain", "get", f"/api/v1/account?where={_q(LONG_CHAIN)}", {}, 400, "where"),
    ("depth", "where calls doubling in SQL", "get", f"/api/v1/account?where={_q(DOUBLING)}", {}, 400, "where"),
    ("depth", "_export where", "get", f"/api/v1/account/_export?where={_q(DEEP_CALLS)}", {}, 400, "where"),
    # -- encoding -----------------------------------------------------------------------------
    ("encoding", "POST body lone surrogate", "post", "/api/v1/account", _raw('{"name": "a\\ud800b"}'), 400, "name"),
    ("encoding", "POST body lone surrogate in a key", "post", "/api/v1/account", _raw('{"n\\udfffe": "x"}'), 400,
     "n\\udfffe"),
    ("encoding", "POST body NUL", "post", "/api/v1/account", {"json": {"name": "a\x00b"}}, 422, "name"),
    ("encoding", "POST body NUL in an e-mail", "post", "/api/v1/account",
     {"json": {"name": "n", "email": "a\x00@b.co"}}, 422, "email"),
    ("encoding", "PATCH body NUL", "patch", "/api/v1/account/{account}", {"json": {"description": "\x00"}}, 422,
     "description"),
    ("encoding", "_bulk body NUL", "post", "/api/v1/account/_bulk", {"json": {"records": [{"name": "a\x00"}]}},
     422, "name"),
    ("encoding", "_bulk body lone surrogate", "post", "/api/v1/account/_bulk",
     _raw('{"records": [{"name": "\\udc00"}]}'), 400, "records[0].name"),
    ("encoding", "filter NUL", "get", "/api/v1/account?name=a%00b", {}, 400, "name"),
    ("encoding", "filter contains NUL", "get", "/api/v1/account?name[contains]=a%00b", {}, 400, "name"),
    ("encoding", "filter in NUL", "get", "/api/v1/account?name[in]=a,b%00", {}, 400, "name"),
    ("encoding", "where NUL", "get", "/api/v1/account?where=" + _q("name = 'a\x00'"), {}, 400, "where"),
    ("encoding", "where escaped NUL", "get", "/api/v1/account?where=" + _q("name = 'a\\u0000'"), {}, 400, "where"),
    ("encoding", "where escaped surrogate", "get", "/api/v1/account?where=" + _q("name = 'a\\ud800'"), {}, 400,
     "where"),
    ("encoding", "_search NUL", "get", "/api/v1/_search?q=ab%00c", {}, 400, "q"),
    ("encoding", "_export filter NUL", "get", "/api/v1/account/_export?name=a%00", {}, 400, "name"),
    ("encoding", "limit superscript digit", "get", "/api/v1/account?limit=%C2%B2", {}, 400, "limit"),
    ("encoding", "limit Arabic-Indic digit", "get", "/api/v1/account?limit=%D9%A3", {}, 400, "limit"),
    ("encoding", "offset Arabic-Indic digit", "get", "/api/v1/account?offset=%D9%A3", {}, 400, "offset"),
    ("encoding", "_search limit superscript", "get", "/api/v1/_search?q=ab&limit=%C2%B2", {}, 400, "limit"),
    ("encoding", "_audit user Arabic-Indic digit", "get", "/api/v1/_audit?user=%D9%A3", {}, 400, "user"),
    ("encoding", "_audit before superscript", "get", "/api/v1/_audit?before=%C2%B9", {}, 400, "before"),
    ("encoding", "If-Match Arabic-Indic version", "patch", "/api/v1/account/{account}",
     {"json": {"name": "x"}, "headers": {"If-Match": '"{account}-\u0663"'}}, 400, "If-Match"),
    ("encoding", "cursor NUL", "get", "/api/v1/account?cursor=%00", {}, 400, "cursor"),
    ("encoding", "sort NUL", "get", "/api/v1/account?sort=name%00", {}, 400, "name\x00"),
    ("encoding", "fields NUL", "get", "/api/v1/account?fields=name%00", {}, 400, "fields"),
    # -- range --------------------------------------------------------------------------------
    ("range", "POST body date-time past UTC", "post", "/api/v1/activity",
     {"json": {"subject": "s", "start_at": OVER_UTC}}, 422, "start_at"),
    ("range", "PATCH body date-time before UTC", "patch", "/api/v1/activity/{activity}",
     {"json": {"start_at": UNDER_UTC}}, 422, "start_at"),
    ("range", "_bulk body date-time past UTC", "post", "/api/v1/activity/_bulk",
     {"json": {"records": [{"subject": "s", "start_at": OVER_UTC}]}}, 422, "start_at"),
    ("range", "filter date-time past UTC", "get", f"/api/v1/account?created_at[gt]={_q(OVER_UTC)}", {}, 400,
     "created_at"),
    ("range", "_audit since past UTC", "get", f"/api/v1/_audit?since={_q(OVER_UTC)}", {}, 400, "since"),
    ("range", "_audit until before UTC", "get", f"/api/v1/_audit?until={_q(UNDER_UTC)}", {}, 400, "until"),
    ("encoding", "_audit until empty (not a date-time)", "get", "/api/v1/_audit?until=", {}, 400, "until"),
    ("encoding", "_audit limit empty (not a whole number)", "get", "/api/v1/_audit?limit=", {}, 400, "limit"),
    ("encoding", "list limit empty (not a whole number)", "get", "/api/v1/account?limit=", {}, 400, "limit"),
    ("range", "_audit user beyond 64 bits", "get", "/api/v1/_audit?user=9223372036854775808", {}, 400, "user"),
    ("range", "_bulk update id 2^63", "post", "/api/v1/account/_bulk",
     {"json": {"mode": "update", "records": [{"id": 2**63, "name": "x"}]}}, 422, "id"),
    ("range", "_bulk update id 2^64", "post", "/api/v1/account/_bulk",
     {"json": {"mode": "update", "records": [{"id": 2**64, "name": "x"}]}}, 422, "id"),
    ("range", "POST body integer past 64 bits", "post", "/api/v1/account",
     {"json": {"name": "n", "employees": 2**64}}, 422, "employees"),
    ("range", "POST body lookup id 2^63", "post", "/api/v1/account",
     {"json": {"name": "n", "parent_account": 2**63}}, 422, "parent_account"),
    ("range", "filter integer past 64 bits", "get", "/api/v1/account?employees=99999999999999999999", {}, 400,
     "employees"),
    ("range", "filter id past 64 bits", "get", "/api/v1/account?id=9223372036854775808", {}, 400, "id"),
    ("range", "where integer literal 2^63", "get", "/api/v1/account?where=" + _q("employees = 9223372036854775808"),
     {}, 400, "where"),
    ("range", "where integer literal 10^20", "get", "/api/v1/account?where=" + _q("employees > 99999999999999999999"),
     {}, 400, "where"),
    ("range", "where id literal 2^63", "get", "/api/v1/account?where=" + _q("id = 9223372036854775808"), {}, 400,
     "where"),
    ("range", "where decimal literal 1e400", "get", "/api/v1/account?where=" + _q("annual_revenue > 1" + "0" * 400),
     {}, 400, "where"),
    ("range", "where decimal literal 19 decimals", "get", "/api/v1/account?where=" + _q("annual_revenue > 0." + "0" * 19
                                                                                       + "1"), {}, 400, "where"),
    ("range", "limit past its range", "get", "/api/v1/account?limit=" + "9" * 5000, {}, 400, "limit"),
    ("range", "offset past 64 bits", "get", "/api/v1/account?offset=18446744073709551616", {}, 400, "offset"),
    ("range", "_export where literal 2^63", "get", "/api/v1/account/_export?where=" + _q("employees = 9223372036854775808"),
     {}, 400, "where"),
    # -- size ---------------------------------------------------------------------------------
    ("size", "where longer than the cap", "get", "/api/v1/account?where=" + _q("name = '" + "a" * 10_000 + "'"), {},
     400, "where"),
    ("size", "where wider than the cap", "get", f"/api/v1/account?where={_q(WIDE)}", {}, 400, "where"),
    ("size", "filter in over 1000 values", "get", "/api/v1/account?employees[in]=" + ",".join(["1"] * 1001), {}, 400,
     "employees"),
    ("size", "POST body text over max_length", "post", "/api/v1/account", {"json": {"name": "a" * 256}}, 422, "name"),
    ("size", "_search q over 200 characters", "get", "/api/v1/_search?q=" + "a" * 201, {}, 400, None),
    ("size", "Idempotency-Key over 255 characters", "post", "/api/v1/account",
     {"json": {"name": "x"}, "headers": {"Idempotency-Key": "k" * 256}}, 400, None),
]


@pytest.fixture
def site(api):
    """The API with one account and one activity, and the row counts of every table."""
    account = api.post("/api/v1/account", json={"name": "Seed"}).json
    activity = api.post("/api/v1/activity", json={"subject": "Seed call"}).json
    api.ids = {"account": account["id"], "activity": activity["id"]}
    return api


def _counts(api) -> dict[str, int]:
    """Rows of every table but the audit log (which records that an admin wrote, or tried to), once
    the automation runs queued so far have finished (an event: the runner's queue is empty)."""
    assert api.rt.workflow.runner.drain(timeout=60)
    tables = [t for name, t in api.rt.records.metadata.tables.items() if name != "_crm_audit"]
    with api.rt.db.read() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in tables}


def _fill(value, ids: dict):
    if isinstance(value, str):
        return value.replace("{account}", str(ids["account"])).replace("{activity}", str(ids["activity"]))
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.mark.parametrize("kind, door, method, path, kwargs, status, named",
                         CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_bad_input_is_a_4xx_naming_it_writes_nothing_and_the_server_stays_healthy(
        site, kind, door, method, path, kwargs, status, named):
    before = _counts(site)
    answer = getattr(site, method)(_fill(path, site.ids), **_fill(kwargs, site.ids))
    assert answer.status_code == status, answer.get_data(as_text=True)[:500]
    body = answer.get_json()
    if "_bulk" in path and status == 422:   # the bulk call answers per item
        assert answer.mimetype == "application/json"
        names = {e["field"] for item in body["items"] for e in item.get("errors", [])}
    else:
        assert answer.mimetype == PROBLEM and body["status"] == status and body["detail"]
        names = {e.get("field") for e in body.get("errors", [])}
    if named is not None:
        assert named in names, body
    assert _counts(site) == before
    healthy = site.get(f"/api/v1/account/{site.ids['account']}")
    assert healthy.status_code == 200 and healthy.json["name"] == "Seed"


def test_where_just_under_the_caps_still_runs_on_the_database(site):
    """The caps refuse only what is beyond them: the deepest and the widest allowed run."""
    deepest = "UPPER(" * 28 + "name" + ")" * 28 + " = 'SEED'"
    doubling = "ABS(" * 8 + "employees" + ")" * 8 + " >= 0"
    chain = "employees" + " + 1" * 28 + " > 0"
    widest = "employees IN (" + ", ".join(str(i) for i in range(1, 1000)) + ")"
    site.patch(f"/api/v1/account/{site.ids['account']}", json={"employees": 5})
    for where in (deepest, doubling, chain, widest):
        answer = site.get("/api/v1/account?where=" + _q(where))
        assert answer.status_code == 200, answer.json
        assert [r["name"] for r in answer.json["data"]] == ["Seed"]


def test_import_through_the_record_service_refuses_nul_and_lone_surrogates(site):
    """The text type refuses them for every door, not only the API's JSON reader."""
    from engine.storage.errors import ValidationFailed

    before = _counts(site)
    for bad in ("a\x00b", "a\ud800b"):
        with pytest.raises(ValidationFailed) as caught:
            site.rt.records.create("account", {"name": bad}, context=Context(system=True))
        assert [e.field for e in caught.value.errors] == ["name"]
    assert _counts(site) == before


# -- gunicorn's own answers -----------------------------------------------------------------------

BOOT_SECONDS = 90


@pytest.fixture
def gunicorn(crm, database_url, tmp_path):
    """A real gunicorn with ``-c python:engine.serving`` on this test's database: (base url, headers)."""
    user = crm.records.create("user", {"name": "Gun", "email": "gun@example.com", "role": "admin"},
                              context=Context(system=True))
    _, token = create_token(crm.records, user["id"], "faults")
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "CRM_PLUGIN_DIRS": "", "CRM_VAR_DIR": str(tmp_path),
           "CRM_BACKUP_DIR": str(tmp_path / "backups"), "SECRET_KEY": "test"}
    command = [str(Path(sys.executable).with_name("gunicorn")), "-c", "python:engine.serving", "-w", "1",
               "-b", f"127.0.0.1:{port}", "--control-socket", str(tmp_path / "gunicorn.ctl"),
               "engine.app:create_app()"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_output(proc, "Booting worker", BOOT_SECONDS)
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


SERVER_LIMITS = [
    ("size", "request line", {"path": "/api/v1/account?where=" + "a" * 5000}, 414, "request-line"),
    ("size", "one header", {"headers": {"X-Big": "b" * 9000}}, 431, "headers"),
    ("size", "too many headers", {"headers": {f"X-H{i}": "v" for i in range(120)}}, 431, "headers"),
]


@pytest.mark.parametrize("kind, door, request_parts, status, named", SERVER_LIMITS,
                         ids=[f"{c[0]}:{c[1]}" for c in SERVER_LIMITS])
def test_what_gunicorn_refuses_itself_is_problem_json(gunicorn, kind, door, request_parts, status, named):
    base, headers = gunicorn
    answer = httpx.get(base + request_parts.get("path", "/api/v1/account"),
                       headers={**headers, **request_parts.get("headers", {})}, timeout=60)
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["status"] == status and body["detail"] and named in {e["field"] for e in body["errors"]}
    healthy = httpx.get(base + "/api/v1/account", headers=headers, timeout=60)
    assert healthy.status_code == 200 and json.loads(healthy.text)["data"] == []
