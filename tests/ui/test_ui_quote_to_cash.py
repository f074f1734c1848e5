"""Quote to cash through the screens, in a real Chromium, as a sales rep and their manager would do
it: "Create quote" on an opportunity, two lines priced from the price book, a 20 % quote discount
(totals right on the page), the quote's PDF downloaded, the quote submitted for approval (it needs
the manager above 15 %), approved by the manager from their Approvals inbox, accepted, and turned
into an order with both lines."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.storage.records import Context

from .conftest import _add_user, login, shot

pdfium = pytest.importorskip("pypdfium2")
SYSTEM = Context(system=True)


def _pdf_text(pdf: bytes) -> str:
    doc = pdfium.PdfDocument(pdf)
    return " ".join(" ".join(doc[i].get_textpage().get_text_range() for i in range(len(doc))).split())


def test_quote_priced_from_the_book_pdf_approved_from_the_inbox_then_an_order(page, make_page, live_server):
    rt, sales = live_server.runtime, live_server.sales
    boss = _add_user(rt, "boss@example.com", "Bea Boss", "manager", "boss-pass-1")
    rt.records.update("user", sales.id, {"manager": boss.id}, context=SYSTEM)
    book = rt.records.create("price_book", {"name": "Flow book"}, context=SYSTEM)
    products = [rt.records.create("product", {"name": name, "code": code}, context=SYSTEM)
                for name, code in (("Flow Widget", "FW-1"), ("Flow Gadget", "FG-1"))]
    for product, price in zip(products, ("120", "80.50"), strict=True):
        rt.records.create("price_book_entry", {"price_book": book["id"], "product": product["id"], "unit_price": price},
                          context=SYSTEM)
    mine = Context(user_id=sales.id, system=True)
    account = rt.records.create("account", {"name": "Flow Traders"}, context=mine)
    deal = rt.records.create("opportunity", {"name": "Flow deal", "account": account["id"], "price_book": book["id"],
                                             "stage": "proposal", "close_date": "2031-01-01"}, context=mine)

    # the rep: a quote from the opportunity, two lines whose prices come from the price book
    login(page, live_server, sales)
    page.goto(f"/ui/opportunity/{deal['id']}")
    page.click("[data-convert=convert]")
    page.wait_for_url(f"**/ui/opportunity/{deal['id']}/convert")
    page.click("#convert-submit")
    page.wait_for_selector("#convert-done")
    [quote] = rt.records.query("quote", where={"opportunity": deal["id"]})
    assert (quote["account"], quote["price_book"]) == (account["id"], book["id"])
    for product, quantity in zip(products, ("2", "1"), strict=True):
        page.goto(f"/ui/quote_line/new?quote={quote['id']}&product={product['id']}")
        page.fill("[name=quantity]", quantity)
        page.click("#save")
        page.wait_for_selector("text=created")
    page.goto(f"/ui/quote/{quote['id']}/edit")
    page.fill("[name=discount]", "20")
    page.click("#save")
    page.wait_for_url(f"**/ui/quote/{quote['id']}")
    quote = rt.records.get("quote", quote["id"])
    # 2 x 120 + 80.50 = 320.50; less 20 % = 256.40 (no tax, no shipping)
    assert (quote["subtotal"], quote["total_discount"], quote["grand_total"]) == (
        Decimal("320.50"), Decimal("20"), Decimal("256.40"))
    main = page.locator("main").inner_text()
    assert "$320.50" in main and "$256.40" in main
    shot(page, "quote")

    # its PDF, from the page
    with page.expect_download(timeout=30_000) as download:
        page.locator('[data-document="document-quote_pdf"]').click(no_wait_after=True)
    text = _pdf_text(download.value.path().read_bytes())
    for expected in (quote["quote_number"], "Flow Widget", "Flow Gadget", "$120.00", "$320.50", "$256.40"):
        assert expected in text, (expected, text)

    # submitted for approval: 20 % off needs the manager; the quote and its lines are locked meanwhile
    page.click("#approval-submit")
    page.wait_for_selector("[data-approval-status=pending]")
    assert rt.records.get("quote", quote["id"])["approval_status"] == "pending"
    assert page.locator("#edit").count() == 0
    shot(page, "submitted")

    # the manager approves from the inbox
    manager = make_page()
    login(manager, live_server, boss)
    manager.goto("/ui/approvals")
    row = manager.locator(f"#approvals-inbox tr:has(a[href='/ui/quote/{quote['id']}'])")
    assert "Flow" in row.inner_text() or quote["quote_number"] in row.inner_text()
    shot(manager, "inbox")
    row.locator("[data-approve]").click()
    manager.wait_for_selector("#approvals-empty")
    assert rt.records.get("quote", quote["id"])["approval_status"] == "approved"

    # the customer accepts; the rep turns the quote into an order with its lines
    page.goto(f"/ui/quote/{quote['id']}/edit")
    page.select_option("[name=status]", "accepted")
    page.click("#save")
    page.wait_for_url(f"**/ui/quote/{quote['id']}")
    page.click("[data-convert=convert]")
    page.wait_for_url(f"**/ui/quote/{quote['id']}/convert")
    page.click("#convert-submit")
    page.wait_for_selector("#convert-done")
    [order] = rt.records.query("order", where={"quote": quote["id"]})
    lines = rt.records.query("order_line", where={"order": order["id"]}, order_by=("position",))
    assert [(x["position"], x["product"], x["unit_price"]) for x in lines] == [
        (1, products[0]["id"], Decimal("120.00")), (2, products[1]["id"], Decimal("80.50"))]
    order = rt.records.get("order", order["id"])
    assert (order["subtotal"], order["grand_total"]) == (Decimal("320.50"), Decimal("256.40"))
    shot(page, "order")
