"""Converting a lead through the screens, in a real Chromium: the Convert button on the lead's page,
the convert screen proposing the existing account that matches (chosen), the contact and opportunity
created from the mapped values (one edited), the result page with links, the lead read-only after."""

from __future__ import annotations

from urllib.parse import quote

from engine.storage.records import Context

from .conftest import login, shot


def test_convert_a_lead_choosing_the_existing_account(page, live_server):
    rt, sales = live_server.runtime, live_server.sales
    ctx = Context(user_id=sales.id, system=True)
    account = rt.records.create("account", {"name": "Globex Corporation Ltd.", "phone": "+1 201 555 0100"}, context=ctx)
    lead = rt.records.create("lead", {"first_name": "Jane", "last_name": "Doe", "company": "GLOBEX CORPORATION",
                                      "email": "jane.doe@globex.example", "status": "qualified"}, context=ctx)
    accounts_before = len(rt.records.query("account", limit=10_000))
    login(page, live_server, sales)
    page.goto(f"{live_server.url}/ui/lead/{lead['id']}")
    page.click("[data-convert=convert]")
    page.wait_for_url(f"**/ui/lead/{lead['id']}/convert")
    existing = page.locator(f"input[name='choice.account'][value='existing:{account['id']}']")
    assert existing.is_checked()                                 # the match is proposed first
    assert page.locator("[name='account.name']").is_hidden()     # no values of a new account while attaching
    page.check("#c-account-create")
    assert page.locator("[name='account.name']").is_visible()
    existing.check()
    assert "Globex Corporation Ltd." in page.locator("[data-target=account]").inner_text()
    assert page.input_value("[name='contact.email']") == "jane.doe@globex.example"
    page.fill("[name='opportunity.name']", "Globex - pilot")
    page.fill("[name='opportunity.amount']", "12000")
    shot(page, "convert-screen")
    page.click("#convert-submit")
    page.wait_for_selector("#convert-done")
    results = page.locator("#convert-results")
    assert results.locator("[data-target=account]").get_attribute("data-action") == "attached"
    assert results.locator("[data-target=contact]").get_attribute("data-action") == "created"
    assert "Globex - pilot" in results.inner_text()
    stamped = rt.records.get("lead", lead["id"])
    assert (stamped["status"], stamped["converted_account"]) == ("converted", account["id"])
    assert len(rt.records.query("account", limit=10_000)) == accounts_before
    [deal] = rt.records.query("opportunity", where={"name": "Globex - pilot"})
    assert (deal["account"], str(deal["amount"])) == (account["id"], "12000.00")
    page.goto(f"{live_server.url}/ui/lead/{lead['id']}")
    assert page.locator("[data-convert=convert]").count() == 0     # converted: no button any more
    assert page.locator("#edit").count() == 0 and page.locator("#locked").count() == 1   # and read-only
    shot(page, "converted")


def test_errors_show_beside_their_fields_and_nothing_is_written(page, live_server):
    rt, sales = live_server.runtime, live_server.sales
    lead = rt.records.create("lead", {"last_name": "Roe", "company": "Umbrella Unique 7", "status": "working"},
                             context=Context(user_id=sales.id, system=True))
    counts = {e: len(rt.records.query(e, limit=10_000)) for e in ("account", "contact", "opportunity")}
    login(page, live_server, sales)
    page.goto(f"{live_server.url}/ui/lead/{lead['id']}/convert")
    page.fill("[name='account.name']", "")
    page.fill("[name='opportunity.close_date']", "2001-01-01")
    page.click("#convert-submit")
    page.wait_for_selector("#convert-errors")
    assert page.locator("[data-error-for='account.name']").count() == 1
    assert "past" in page.locator("[data-error-for='opportunity.close_date']").inner_text()
    shot(page, "errors")
    assert {e: len(rt.records.query(e, limit=10_000)) for e in counts} == counts
    assert rt.records.get("lead", lead["id"])["status"] == "working"


def test_bulk_convert_converts_the_ticked_leads_and_leaves_matched_ones(page, live_server):
    rt, sales = live_server.runtime, live_server.sales
    ctx = Context(user_id=sales.id, system=True)
    rt.records.create("account", {"name": "Vandelay Industries"}, context=ctx)
    fresh = rt.records.create("lead", {"last_name": "Kramer", "company": "Kramerica Zyx", "status": "qualified"},
                              context=ctx)
    matched = rt.records.create("lead", {"last_name": "Costanza", "company": "VANDELAY INDUSTRIES, Inc.",
                                         "status": "qualified"}, context=ctx)
    login(page, live_server, sales)
    page.goto(f"{live_server.url}/ui/lead?where=" + quote("last_name IN ('Kramer', 'Costanza')"))
    page.check(f".row-select[value='{fresh['id']}']")                  # ticked on the lead list
    page.check(f".row-select[value='{matched['id']}']")
    shot(page, "list")
    page.click("[data-convert=convert-selected]")
    page.wait_for_selector("#bulk-results")
    assert page.locator(f"#bulk-results [data-id='{fresh['id']}']").get_attribute("data-status") == "converted"
    assert page.locator(f"#bulk-results [data-id='{matched['id']}']").get_attribute("data-status") == "matches"
    shot(page, "results")
    assert rt.records.get("lead", fresh["id"])["status"] == "converted"
    assert rt.records.get("lead", matched["id"])["status"] == "qualified"
    assert page.locator(f"input[name=ids][value='{fresh['id']}']").count() == 0   # no longer offered
