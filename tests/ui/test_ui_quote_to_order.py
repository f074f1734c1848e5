"""Quote to order through the screens, in a real Chromium: "Create quote" on an opportunity, two
lines added with the price left blank (taken from the price book), the lines numbered 1 and 2 and
the subtotal right, then "Create order" on the accepted quote, which copies both lines."""

from __future__ import annotations

from decimal import Decimal

from engine.storage.records import Context

from .conftest import login, shot

SYSTEM = Context(system=True)


def test_an_opportunity_becomes_a_quote_with_priced_lines_then_an_order(page, live_server):
    rt, sales = live_server.runtime, live_server.sales
    ctx = Context(user_id=sales.id, system=True)
    book = rt.records.create("price_book", {"name": "UI book"}, context=SYSTEM)
    products = [rt.records.create("product", {"name": name, "code": code}, context=SYSTEM)
                for name, code in (("UI Widget", "UIW"), ("UI Gadget", "UIG"))]
    for product, price in zip(products, ("120", "80.50"), strict=True):
        rt.records.create("price_book_entry", {"price_book": book["id"], "product": product["id"], "unit_price": price},
                          context=SYSTEM)
    account = rt.records.create("account", {"name": "Quote UI Co"}, context=ctx)
    deal = rt.records.create("opportunity", {"name": "UI deal", "account": account["id"], "price_book": book["id"],
                                             "stage": "prospecting", "close_date": "2031-01-01"}, context=ctx)
    login(page, live_server, sales)
    page.goto(f"{live_server.url}/ui/opportunity/{deal['id']}")
    page.click("[data-convert=convert]")
    page.wait_for_url(f"**/ui/opportunity/{deal['id']}/convert")
    page.click("#convert-submit")
    page.wait_for_selector("#convert-done")
    [quote] = rt.records.query("quote", where={"opportunity": deal["id"]})
    assert (quote["account"], quote["price_book"]) == (account["id"], book["id"])
    for product, quantity in zip(products, ("2", "1"), strict=True):
        page.goto(f"{live_server.url}/ui/quote_line/new?quote={quote['id']}&product={product['id']}")
        page.fill("[name=quantity]", quantity)
        page.click("#save")
        page.wait_for_selector("text=created")
    lines = rt.records.query("quote_line", where={"quote": quote["id"]}, order_by=("position",))
    assert [(x["position"], x["unit_price"], x["total"]) for x in lines] == [
        (1, Decimal("120.00"), Decimal("240.00")), (2, Decimal("80.50"), Decimal("80.50"))]
    assert rt.records.get("quote", quote["id"])["subtotal"] == Decimal("320.50")
    rt.records.update("quote", quote["id"], {"status": "accepted"}, context=SYSTEM)
    page.goto(f"{live_server.url}/ui/quote/{quote['id']}")
    shot(page, "quote")
    page.click("[data-convert=convert]")
    page.wait_for_url(f"**/ui/quote/{quote['id']}/convert")
    assert page.locator("[data-lines='2']").count() == 1
    page.click("#convert-submit")
    page.wait_for_selector("#convert-done")
    [order] = rt.records.query("order", where={"quote": quote["id"]})
    copied = rt.records.query("order_line", where={"order": order["id"]}, order_by=("position",))
    assert [(x["position"], x["product"], x["unit_price"]) for x in copied] == [
        (1, products[0]["id"], Decimal("120.00")), (2, products[1]["id"], Decimal("80.50"))]
    assert rt.records.get("order", order["id"])["subtotal"] == Decimal("320.50")
    shot(page, "order")
