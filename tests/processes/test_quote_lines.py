"""Quote and order lines of the base CRM: line numbers per parent (``sequence``, race-free, kept when
the lines are reordered), the unit price from the price book (``default: {lookup: ...}``), line
discount and tax, the header's tax rate as the lines' default, bad input refused naming the field,
and the load-time checks of both properties. SQLite and, with DATABASE_URL, PostgreSQL."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from engine.metadata import MetadataError
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)


def catalogue(rt):
    """Two products in a price book (and a second book with other prices)."""
    c = rt.records.create
    book = c("price_book", {"name": "Standard"}, context=SYSTEM)
    other = c("price_book", {"name": "Partner"}, context=SYSTEM)
    widget = c("product", {"name": "Widget", "code": "W-1"}, context=SYSTEM)
    gadget = c("product", {"name": "Gadget", "code": "G-1"}, context=SYSTEM)
    for b, p, price in ((book, widget, "100"), (book, gadget, "250.50"), (other, widget, "80")):
        c("price_book_entry", {"price_book": b["id"], "product": p["id"], "unit_price": price}, context=SYSTEM)
    return book, other, widget, gadget


def a_quote(rt, book, owner=None, **values):
    """A quote of a new opportunity of a new account (all three owned by ``owner``)."""
    ctx = Context(user_id=owner["id"], system=True) if owner else SYSTEM
    account = rt.records.create("account", {"name": "Acme"}, context=ctx)
    deal = rt.records.create("opportunity", {"name": "Acme deal", "account": account["id"], "stage": "prospecting",
                                             "close_date": "2030-01-01"}, context=ctx)
    return rt.records.create("quote", {"name": "Q", "opportunity": deal["id"], "account": account["id"],
                                       "price_book": book["id"], **values}, context=ctx)


def test_lines_are_numbered_per_quote_and_keep_their_number_when_reordered(crm):
    book, _, widget, gadget = catalogue(crm)
    q1, q2 = a_quote(crm, book), a_quote(crm, book)
    lines = [crm.records.create("quote_line", {"quote": q["id"], "product": widget["id"]}, context=SYSTEM)
             for q in (q1, q1, q2, q1)]
    assert [line["position"] for line in lines] == [1, 2, 1, 3]
    assert [line["sort_order"] for line in lines] == [1, 2, 1, 3]
    moved = crm.records.update("quote_line", lines[3]["id"], {"sort_order": 0}, context=SYSTEM)
    assert (moved["position"], moved["sort_order"]) == (3, 0)
    crm.records.delete("quote_line", lines[1]["id"], context=SYSTEM)
    fourth = crm.records.create("quote_line", {"quote": q1["id"], "product": gadget["id"]}, context=SYSTEM)
    assert fourth["position"] == 4              # max + 1: numbers are never reused after the last
    given = crm.records.create("quote_line", {"quote": q2["id"], "product": gadget["id"], "position": 7},
                               context=SYSTEM)
    assert given["position"] == 7


def test_two_concurrent_line_inserts_get_different_numbers(crm):
    book, _, widget, _ = catalogue(crm)
    quote = a_quote(crm, book)
    barrier = threading.Barrier(4)
    made, failed = [], []

    def insert():
        barrier.wait()
        try:
            made.append(crm.records.create("quote_line", {"quote": quote["id"], "product": widget["id"]},
                                           context=SYSTEM)["position"])
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    threads = [threading.Thread(target=insert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed
    assert sorted(made) == [1, 2, 3, 4]
    assert crm.records.get("quote", quote["id"])["subtotal"] == Decimal("400.00")


def test_unit_price_comes_from_the_quotes_price_book_unless_given(crm):
    book, other, widget, gadget = catalogue(crm)
    quote = a_quote(crm, book)
    line = crm.records.create("quote_line", {"quote": quote["id"], "product": widget["id"], "quantity": 3},
                              context=SYSTEM)
    assert line["unit_price"] == Decimal("100.00") and line["total"] == Decimal("300.00")
    changed = crm.records.update("quote_line", line["id"], {"product": gadget["id"]}, context=SYSTEM)
    assert changed["unit_price"] == Decimal("250.50")             # the product changed: its price
    kept = crm.records.update("quote_line", line["id"], {"product": widget["id"], "unit_price": "90"},
                              context=SYSTEM)
    assert kept["unit_price"] == Decimal("90.00")                 # the write gives the price
    assert crm.records.update("quote_line", line["id"], {"quantity": 2}, context=SYSTEM)["unit_price"] == Decimal("90.00")
    given = crm.records.create("quote_line", {"quote": quote["id"], "product": widget["id"], "unit_price": "95"},
                               context=SYSTEM)
    assert given["unit_price"] == Decimal("95.00")
    partner = a_quote(crm, other)
    assert crm.records.create("quote_line", {"quote": partner["id"], "product": widget["id"]},
                              context=SYSTEM)["unit_price"] == Decimal("80.00")
    with pytest.raises(ValidationFailed) as err:    # no entry for the gadget in that book: the price is required
        crm.records.create("quote_line", {"quote": partner["id"], "product": gadget["id"]}, context=SYSTEM)
    assert [(e.field, e.code) for e in err.value.errors] == [("unit_price", "required")]


def test_the_price_is_editable_only_where_the_role_may(crm):
    from engine.app import create_app
    from engine.security.tokens import create_token

    book, _, widget, _ = catalogue(crm)
    sam = crm.records.create("user", {"name": "Sam", "email": "sam@example.com", "role": "sales", "team": "n"},
                             context=SYSTEM)
    quote = a_quote(crm, book, owner=sam)
    _, token = create_token(crm.records, sam["id"], "t")
    client = create_app(runtime=crm).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    ok = client.post("/api/v1/quote_line", headers=headers, json={"quote": quote["id"], "product": widget["id"]})
    assert ok.status_code == 201, ok.json
    assert ok.json["unit_price"] in ("100.00", 100, "100")
    refused = client.post("/api/v1/quote_line", headers=headers,
                          json={"quote": quote["id"], "product": widget["id"], "unit_price": "1"})
    assert refused.status_code in (403, 422), refused.json
    assert "unit_price" in refused.get_data(as_text=True)


def test_line_discount_and_tax_and_the_headers_tax_rate(crm):
    book, _, widget, gadget = catalogue(crm)
    quote = a_quote(crm, book, tax_rate=10)
    line = crm.records.create("quote_line", {"quote": quote["id"], "product": widget["id"], "quantity": 4,
                                             "discount": 25}, context=SYSTEM)
    assert (line["discount_amount"], line["total"]) == (Decimal("100.00"), Decimal("300.00"))
    assert (line["tax_rate"], line["tax"]) == (Decimal(10), Decimal("30.00"))
    own = crm.records.create("quote_line", {"quote": quote["id"], "product": gadget["id"], "tax_rate": 0},
                             context=SYSTEM)
    assert own["tax"] == Decimal("0.00")
    header = crm.records.get("quote", quote["id"])
    assert (header["subtotal"], header["tax"]) == (Decimal("550.50"), Decimal("30.00"))


def test_grand_total_is_subtotal_plus_tax_less_header_discount_plus_shipping(crm):
    book, _, widget, _ = catalogue(crm)
    quote = a_quote(crm, book, tax_rate=10, discount=10, shipping="20")
    crm.records.create("quote_line", {"quote": quote["id"], "product": widget["id"], "quantity": 2}, context=SYSTEM)
    # (200 + 20) * 0.9 + 20
    assert crm.records.get("quote", quote["id"])["grand_total"] == Decimal("218.00")


@pytest.mark.parametrize("values, field", [({"quantity": -1}, "quantity"), ({"discount": 101}, "discount"),
                                           ({"tax_rate": -5}, "tax_rate")])
def test_bad_line_input_is_refused_naming_the_field(crm, values, field):
    book, _, widget, _ = catalogue(crm)
    quote = a_quote(crm, book)
    for entity, parent in (("quote_line", {"quote": quote["id"]}),):
        with pytest.raises(ValidationFailed) as err:
            crm.records.create(entity, {**parent, "product": widget["id"], **values}, context=SYSTEM)
        assert [e.field for e in err.value.errors] == [field]
    assert crm.records.query("quote_line", limit=10) == []


def test_order_lines_take_the_orders_price_book_too(crm):
    book, _, widget, _ = catalogue(crm)
    account = crm.records.create("account", {"name": "Acme"}, context=SYSTEM)
    order = crm.records.create("order", {"account": account["id"], "order_date": "2030-01-01",
                                         "price_book": book["id"], "tax_rate": 5}, context=SYSTEM)
    lines = [crm.records.create("order_line", {"order": order["id"], "product": widget["id"]}, context=SYSTEM)
             for _ in range(2)]
    assert [(x["position"], x["unit_price"], x["tax"]) for x in lines] == [(1, Decimal("100.00"), Decimal("5.00")),
                                                                          (2, Decimal("100.00"), Decimal("5.00"))]


BAD = """\
entity: thing
label: Thing
fields:
  name: {type: text}
  parent: {type: lookup, to: thing}
  number: {type: integer, sequence: {within: name}}
  price:
    type: currency
    default: {lookup: {entity: nowhere, where: {a: name}, value: b}}
  other:
    type: currency
    default: {lookup: {entity: thing, where: {nope: "name &"}, value: name}}
"""


def test_bad_sequence_and_lookup_defaults_are_refused_at_load(make_runtime, write_tree):
    tree = write_tree("bad", {"thing.yaml": BAD})
    with pytest.raises(MetadataError) as err:
        make_runtime(site_dir=tree, migrate=False)
    text = str(err.value)
    assert "thing.yaml:6" in text and "sequence.within must name a lookup" in text
    assert "thing.yaml:9" in text and "no entity 'nowhere'" in text
    assert "thing has no stored field 'nope'" in text


def test_lines_imported_in_one_bulk_write_are_numbered_in_order(crm):
    book, _, widget, gadget = catalogue(crm)
    q1, q2 = a_quote(crm, book), a_quote(crm, book)
    crm.records.create("quote_line", {"quote": q1["id"], "product": widget["id"]}, context=SYSTEM)
    rows = [{"quote": q["id"], "product": p["id"]} for q, p in ((q1, widget), (q2, gadget), (q1, gadget), (q2, widget))]
    result = crm.records.bulk("quote_line", rows, context=SYSTEM)
    assert result.ok, result.items
    got = [crm.records.get("quote_line", i["id"]) for i in result.items]
    assert [(x["quote"], x["position"], x["unit_price"]) for x in got] == [
        (q1["id"], 2, Decimal("100.00")), (q2["id"], 1, Decimal("250.50")),
        (q1["id"], 3, Decimal("250.50")), (q2["id"], 2, Decimal("100.00"))]
