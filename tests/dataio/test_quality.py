"""The data-quality report (engine/dataio/quality): completeness counted in SQL over the caller's
scope, invalid and unnormalised values found by reading in pages, links to the filtered list, the
duplicate-groups place fed only by the duplicates part, the page and its JSON twin, and who may see them."""

from __future__ import annotations

import html
import re

import pytest

from engine.security.tokens import create_token
from engine.storage.records import Context
from tests.ui_kit import make_site

SYSTEM = Context(system=True)


@pytest.fixture
def site(crm):
    site = make_site(crm, seeded=False)
    rt = site.rt
    other = site.user("south@example.com", "sales", team="south")
    mine = [{"last_name": f"Mine {i}", "company": "Acme", "owner_id": site.sales["id"],
             "email": f"m{i}@acme.example" if i % 2 else None} for i in range(6)]
    theirs = [{"last_name": f"Theirs {i}", "company": "Beta", "owner_id": other["id"], "email": f"t{i}@beta.example"}
              for i in range(4)]
    assert rt.records.bulk("lead", mine + theirs, mode="create", atomic=True, context=SYSTEM).ok
    table = rt.records.table("lead")
    ids = sorted(r["id"] for r in rt.records.query("lead", limit=100) if r["last_name"].startswith("Mine"))
    with rt.db.write() as conn:   # values stored before today's rules (an older version, a raw load)
        conn.execute(table.update().where(table.c.id == ids[0]).values(email="not an address", phone="555 0100"))
        conn.execute(table.update().where(table.c.id == ids[1]).values(phone="(201) 555-0100", company="  Acme  "))
    site.ids = ids
    return site


def _token_headers(site, user):
    _, token = create_token(site.rt.records, user["id"], "tests")
    return {"Authorization": f"Bearer {token}"}


def _get(site, user, url):
    return site.app.test_client().get(url, headers=_token_headers(site, user))


def test_completeness_is_counted_over_the_admins_whole_table(site):
    r = _get(site, site.admin, "/api/v1/_quality/lead")
    assert r.status_code == 200, r.json
    report = r.json
    assert report["total"] == 10 and report["complete_scan"] is True
    fields = {f["field"]: f for f in report["fields"]}
    assert fields["last_name"] == {"field": "last_name", "filled": 10, "percent": 100.0}
    assert fields["email"]["filled"] == 8          # 3 of mine odd + 1 written raw + 4 theirs
    assert fields["mobile"]["filled"] == 0 and fields["mobile"]["percent"] == 0.0
    assert fields["owner_id"]["filled"] == 10
    assert report["duplicates"] == []              # lead has duplicate rules; no two leads alike yet


def test_the_sales_rep_sees_only_their_teams_records(site):
    report = _get(site, site.sales, "/api/v1/_quality/lead").json
    assert report["total"] == 6
    fields = {f["field"]: f for f in report["fields"]}
    assert fields["email"]["filled"] == 4 and fields["email"]["percent"] == pytest.approx(66.7)


def test_invalid_and_unnormalised_values_name_the_records(site):
    report = _get(site, site.admin, "/api/v1/_quality/lead").json
    invalid = {i["field"]: i for i in report["invalid"]}
    first, second = site.ids[0], site.ids[1]
    assert invalid["email"]["invalid"] == 1 and invalid["email"]["invalid_ids"] == [first]
    assert invalid["email"]["reasons"][0].startswith("is not an e-mail address")
    assert invalid["phone"]["invalid"] == 1 and invalid["phone"]["invalid_ids"] == [first]
    assert invalid["phone"]["unnormalised"] == 1 and invalid["phone"]["unnormalised_ids"] == [second]
    assert invalid["company"]["unnormalised_ids"] == [second] and invalid["company"]["invalid"] == 0
    assert invalid["email"]["checked"] == 8


def test_who_may_see_the_report(site):
    service = site.user("svc@example.com", "service")
    assert _get(site, site.sales, "/api/v1/_quality/account").status_code == 403   # reads accounts, may not import them
    assert _get(site, site.admin, "/api/v1/_quality/nothing").status_code == 404
    assert site.app.test_client().get("/api/v1/_quality/lead").status_code == 401
    r = _get(site, service, "/api/v1/_quality/lead")
    assert r.status_code in (403, 404) and r.mimetype == "application/problem+json"
    nav = site.browser(site.sales).get("/ui/lead").get_data(as_text=True)
    assert 'href="/ui/quality/lead"' in nav and 'href="/ui/quality/account"' not in nav
    assert site.browser(site.sales).get("/ui/quality/account").status_code == 404


def test_the_page_links_to_the_filtered_lists(site):
    browser = site.browser(site.admin)
    page = browser.get("/ui/quality/lead").get_data(as_text=True)
    assert 'id="completeness"' in page and 'id="invalid"' in page and "No likely duplicates found." in page
    row = re.search(r'<tr data-field="email">.*?</tr>', page, re.S).group(0)
    empty = html.unescape(re.search(r'href="([^"]+)" class="empty-link"', row).group(1))
    listing = browser.get(empty).get_data(as_text=True)
    assert 'id="list-error"' not in listing
    shown = set(re.findall(r"Mine \d", listing))
    assert shown == {"Mine 2", "Mine 4"}           # the two without e-mail (Mine 0 holds a raw value)
    row = re.search(r'<tr data-field="phone">.*?</tr>', page.split('id="invalid"')[1], re.S).group(0)
    bad = html.unescape(re.search(r'href="([^"]+)" class="invalid-link', row).group(1))
    listing = browser.get(bad).get_data(as_text=True)
    assert set(re.findall(r"Mine \d", listing)) == {"Mine 0"}


def test_duplicate_groups_come_from_the_duplicate_rules(site):
    twin = site.rt.records.create("lead", {"last_name": "Twin", "company": "Beta", "email": "t1@beta.example"},
                                  context=SYSTEM)          # a system write: rules are for users' writes
    first = next(r["id"] for r in site.rt.records.query("lead", limit=100) if r["email"] == "t1@beta.example"
                 and r["id"] != twin["id"])
    report = _get(site, site.admin, "/api/v1/_quality/lead").json
    assert report["duplicates"] == [{"rule": "lead_email", "ids": sorted([first, twin["id"]])}]
    page = site.browser(site.admin).get("/ui/quality/lead").get_data(as_text=True)
    assert 'id="duplicates"' in page and "Twin" in page and "Theirs 1" in page
    assert site.rt.pm.get_plugin("duplicates") is not None
    report = _get(site, site.admin, "/api/v1/_quality/account").json
    assert report["duplicates"] == []


def test_without_duplicate_rules_there_is_no_duplicates_panel(site):
    report = _get(site, site.admin, "/api/v1/_quality/campaign").json
    assert report["duplicates"] is None
    page = site.browser(site.admin).get("/ui/quality/campaign").get_data(as_text=True)
    assert 'id="completeness"' in page and 'id="duplicates"' not in page
