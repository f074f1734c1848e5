"""Server-side tests of the web UI's pages through Flask's test client (the real-browser tests are in
tests/ui/): every screen of every entity renders in English and Chinese for every role of the base
CRM, answering 403/404 where the role or its scope says so; what users type is escaped everywhere;
anonymous visitors are sent to the login; CSRF; lists (filter builder, where=, sort links, saved
views, bulk actions, export, pages); record pages (related lists, transitions, field history,
notifications); kanban moves; made-up URLs.
"""

from __future__ import annotations

import csv
import html
import io
import re
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
import yaml

from engine.security.permissions import access_for
from engine.settings import ROOT
from engine.storage.query import ListQuery
from engine.storage.records import Context
from engine.storage.search import search


pytest.register_assert_rewrite("tests.ui_kit")   # before its import: helpers assert too
from .ui_kit import SYSTEM, base_entities, esc, form_fields, input_value, query_of, row_ids, text, textarea_value  # noqa: E402

pytest_plugins = ("tests.ui_kit",)   # the fixtures site, shared_site and admin

ENTITIES = base_entities()
ROLES = {doc["role"]: doc for doc in yaml.safe_load_all((ROOT / "configs/industries/base/roles.yaml").read_text())}
XSS = """<script>alert(1)</script>"'&"""
RAW = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def allowed(role: str, entity: str) -> set[str]:
    """The operations ``role`` has on ``entity``, straight from roles.yaml (admin: all)."""
    if role == "admin":
        return {"read", "create", "update", "delete", "export"}
    doc = ROLES[role]
    grant = (doc.get("entities") or {}).get(entity, doc.get("default")) or {}
    ops = set(grant.get("allow") or ())
    return ops | {"read"} if ops else ops


def context_of(site, user: dict) -> Context:
    return Context(user_id=user["id"], access=access_for(site.records, user["id"]))


def flash(browser, response) -> str:
    """The message a redirect leaves for the next page."""
    assert response.status_code == 302, (response.status_code, text(response)[-1500:])
    page = text(browser.get(response.location))
    found = re.search(r'id="flash">(.*?)</div>', page, re.S)
    return html.unescape(found.group(1)) if found else ""


def future(days: int = 30) -> date:
    return date.today() + timedelta(days=days)


def new_opportunity(site, **values) -> dict:
    account = site.records.query("account", limit=1)[0]
    return site.records.create("opportunity", {"name": "Deal", "account": account["id"], "close_date": future(),
                                               **values}, context=SYSTEM)


# -- 1. every screen of every entity ----------------------------------------------------------------

def _walk(site, browser, entity: str, role: str, user: dict) -> list[tuple[str, int, str]]:
    """Every page of ``entity`` for ``browser``: [(url, status, body)]."""
    rt = site.rt
    ent = rt.model.entity(entity)
    ops = allowed(role, entity)
    seen = []

    def fetch(url: str, expected: int) -> str:
        r = browser.get(url)
        body = text(r)
        seen.append((url, r.status_code, body))
        assert r.status_code == expected, (role, url, r.status_code, body[-1500:])
        return body

    list_page = fetch(f"/ui/{entity}", 200 if "read" in ops else 403)
    fetch(f"/ui/{entity}/new", 200 if "create" in ops else 403)
    if ent.layouts.get("kanban"):
        kanban = fetch(f"/ui/{entity}/kanban", 200 if "read" in ops else 403)
    any_record = site.records.query(entity, limit=1)
    if "read" not in ops:
        if any_record:
            fetch(f"/ui/{entity}/{any_record[0]['id']}", 403)
            fetch(f"/ui/{entity}/{any_record[0]['id']}/edit", 403)
        return seen
    mine = site.records.list(ListQuery(entity, limit=1000, count=True), context=context_of(site, user))
    # the list shows the first page of what the user may see, with the count
    shown = row_ids(list_page)
    assert len(shown) == min(mine.total, 25) and set(shown) <= {r["id"] for r in mine.records}, (role, entity)
    total = re.search(r'id="total">([^<]*)<', list_page).group(1)
    assert re.findall(r"[\d,]+", total) == [f"{mine.total:,}"], (role, entity, total)
    if ent.layouts.get("kanban"):
        lanes = re.findall(r'class="kanban-lane[^"]*" data-value="([^"]*)"', kanban)
        assert lanes == [o.value for o in ent.fields[ent.layouts["kanban"]["group_by"]].options]
        counts = [int(n) for n in re.findall(r'lane-count">(\d+)<', kanban)]
        assert sum(counts) == mine.total, (role, entity, counts)
    workflow = site.rt.workflow.specs.workflows.get(entity) if site.rt.workflow else None
    for record in mine.records[:3]:
        page = fetch(f"/ui/{entity}/{record['id']}", 200)
        title = record.get(ent.title)
        if title not in (None, "") and ent.fields[ent.title].type_name in ("text", "email", "autonumber"):
            assert f'id="record-title">{esc(title)}<' in page, (entity, title)
        edit = fetch(f"/ui/{entity}/{record['id']}/edit", 200 if "update" in ops else 403)
        if "update" in ops:
            assert input_value(edit, "version") == str(record["version"])
        for t in workflow.transitions if workflow else ():
            fetch(f"/ui/{entity}/{record['id']}/transition/{t.name}", 200 if "update" in ops else 403)
    visible = {r["id"] for r in mine.records}
    out_of_scope = [r["id"] for r in site.records.query(entity, limit=1000) if r["id"] not in visible]
    if out_of_scope:
        fetch(f"/ui/{entity}/{out_of_scope[0]}", 404)   # out of the user's scope: as if it did not exist
    return seen


@pytest.mark.parametrize("entity", ENTITIES)
@pytest.mark.parametrize("role", ["admin", *sorted(ROLES)])
def test_every_page_of_every_entity_renders_in_english_and_chinese(shared_site, role, entity):
    site = shared_site
    user = site.users[role]
    browser = site.browser(user)
    ent = site.rt.model.entity(entity)
    for lang in ("en", "zh"):
        browser.lang(lang)
        for url, status, body in _walk(site, browser, entity, role, user):
            assert status in (200, 403, 404) and "Traceback" not in body, (url, status)
            if status == 200:
                assert f'<html lang="{"zh-CN" if lang == "zh" else "en"}">' in body, (url, lang)
                if url == f"/ui/{entity}":
                    assert esc(ent.plural.get(lang)) in body, (url, lang)


@pytest.mark.parametrize("role", ["admin", *sorted(ROLES)])
def test_home_search_notifications_and_every_dashboard_render(shared_site, role):
    site = shared_site
    user = site.users[role]
    browser = site.browser(user)
    a_name = site.records.query("account", order_by=("id",), limit=1)[0]["name"]
    word = a_name.split()[0].strip(",")
    for lang in ("en", "zh"):
        browser.lang(lang)
        home = browser.get("/")
        assert home.status_code == 200
        for entity in ENTITIES:   # the navigation links exactly the entities the role may read
            assert (f'href="/ui/{entity}"' in text(home)) == ("read" in allowed(role, entity)), (role, entity)
        found = browser.get(f"/ui/search?q={word}")
        assert found.status_code == 200
        # the results are what the search finds with the user's rights, each linked to its page
        expected = {(e, r["id"]) for e, r in search(site.records, word, context_of(site, user), limit=10)}
        shown = {(e, int(i)) for e, i in re.findall(r'<li><a href="/ui/(\w+)/(\d+)">', text(found))}
        assert shown == expected, (role, word)
        assert (role != "admin") or ("account", site.records.query("account", order_by=("id",), limit=1)[0]["id"]) in shown
        assert browser.get("/ui/notifications").status_code == 200
        assert site.rt.extensions["dashboards"], "the base CRM declares dashboards"
        for name, dashboard in site.rt.extensions["dashboards"].items():
            readable = any("read" in allowed(role, w.entity) for w in dashboard.widgets)
            r = browser.get(f"/ui/dashboards/{name}")
            assert r.status_code == (200 if readable else 403), (role, name, text(r)[-1000:])
            if readable:
                assert text(r).count("<svg") >= 1 and esc(dashboard.label.get(lang)) in text(r)
        assert browser.get("/ui/dashboards/no_such_dashboard").status_code == 404
        assert browser.get("/ui/no_such_entity").status_code == 404


def test_notifications_are_the_users_own_and_can_be_marked_read(site):
    account = site.records.create("account", {"name": "Notified & Co", "owner_id": site.sales["id"]}, context=SYSTEM)
    case = site.records.query("case", order_by=("id",), limit=1)[0]

    def notify(user, message, record=None):   # as the notify action makes them: owned by the recipient
        return site.records.create("notification", {"user": user["id"], "owner_id": user["id"], "message": message,
                                                    "record": record}, context=SYSTEM)

    about_account = notify(site.sales, "About an account", {"entity": "account", "id": account["id"]})
    notify(site.sales, "About a case", {"entity": "case", "id": case["id"]})
    theirs = notify(site.admin, "For the admin only")
    sales = site.browser(site.sales)
    page = text(sales.get("/ui/notifications"))
    assert re.findall(r'<div class="me-auto"><div>([^<]*)', page) == ["About a case", "About an account"]
    assert re.search(r'id="nav-notifications"[^>]*>(?:<span class="d-xl-none">[^<]*</span>)? <span class="badge bg-danger">2</span>', page)
    # a link to the account; the case (sales may not read cases) is named, not linked
    assert f'<a href="/ui/account/{account["id"]}">{esc(account["name"])}</a>' in page
    assert f'href="/ui/case/{case["id"]}"' not in page
    r = sales.post(f"/ui/notifications/{about_account['id']}/read", {})
    assert r.status_code == 302 and r.location == "/ui/notifications"
    assert site.records.get("notification", about_account["id"])["read"] is True
    assert re.search(r'id="nav-notifications"[^>]*>(?:<span class="d-xl-none">[^<]*</span>)? <span class="badge bg-danger">1</span>', text(sales.get("/")))
    assert sales.post(f"/ui/notifications/{theirs['id']}/read", {}).status_code == 404
    assert site.records.get("notification", theirs["id"])["read"] is False


# -- 2. escaping ------------------------------------------------------------------------------------

def _poison(site) -> dict[str, tuple[int, set[str]]]:
    """XSS in every stored text/textarea field (that can hold it) of the first record of every
    entity: {entity: (record id, fields written)}."""
    done = {}
    for ent in site.rt.model.entities.values():
        first = site.records.query(ent.name, order_by=("id",), limit=1)
        if not first:
            continue
        values = {}
        for f in ent.fields.values():
            if f.type_name in ("text", "textarea") and f.stored and not f.readonly and not f.prop("encrypted"):
                value = XSS + (f" {ent.name}" if f.unique else "")
                if len(value) <= int(f.prop("max_length") or 255):
                    values[f.name] = value
        if values:
            site.records.update(ent.name, first[0]["id"], values, context=SYSTEM)
            done[ent.name] = (first[0]["id"], set(values))
    return done


def test_what_users_typed_is_escaped_on_every_page(site, admin):
    written = _poison(site)
    poisoned = {entity: record_id for entity, (record_id, _fields) in written.items()}
    assert {"account", "opportunity", "contact", "user"} <= set(poisoned)
    # the owner of the open deals is named <script>..., which the sales dashboard's bar chart shows
    owner = site.records.get("opportunity", poisoned["opportunity"])["owner_id"]
    site.records.update("user", owner, {"name": XSS}, context=SYSTEM)
    site.records.create("notification", {"user": site.admin["id"], "message": XSS,
                                         "record": {"entity": "account", "id": poisoned["account"]}}, context=SYSTEM)
    pages = {}
    for entity, record_id in poisoned.items():
        ent = site.rt.model.entity(entity)
        urls = [f"/ui/{entity}?size=100", f"/ui/{entity}/{record_id}", f"/ui/{entity}/{record_id}/edit"]
        if ent.layouts.get("kanban"):
            urls.append(f"/ui/{entity}/kanban")
        for url in urls:
            pages[url] = admin.get(url)
        edit = text(pages[f"/ui/{entity}/{record_id}/edit"])
        for name in written[entity][1]:   # every input holds the value exactly (attributes are quoted right)
            f = ent.fields[name]
            if f"f-{name}" in edit and not f.unique:
                got = input_value(edit, name) if f.type_name == "text" else textarea_value(edit, name)
                assert got == XSS, (entity, name)
    for url in ("/ui/search?q=alert(1)", "/ui/notifications", "/", *(f"/ui/dashboards/{d}" for d in site.rt.extensions["dashboards"]),
                f"/ui/search?q={RAW}", f"/ui/account?where={RAW}", f"/ui/account?problem={RAW}",
                f"/ui/account?sort={RAW}"):
        pages[url] = admin.get(url)
    for url, r in pages.items():
        body = text(r)
        assert r.status_code == 200, (url, r.status_code)
        assert RAW not in body, url
    must_show = [f"/ui/{e}/{i}" for e, i in poisoned.items()] + [f"/ui/{e}/{i}/edit" for e, i in poisoned.items()] + [
        "/ui/account?size=100", "/ui/opportunity?size=100", "/ui/contact?size=100", "/ui/opportunity/kanban",
        "/ui/search?q=alert(1)", "/ui/notifications", "/ui/dashboards/sales", f"/ui/search?q={RAW}",
        f"/ui/account?where={RAW}", f"/ui/account?problem={RAW}"]
    for url in must_show:
        assert ESCAPED in text(pages[url]), url
    # the type-ahead answers data: JSON, the title exactly as stored
    r = admin.get("/ui/account/_lookup?q=alert(1)")
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert {"id": poisoned["account"], "title": XSS} in r.get_json()


# -- 3. anonymous visitors, CSRF ----------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_the_login_and_json_endpoints_answer_401(site):
    anonymous = site.browser()
    record = site.records.query("opportunity", limit=1)[0]["id"]
    pages = ["/", "/ui/search?q=ab", "/ui/notifications", "/ui/dashboards/sales", f"/ui/opportunity/{record}/transition/lose"]
    for entity in ENTITIES:
        pages += [f"/ui/{entity}", f"/ui/{entity}/new", f"/ui/{entity}/1", f"/ui/{entity}/1/edit",
                  f"/ui/{entity}/kanban", f"/ui/{entity}?where=id+%3E+1&sort=-id"]
    for url in pages:
        r = anonymous.get(url)
        assert r.status_code == 302, url
        assert r.location.startswith("/login?"), (url, r.location)
        assert query_of(r.location)["next"] == [url], (url, r.location)
    for entity in ("opportunity", "account"):
        assert anonymous.get(f"/ui/{entity}/_lookup?q=a").status_code == 401
        assert anonymous.post_json(f"/ui/{entity}/_form_state", {"values": {}}, csrf=False).status_code == 401
    r = anonymous.post_json(f"/ui/opportunity/{record}/_move", {"to": "qualification"}, csrf=False)
    assert r.status_code == 401 and r.is_json and r.get_json()["error"]
    assert site.records.get("opportunity", record)["version"] == 1
    # and the login brings the visitor back where they were going
    login = anonymous.get("/login?next=/ui/opportunity?sort=-amount")
    token = re.search(r'name="csrf_token" value="([^"]+)"', text(login)).group(1)
    assert input_value(text(login), "next") == "/ui/opportunity?sort=-amount"
    r = anonymous.client.post("/login", data={"email": site.admin["email"], "password": "correct horse 1",
                                              "csrf_token": token, "next": "/ui/opportunity?sort=-amount"})
    assert r.status_code == 302 and r.location == "/ui/opportunity?sort=-amount"


def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(site, admin):
    counts = {e: len(site.records.query(e, limit=10_000)) for e in ("account", "lead", "opportunity")}
    opp = site.records.query("opportunity", limit=1)[0]
    lead = site.records.query("lead", limit=1)[0]
    attempts = [("/ui/account/new", {"name": "No token Inc"}),
                (f"/ui/opportunity/{opp['id']}/edit", {"name": "Changed", "version": str(opp["version"])}),
                (f"/ui/opportunity/{opp['id']}/delete", {"version": str(opp["version"])}),
                (f"/ui/opportunity/{opp['id']}/transition/lose", {"lost_reason": "price"}),
                ("/ui/lead/_bulk", {"action": "delete", "ids": str(lead["id"])}),
                ("/ui/lead/_views", {"name": "Mine", "where": ""})]
    for url, data in attempts:
        for token in (None, "forged-token"):
            sent = dict(data, **({"csrf_token": token} if token else {}))
            r = admin.post(url, sent, csrf=False)
            assert r.status_code == 403 and "CSRF token missing or invalid" in text(r), (url, token)
    for url, body in ((f"/ui/opportunity/{opp['id']}/_move", {"to": "qualification"}),
                      ("/ui/opportunity/_form_state", {"values": {"stage": "lost"}})):
        assert admin.post_json(url, body, csrf=False).status_code == 403, url
    assert {e: len(site.records.query(e, limit=10_000)) for e in counts} == counts
    assert site.records.get("opportunity", opp["id"]) == opp
    assert admin.get("/ui/lead").status_code == 200 and "Mine" not in text(admin.get("/ui/lead"))
    # an anonymous form post is refused the same way
    anonymous = site.browser()
    assert anonymous.post("/ui/account/new", {"name": "Anon Inc"}, csrf=False).status_code == 403
    assert len(site.records.query("account", limit=10_000)) == counts["account"]


# -- 5. lists -----------------------------------------------------------------------------------------

@pytest.fixture
def deals(site):
    """Twelve opportunities of one account, with known stages and amounts (and a few blanks)."""
    account = site.records.create("account", {"name": "Deals Account"}, context=SYSTEM)
    rows = []
    for i in range(12):
        stage = ["prospecting", "won", "lost", "qualification"][i % 4]
        rows.append({"name": f"Listed {i:02d}", "account": account["id"], "close_date": future(i), "stage": stage,
                     "amount": None if i % 6 == 0 else Decimal(500 * i), "lost_reason": "price" if stage == "lost" else None})
    result = site.records.bulk("opportunity", rows, mode="create", atomic=True, context=SYSTEM)
    assert result.ok
    return [site.records.get("opportunity", item["id"]) for item in result.items]


def test_the_filter_builder_writes_a_where_condition_and_the_page_shows_what_it_matches(site, admin, deals):
    r = admin.get("/ui/opportunity?ff=stage&fo=eq&fv=won&ff=amount&fo=gt&fv=1000&ff=&fo=eq&fv=&sort=-amount")
    assert r.status_code == 302
    params = query_of(r.location)
    assert params["where"] == ["(stage = 'won') AND (amount > 1000.00)"] and params["sort"] == ["-amount"]
    page = text(admin.get(r.location + "&size=100"))
    expected = [o for o in site.records.query("opportunity", limit=10_000)
                if o["stage"] == "won" and o["amount"] is not None and o["amount"] > 1000]
    assert len(expected) >= 2
    assert row_ids(page) == [o["id"] for o in sorted(expected, key=lambda o: o["amount"], reverse=True)]
    assert 'id="current-where">(stage = &#39;won&#39;) AND (amount &gt; 1000.00)<' in page
    # "keep" adds a row to the condition already applied
    r = admin.get("/ui/opportunity?" + "&".join(["keep=1", "where=stage+%3D+%27won%27", "ff=name", "fo=begins", "fv=Listed"]))
    assert query_of(r.location)["where"] == ["(stage = 'won') AND (BEGINS(name, 'Listed'))"]


@pytest.mark.parametrize("typed, decoy", [
    ("O'Brien \\ \"quoted\"", "O'Brien  \"quoted\""),
    ("x' OR 1=1 OR name = '", "x OR 1=1 OR name = "),
    ("back\\'slash", "back'slash"),
    ("tab\there", "tab here"),
])
def test_a_filter_value_is_a_literal_never_syntax(site, admin, typed, decoy):
    account = site.records.query("account", limit=1)[0]["id"]
    exact = site.records.create("opportunity", {"name": typed, "account": account, "close_date": future()}, context=SYSTEM)
    site.records.create("opportunity", {"name": decoy, "account": account, "close_date": future()}, context=SYSTEM)
    for op, expected in (("eq", [exact["id"]]), ("contains", [exact["id"]]), ("ne", None)):
        r = admin.get("/ui/opportunity", query_string={"ff": "name", "fo": op, "fv": typed})
        assert r.status_code == 302 and "problem" not in query_of(r.location), r.location
        page = admin.get(r.location + "&size=100")
        body = text(page)
        assert page.status_code == 200 and 'id="list-error"' not in body, body[-1500:]
        if expected is not None:
            assert row_ids(body) == expected, (op, typed)
        else:
            everything = {o["id"] for o in site.records.query("opportunity", limit=10_000)}
            assert set(row_ids(body)) == everything - {exact["id"]}


@pytest.mark.parametrize("where, message", [
    ("stage = ", "ends too early"),
    ("no_such_field = 1", "has no field"),
    ("stage = 1", "cannot compare"),
    ("'unterminated", "no closing"),
    ("amount > 'x' AND", ""),
])
def test_a_bad_where_shows_the_problem_not_a_server_error(admin, where, message):
    r = admin.get("/ui/opportunity", query_string={"where": where})
    body = text(r)
    assert r.status_code == 200
    error = re.search(r'id="list-error">(.*?)</div>', body, re.S)
    assert error and message in html.unescape(error.group(1)), body[-1500:]
    assert row_ids(body) == []
    kanban = admin.get("/ui/opportunity/kanban", query_string={"where": where})
    assert kanban.status_code == 200 and 'class="alert alert-danger" role="alert">' in text(kanban)


def test_made_up_urls_and_odd_inputs_never_fail_on_the_server(site, admin):
    big = "99999999999999999999"   # beyond 64 bits
    for url in (f"/ui/account/{big}", f"/ui/account/{big}/edit", f"/ui/opportunity/{big}/transition/lose",
                "/ui/opportunity/1/transition/no_such", "/ui/no_such", "/ui/no_such/1", "/ui/dashboards/no_such"):
        assert admin.get(url).status_code == 404, url
    for url in (f"/ui/account/_lookup?q={big}", f"/ui/contact/new?account={big}", "/ui/opportunity?cursor=garbage",
                "/ui/opportunity?cursor=eyJ4IjoxfQ", "/ui/opportunity?size=7", "/ui/opportunity?size=x",
                "/ui/opportunity?sort=,,", "/ui/opportunity?sort=-no_such", "/ui/opportunity?where=" + "x" * 5000,
                "/ui/search?q=%25_%27", "/ui/search?q=" + "y" * 300, "/ui/search?q=a",
                "/ui/activity/new?related_to=no_such%3A1", "/ui/opportunity/new?stage=bogus&amount=x&close_date=x",
                "/ui/opportunity?size=%C2%B2", "/ui/account/_lookup?q=%C2%B2", "/ui/contact/new?account=%D9%A3"):
        r = admin.get(url)
        assert r.status_code == 200, (url, r.status_code)
    for url, body in ((f"/ui/opportunity/{big}/_move", {"to": "proposal"}),
                      ("/ui/opportunity/_form_state", {"id": int(big), "values": {}})):
        assert admin.post_json(url, body).status_code == 404, url
    for url in (f"/ui/notifications/{big}/read", f"/ui/account/{big}/delete"):
        assert admin.post(url, {}).status_code == 404, url
    assert admin.post(f"/ui/opportunity/_views/{big}/delete", {}).status_code == 302
    assert admin.post("/ui/lead/_bulk", {"action": "delete", "ids": big}).status_code == 302
    assert admin.post("/ui/lead/_bulk", {"action": "delete", "ids": "\u00b2"}).status_code == 302
    assert admin.post("/ui/contact/new", {"last_name": "Big", "account": big}).status_code == 422


def test_a_where_with_a_number_beyond_64_bits_is_an_error_message(admin):
    admin.client.application.testing = True   # let a server exception reach the test
    r = admin.get("/ui/account?where=id+%3D+99999999999999999999")
    api = admin.get("/api/v1/account?where=id+%3D+99999999999999999999")
    # integers stop at 2**63 - 1 in every database: said so alike on both, not a driver error
    assert r.status_code == 200 and "too large for the database" in text(r)
    assert api.status_code == 400 and "too large" in api.get_json()["detail"]


@pytest.mark.parametrize("query, problem", [
    ("ff=amount&fo=gt&fv=lots", "amount: 'lots' is not a number"),
    ("ff=stage&fo=gt&fv=won", "stage: the operator 'gt' does not apply to a picklist field"),
    ("ff=stage&fo=eq&fv=nope", "stage: 'nope' is not one of its values"),
    ("ff=no_such&fo=eq&fv=1", "no_such: unknown field"),
    ("ff=owner_id&fo=eq&fv=someone", "owner_id: expected a record id (a number)"),
    ("ff=owner_id&fo=eq&fv=%C2%B2", "owner_id: expected a record id (a number)"),
    ("ff=owner_id&fo=eq&fv=99999999999999999999", "owner_id: expected a record id (a number)"),
    ("ff=close_date&fo=gt&fv=2026-13-01", "close_date: '2026-13-01' is not a date"),
])
def test_a_filter_row_that_cannot_be_a_condition_is_named(admin, query, problem):
    r = admin.get(f"/ui/opportunity?{query}")
    assert r.status_code == 302 and query_of(r.location).get("problem", [""])[0].startswith(problem), r.location
    page = text(admin.get(r.location))
    shown = re.search(r'class="alert alert-warning" role="alert">(.*?)</div>', page, re.S)
    assert shown and html.unescape(shown.group(1)).startswith(problem)


def test_a_date_time_filter_without_an_offset_is_utc_as_the_ui_shows_it(site, admin, deals):
    created = deals[0]["created_at"]
    day = created.date().isoformat()
    for typed in (day, f"{day}T00:00", f"{day} 00:00", f"{day}T00:00:00+00:00"):
        r = admin.get("/ui/opportunity", query_string={"ff": "created_at", "fo": "gte", "fv": typed})
        assert "problem" not in query_of(r.location), (typed, r.location)
        assert deals[0]["id"] in row_ids(text(admin.get(r.location + "&size=100"))), typed
    tomorrow = (created.date() + timedelta(days=1)).isoformat()
    r = admin.get("/ui/opportunity", query_string={"ff": "created_at", "fo": "gte", "fv": tomorrow})
    assert row_ids(text(admin.get(r.location))) == []


def test_the_column_header_links_sort_the_list_both_ways(site, admin, deals):
    base = "/ui/opportunity?where=BEGINS(name,+'Listed')+AND+NOT(ISBLANK(amount))"
    page = text(admin.get(base))
    links = dict((f, html.unescape(u)) for u, f in
                 re.findall(r'class="sort-link[^"]*" href="([^"]+)" data-field="([^"]+)"', page))
    assert {"name", "amount", "close_date", "stage"} <= set(links)
    with_amount = [o for o in deals if o["amount"] is not None]
    ascending = text(admin.get(links["amount"]))
    assert row_ids(ascending) == [o["id"] for o in sorted(with_amount, key=lambda o: (o["amount"], o["id"]))]
    assert query_of(links["amount"])["where"] == query_of(base)["where"]   # the filter stays
    again = dict((f, html.unescape(u)) for u, f in
                 re.findall(r'class="sort-link[^"]*" href="([^"]+)" data-field="([^"]+)"', ascending))
    descending = text(admin.get(again["amount"]))
    assert query_of(again["amount"])["sort"] == ["-amount"]
    assert row_ids(descending) == [o["id"] for o in sorted(with_amount, key=lambda o: (-o["amount"], -o["id"]))]
    by_name = text(admin.get(links["name"]))
    assert row_ids(by_name) == [o["id"] for o in sorted(with_amount, key=lambda o: o["name"])]


def test_a_saved_view_belongs_to_its_user(site, admin, deals):
    r = admin.post("/ui/opportunity/_views", {"name": "Won <big>", "where": "stage = 'won'", "sort": "-amount"})
    assert r.status_code == 302
    view_id = query_of(r.location)["view"][0]
    page = text(admin.get(r.location))
    menu = re.findall(r'class="dropdown-item saved-view" href="([^"]+)">([^<]*)</a>', page)
    assert [(html.unescape(u), html.unescape(n)) for u, n in menu] == [
        (f"/ui/opportunity?where=stage+%3D+%27won%27&sort=-amount&view={view_id}", "Won <big>")]
    won = [o["id"] for o in site.records.query("opportunity", limit=10_000) if o["stage"] == "won"]
    assert sorted(row_ids(text(admin.get(html.unescape(menu[0][0]) + "&size=100")))) == sorted(won)
    # saving again under the same name replaces it; a view that does not run is not saved
    admin.post("/ui/opportunity/_views", {"name": "Won <big>", "where": "stage = 'lost'", "sort": ""})
    r = admin.post("/ui/opportunity/_views", {"name": "Broken", "where": "stage =", "sort": ""})
    assert "problem" in query_of(r.location)
    r = admin.post("/ui/opportunity/_views", {"name": "", "where": "stage = 'won'", "sort": ""})
    assert query_of(r.location)["problem"] == ["Give the view a name."]
    names = re.findall(r'saved-view" href="[^"]*">([^<]*)<', text(admin.get("/ui/opportunity")))
    assert names == ["Won &lt;big&gt;"]
    assert "stage+%3D+%27lost%27" in text(admin.get("/ui/opportunity"))
    # another user neither sees nor deletes it
    sales = site.browser(site.sales)
    assert re.findall(r'saved-view', text(sales.get("/ui/opportunity"))) == []
    assert text(sales.get(f"/ui/opportunity?view={view_id}")).count("Delete view") == 0
    current = re.search(r'view=(\d+)', text(admin.get("/ui/opportunity"))).group(1)
    sales.post(f"/ui/opportunity/_views/{current}/delete", {})
    assert len(re.findall(r'saved-view"', text(admin.get("/ui/opportunity")))) == 1
    # its owner deletes it
    admin.post(f"/ui/opportunity/_views/{current}/delete", {})
    assert re.findall(r'saved-view"', text(admin.get("/ui/opportunity"))) == []


def test_bulk_delete_and_update_work_and_respect_permissions(site, admin):
    leads = [r["id"] for r in site.records.query("lead", order_by=("id",), limit=4)]
    r = admin.post("/ui/lead/_bulk", [("action", "update"), ("field", "status"), ("value", "working"),
                                      *(("ids", str(i)) for i in leads[:3])])
    assert flash(admin, r) == "Updated 3 record(s)."
    assert [site.records.get("lead", i)["status"] for i in leads[:3]] == ["working"] * 3
    r = admin.post("/ui/lead/_bulk", [("action", "update"), ("field", "status"), ("value", "bogus"), ("ids", str(leads[0]))])
    assert flash(admin, r).startswith(f"Updated 0 record(s). Not done: #{leads[0]}: status:")
    assert site.records.get("lead", leads[0])["status"] == "working"
    r = admin.post("/ui/lead/_bulk", [("action", "delete"), ("next", "/ui/lead?sort=id"), *(("ids", str(i)) for i in leads[:2])])
    assert r.location == "/ui/lead?sort=id"
    assert flash(admin, r) == "Deleted 2 record(s)."
    assert {r["id"] for r in site.records.query("lead", limit=10_000)} & set(leads) == set(leads[2:])
    assert flash(admin, admin.post("/ui/lead/_bulk", {"action": "delete"})) == "Select at least one record."
    assert flash(admin, admin.post("/ui/lead/_bulk", {"action": "explode", "ids": str(leads[2])})) == "Unknown action."
    assert flash(admin, admin.post("/ui/lead/_bulk", {"action": "update", "field": "id", "value": "9",
                                                      "ids": str(leads[2])})) == "Choose a field you may change."
    # sales may not delete accounts, nor change their annual revenue, nor touch another team's
    sales = site.browser(site.sales)
    outsider = site.user("south@example.com", "sales", team="south")
    theirs = site.records.create("account", {"name": "South Ltd", "owner_id": outsider["id"]}, context=SYSTEM)
    ours = site.records.create("account", {"name": "North Ltd", "owner_id": site.sales["id"]}, context=SYSTEM)
    accounts = len(site.records.query("account", limit=10_000))
    r = sales.post("/ui/account/_bulk", [("action", "delete"), ("ids", str(ours["id"])), ("ids", str(theirs["id"]))])
    assert r.status_code == 403
    assert len(site.records.query("account", limit=10_000)) == accounts
    r = sales.post("/ui/account/_bulk", {"action": "update", "field": "annual_revenue", "value": "1", "ids": str(ours["id"])})
    assert flash(sales, r) == "Choose a field you may change."
    r = sales.post("/ui/account/_bulk", [("action", "update"), ("field", "name"), ("value", "Renamed"),
                                        ("ids", str(ours["id"])), ("ids", str(theirs["id"]))])
    message = flash(sales, r)
    assert message.startswith("Updated 1 record(s). Not done:") and f"#{theirs['id']}" in message, message
    assert site.records.get("account", ours["id"])["name"] == "Renamed"
    assert site.records.get("account", theirs["id"])["name"] == "South Ltd"
    # a role that may not see the entity at all
    assert sales.post("/ui/case/_bulk", {"action": "delete", "ids": "1"}).status_code == 403


@pytest.mark.parametrize("typed, stored", [("yes", True), ("true", True), ("1", True), ("no", False),
                                           ("false", False), ("", False), ("maybe", None)])
def test_bulk_update_of_a_yes_no_field_reads_what_was_typed(site, admin, typed, stored):
    contacts = [c["id"] for c in site.records.query("contact", order_by=("id",), limit=2)]
    for cid, start in zip(contacts, (True, False)):
        site.records.update("contact", cid, {"do_not_call": start}, context=SYSTEM)
    r = admin.post("/ui/contact/_bulk", [("action", "update"), ("field", "do_not_call"), ("value", typed),
                                        *(("ids", str(i)) for i in contacts)])
    message = flash(admin, r)
    after = [site.records.get("contact", i)["do_not_call"] for i in contacts]
    if stored is None:   # not a yes or no: refused, nothing changed
        assert message.startswith("Updated 0 record(s). Not done:") and after == [True, False], message
    else:
        assert message == "Updated 2 record(s)." and after == [stored, stored]


def test_the_export_link_downloads_the_filtered_list_as_csv_with_the_session(site, admin, deals):
    page = text(admin.get("/ui/opportunity?where=stage+%3D+%27won%27&sort=-close_date"))
    link = html.unescape(re.search(r'id="export" href="([^"]+)"', page).group(1))
    assert link.startswith("/api/v1/opportunity/_export?")
    r = admin.get(link)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(text(r))))
    won = sorted((o for o in site.records.query("opportunity", limit=10_000) if o["stage"] == "won"),
                 key=lambda o: (o["close_date"], o["id"]), reverse=True)
    assert [int(row["ID"]) for row in rows] == [o["id"] for o in won]   # headers: the labels the list shows
    labels = {f.name: f.label.get("en") for f in site.rt.model.entity("opportunity").fields.values()}
    assert {labels["name"], labels["account"], labels["stage"], labels["amount"]} <= set(rows[0])
    won_label = next(o.label.get("en") for o in site.rt.model.entity("opportunity").fields["stage"].options if o.value == "won")
    assert {row[labels["stage"]] for row in rows} == {won_label} != {"won"}   # the option's label, not its value
    assert site.browser().get(link).status_code == 401   # not without a session
    # "Export selected": the page's script adds id[in]=<the ticked rows> to its base link
    selected = html.unescape(re.search(r'id="export-selected" href="[^"]+" data-base="([^"]+)"', page).group(1))
    chosen = [won[0]["id"], won[-1]["id"]]
    r = admin.get(selected + "&id%5Bin%5D=" + ",".join(map(str, chosen)))
    assert r.status_code == 200 and sorted(int(row["ID"]) for row in csv.DictReader(io.StringIO(text(r)))) == sorted(chosen)
    # a role without export has no link
    service = site.user("svc@example.com", "service")
    assert 'id="export"' not in text(site.browser(service).get("/ui/account"))
    assert 'id="export"' in text(site.browser(service).get("/ui/case"))


# -- 8. pages -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sort, where", [("-close_date", ""), ("stage", ""), ("-amount", ""), ("name", ""),
                                         ("owner_id", ""), ("-amount", "BEGINS(name, 'Paged') AND stage <> 'won'")])
def test_the_next_link_gives_the_next_page_without_repeating_rows(site, admin, sort, where):
    account = site.records.query("account", limit=1)[0]["id"]
    rows = [{"name": f"Paged {i:03d}", "account": account, "close_date": future(i % 5), "amount": None if i % 7 == 0 else i % 9,
             "stage": ["prospecting", "qualification"][i % 2], "owner_id": None if i % 3 else site.sales["id"]}
            for i in range(60)]
    assert site.records.bulk("opportunity", rows, mode="create", atomic=True, context=SYSTEM).ok
    expected = [o["id"] for o in site.records.query("opportunity", limit=10_000)
                if not where or (o["name"].startswith("Paged") and o["stage"] != "won")]
    total = len(expected)
    first = f"/ui/opportunity?{urlencode({'sort': sort, 'where': where} if where else {'sort': sort})}"
    seen, url, pages = [], first, 0
    while url:
        page = text(admin.get(url))
        ids = row_ids(page)
        assert len(ids) == (25 if pages < total // 25 else total % 25), (url, len(ids))
        assert not set(ids) & set(seen), url
        seen += ids
        pages += 1
        nxt = re.search(r'href="([^"]+)" id="next-page"', page)
        url = html.unescape(nxt.group(1)) if nxt else None
        if url:
            assert query_of(url)["sort"] == [sort] and query_of(url)["cursor"]
            assert query_of(url).get("where", [""]) == [where]
            assert "First page" in text(admin.get(url))
    assert sorted(seen) == sorted(expected)
    assert pages == -(-total // 25)
    # one page of 100 gives the same rows in the same order
    assert row_ids(text(admin.get(f"{first}&size=100"))) == seen[:100]


# -- 6. record page ----------------------------------------------------------------------------------

def test_related_lists_show_the_children_and_their_new_link_prefills_the_lookup(site, admin):
    account = site.records.query("account", order_by=("id",), limit=1)[0]
    page = text(admin.get(f"/ui/account/{account['id']}"))
    contacts = [c for c in site.records.query("contact", limit=10_000) if c["account"] == account["id"]]
    section = re.search(r'<section class="card h-100 related" data-entity="contact">(.*?)</section>', page, re.S).group(1)
    assert f'related-count">{len(contacts)}</span>' in section
    listed = {int(i) for i in re.findall(r'href="/ui/contact/(\d+)"', section)}
    assert listed == {c["id"] for c in contacts} or len(listed) == 5
    new = html.unescape(re.search(r'href="(/ui/contact/new\?[^"]+)"[^>]*>New<', section).group(1))
    assert new == f"/ui/contact/new?account={account['id']}"
    form = text(admin.get(new))
    assert input_value(form, "account") == str(account["id"])
    assert re.search(r'id="f-account" autocomplete="off" value="%s"' % re.escape(esc(account["name"])), form)
    # saving the prefilled form makes the contact of that account
    fields = [(k, v) for k, v in form_fields(form) if k != "last_name"] + [("last_name", "Prefilled")]
    r = admin.post("/ui/contact/new", fields)
    assert r.status_code == 302, text(r)[-2000:]
    made = site.records.get("contact", int(r.location.rsplit("/", 1)[1]))
    assert made["account"] == account["id"] and made["last_name"] == "Prefilled"
    # a role that may not create contacts has no New link
    service = site.user("svc@example.com", "service")
    page = text(site.browser(service).get(f"/ui/account/{account['id']}"))
    assert 'data-entity="contact"' in page and "/ui/contact/new?" not in page


def test_every_show_all_link_of_a_related_list_lists_all_the_children(site, admin):
    account = site.records.query("account", order_by=("id",), limit=1)[0]
    for i in range(12):
        site.records.create("contact", {"last_name": f"Child {i}", "account": account["id"]}, context=SYSTEM)
        site.records.create("activity", {"subject": f"Call {i}", "related_to": {"entity": "account", "id": account["id"]}},
                            context=SYSTEM)
    page = text(admin.get(f"/ui/account/{account['id']}"))
    sections = dict(re.findall(r'<section class="card h-100 related" data-entity="([^"]+)">(.*?)</section>', page, re.S))
    assert len(re.findall(r'<a class="fw-semibold text-break" href="/ui/activity/', sections["activity"])) == 5
    links = [html.unescape(u) for u in re.findall(r'<a class="small view-all" href="([^"]+)">View all</a>', page)]
    assert "/ui/contact?where=account+%3D+" + str(account["id"]) in links
    for link in links:
        listed = text(admin.get(link + "&size=100"))
        assert 'id="list-error"' not in listed, (link, re.search(r'id="list-error">([^<]*)', listed).group(1))
        entity = link.split("?")[0].rsplit("/", 1)[1]
        field = query_of(link)["where"][0].split(" = ")[0]
        children = [r["id"] for r in site.records.query(entity, limit=10_000) if r.get(field) == account["id"]]
        assert sorted(row_ids(listed)) == sorted(children), link


@pytest.mark.parametrize("role", ["admin", "sales", "manager"])
def test_transition_buttons_are_those_the_engine_allows(site, role):
    user = site.users.get(role) or site.user("boss@example.com", role, team=site.team)
    browser = site.browser(user)
    context = context_of(site, user)
    ent = site.rt.model.entity("opportunity")
    for stage in ("prospecting", "proposal", "won", "lost"):
        opp = new_opportunity(site, stage=stage, amount=Decimal(10), owner_id=site.sales["id"] if role == "admin" else user["id"],
                              lost_reason="price" if stage == "lost" else None)
        with site.rt.db.read() as conn:
            allowed_now = [t.name for t in site.rt.workflow.available(conn, ent, opp, context)]
        r = browser.get(f"/ui/opportunity/{opp['id']}")
        page = text(r)
        assert r.status_code == 200
        assert re.findall(r'data-transition="([^"]+)"', page) == allowed_now, (role, stage)
    assert ("reopen" in allowed_now) == (role in ("admin", "manager"))


def test_taking_a_transition_and_one_that_asks_for_fields_first(site, admin):
    opp = new_opportunity(site, amount=Decimal(100))
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/qualify", {"version": "1"})
    assert flash(admin, r) == "Done: Qualify."
    assert site.records.get("opportunity", opp["id"])["stage"] == "qualification"
    # "lose" requires lost_reason: the button leads to a form that asks for it
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    assert f'href="/ui/opportunity/{opp["id"]}/transition/lose" data-transition="lose"' in page
    form = admin.get(f"/ui/opportunity/{opp['id']}/transition/lose")
    assert form.status_code == 200 and 'name="lost_reason"' in text(form)
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/lose", {"version": "2", "competitor": "ignored"})
    assert r.status_code == 422
    assert re.search(r'data-error-for="lost_reason">[^<]*required', text(r))
    assert site.records.get("opportunity", opp["id"])["stage"] == "qualification"
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/lose", {"version": "2", "lost_reason": "price"})
    assert flash(admin, r) == "Done: Close as lost."
    after = site.records.get("opportunity", opp["id"])
    assert (after["stage"], after["lost_reason"]) == ("lost", "price")
    # a transition that cannot be taken from here says why and changes nothing
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/qualify", {})
    assert "allowed now: reopen" in flash(admin, r)
    assert site.records.get("opportunity", opp["id"])["version"] == after["version"]
    assert admin.get(f"/ui/opportunity/{opp['id']}/transition/no_such").status_code == 404
    # a stale version is refused
    r = admin.post(f"/ui/opportunity/{opp['id']}/transition/reopen", {"version": "1"})
    assert "changed by someone else" in flash(admin, r)
    assert site.records.get("opportunity", opp["id"])["stage"] == "lost"


def test_the_record_page_shows_the_field_history_after_an_edit(site, admin):
    opp = new_opportunity(site, name="Before", amount=Decimal(100))
    form = text(admin.get(f"/ui/opportunity/{opp['id']}/edit"))
    fields = [(k, {"name": "After", "amount": "250"}.get(k, v)) for k, v in form_fields(form)]
    r = admin.post(f"/ui/opportunity/{opp['id']}/edit", fields)
    assert flash(admin, r) == "Saved."
    page = text(admin.get(f"/ui/opportunity/{opp['id']}"))
    history = re.search(r'id="field-history">(.*?)</table>', page, re.S)
    assert history, page[-3000:]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", history.group(1))]
    changes = {(cells[1], cells[2], cells[3], cells[4]) for cells in rows if len(cells) == 5}
    assert ("Opportunity name", "Before", "After", "Ada Admin") in changes
    assert ("Amount", "$100.00", "$250.00", "Ada Admin") in changes


# -- 7. kanban moves ---------------------------------------------------------------------------------------

def test_a_kanban_move_takes_the_workflow_transition_or_says_which_are_allowed(site, admin):
    opp = new_opportunity(site, amount=Decimal(100))
    r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "qualification", "version": 1})
    assert r.status_code == 200 and r.get_json() == {"id": opp["id"], "value": "qualification", "version": 2}
    history = site.records.history_of("opportunity", opp["id"])
    assert [(h["field"], h["old_value"], h["new_value"]) for h in history] == [
        ("stage", "prospecting", "qualification"), ("probability", "10.00", "20.00")]   # the option's sets
    before = site.records.get("opportunity", opp["id"])
    r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "won"})
    assert r.status_code == 422
    message = r.get_json()["error"]
    assert "propose (to proposal)" in message and "lose (to lost)" in message, message
    assert site.records.get("opportunity", opp["id"]) == before
    # a move into a transition that needs a field names it; a stale card is a conflict
    r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "lost"})
    assert r.status_code == 422 and "lost_reason" in r.get_json()["error"]
    r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "proposal", "version": 1})
    assert r.status_code == 409 and "changed by someone else" in r.get_json()["error"]
    assert site.records.get("opportunity", opp["id"]) == before
    for body in ({"to": 3}, {}, ["to", "proposal"], "proposal"):
        r = admin.post_json(f"/ui/opportunity/{opp['id']}/_move", body)
        assert r.status_code == 400 and r.get_json() == {"error": "Nothing to move."}, body
    assert admin.post_json("/ui/opportunity/999999/_move", {"to": "proposal"}).status_code == 404
    assert admin.post_json("/ui/account/1/_move", {"to": "x"}).status_code == 400   # no kanban
    assert site.records.get("opportunity", opp["id"]) == before
    # a user who may not see the record cannot move it
    outsider = site.user("south@example.com", "sales", team="south")
    r = site.browser(outsider).post_json(f"/ui/opportunity/{opp['id']}/_move", {"to": "proposal"})
    assert r.status_code == 404
    assert site.records.get("opportunity", opp["id"]) == before
    # a role that may not change payments is told so in JSON (the board shows the answer's error)
    payment = site.records.query("payment", limit=1)[0]
    sales = site.browser(site.sales)
    r = sales.post_json(f"/ui/payment/{payment['id']}/_move", {"to": "cash"})
    assert r.status_code == 403 and r.get_json() == {"error": "your role does not allow update on payment"}
    assert site.records.get("payment", payment["id"]) == payment
    assert sales.get("/ui/case/_lookup?q=a").get_json() == {"error": "your role does not allow read on case"}
    assert sales.post_json("/ui/case/_form_state", {"values": {}}).status_code == 403
