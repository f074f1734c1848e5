"""Copy-forward in the base CRM (``conversions.yaml``): opportunity -> quote, accepted quote -> order
with its lines, order -> contract; several named conversions per entity (``/_convert/{name}``, the
unnamed path still the first), lines copied in one transaction (a refused line writes nothing), the
declaration's checks at file:line, and the convert buttons and screen. SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.metadata import MetadataError
from engine.storage.records import Context

from .test_conversions import _client, _user
from .test_quote_lines import SYSTEM, a_quote, catalogue


@pytest.fixture
def sales(crm):
    sam = _user(crm)
    client, headers = _client(crm, sam)
    return crm, sam, client, headers


def _accepted_quote_with_two_lines(rt, owner):
    book, _, widget, gadget = catalogue(rt)
    mine = Context(user_id=owner["id"], system=True)
    quote = a_quote(rt, book, owner=owner, tax_rate=10, discount=5, shipping="12")
    rt.records.create("quote_line", {"quote": quote["id"], "product": widget["id"], "quantity": 2,
                                     "discount": 10, "description": "first"}, context=mine)
    rt.records.create("quote_line", {"quote": quote["id"], "product": gadget["id"], "quantity": 1,
                                     "unit_price": "240", "tax_rate": 0, "description": "second"}, context=mine)
    rt.records.update("quote", quote["id"], {"status": "accepted"}, context=SYSTEM)
    return rt.records.get("quote", quote["id"]), widget, gadget


def test_an_accepted_quote_with_two_lines_becomes_an_order_with_them(sales):
    rt, sam, client, headers = sales
    quote, widget, gadget = _accepted_quote_with_two_lines(rt, sam)
    proposal = client.get(f"/api/v1/quote/{quote['id']}/_convert/quote_order", headers=headers)
    assert proposal.status_code == 200, proposal.json
    assert proposal.json["convertible"] and proposal.json["targets"]["order"]["lines"] == {"order_line": 2}
    answer = client.post(f"/api/v1/quote/{quote['id']}/_convert/quote_order", headers=headers, json={})
    assert answer.status_code == 200, answer.json
    done = answer.json["targets"]["order"]
    assert (done["action"], done["lines"], answer.json["conversion"]) == ("created", 2, "quote_order")
    order = rt.records.get("order", done["id"])
    assert (order["account"], order["quote"], order["opportunity"], order["price_book"]) == (
        quote["account"], quote["id"], quote["opportunity"], quote["price_book"])
    assert (order["tax_rate"], order["discount"], order["shipping"]) == (Decimal(10), Decimal(5), Decimal("12.00"))
    assert order["owner_id"] == sam["id"]
    lines = rt.records.query("order_line", where={"order": order["id"]}, order_by=("position",), limit=10)
    assert [(x["position"], x["product"], x["quantity"], x["unit_price"], x["discount"], x["tax_rate"], x["description"])
            for x in lines] == [
        (1, widget["id"], Decimal("2.00"), Decimal("100.00"), Decimal(10), Decimal(10), "first"),
        (2, gadget["id"], Decimal("1.00"), Decimal("240.00"), Decimal(0), Decimal(0), "second")]
    assert order["subtotal"] == quote["subtotal"] == Decimal("420.00")
    assert order["tax"] == quote["tax"] == Decimal("18.00")


def test_the_order_has_the_quotes_grand_total(sales):
    rt, sam, client, headers = sales
    quote, _, _ = _accepted_quote_with_two_lines(rt, sam)
    done = client.post(f"/api/v1/quote/{quote['id']}/_convert/quote_order", headers=headers, json={}).json
    order = rt.records.get("order", done["targets"]["order"]["id"])
    assert order["grand_total"] == quote["grand_total"] == Decimal("428.10")   # (420 + 18) * .95 + 12


def test_a_quote_not_accepted_is_not_converted(sales):
    rt, sam, client, headers = sales
    book, *_ = catalogue(rt)
    quote = a_quote(rt, book, owner=sam)
    r = client.post(f"/api/v1/quote/{quote['id']}/_convert/quote_order", headers=headers, json={})
    assert r.status_code == 422 and "status = 'accepted'" in r.json["detail"]
    assert rt.records.query("order", limit=5) == []


def test_a_refused_line_writes_no_order_and_names_the_line(sales, monkeypatch):
    rt, sam, client, headers = sales
    quote, widget, _ = _accepted_quote_with_two_lines(rt, sam)
    rt.records.update("product", widget["id"], {"active": False}, context=SYSTEM)
    # the second line's product is refused by a rule on order lines (an inactive product may not be ordered)
    from engine.storage.errors import FieldError, ValidationFailed

    real = rt.records.create

    def create(entity, values, **kw):
        if entity == "order_line" and values.get("product") == widget["id"]:
            raise ValidationFailed([FieldError("product", "rule:active", "the product is not sold any more")], entity)
        return real(entity, values, **kw)

    monkeypatch.setattr(rt.records, "create", create)
    r = client.post(f"/api/v1/quote/{quote['id']}/_convert/quote_order", headers=headers, json={})
    assert r.status_code == 422, r.json
    assert r.json["errors"] == [{"target": "order", "field": "lines.order_line.1.product", "code": "rule:active",
                                 "message": "the product is not sold any more"}]
    assert rt.records.query("order", limit=5) == [] and rt.records.query("order_line", limit=5) == []


def test_an_opportunity_becomes_a_quote_with_its_account_contact_and_price_book(sales):
    rt, sam, client, headers = sales
    book, *_ = catalogue(rt)
    mine = Context(user_id=sam["id"], system=True)
    account = rt.records.create("account", {"name": "Acme"}, context=mine)
    contact = rt.records.create("contact", {"last_name": "Doe", "account": account["id"]}, context=mine)
    deal = rt.records.create("opportunity", {"name": "Big deal", "account": account["id"], "contact": contact["id"],
                                             "price_book": book["id"], "stage": "prospecting",
                                             "close_date": "2030-01-01"}, context=mine)
    # the opportunity's only conversion is also its default: the unnamed path
    for _ in range(2):   # copy-forward can be repeated: a second quote
        r = client.post(f"/api/v1/opportunity/{deal['id']}/_convert", headers=headers, json={})
        assert r.status_code == 200, r.json
    quotes = rt.records.query("quote", where={"opportunity": deal["id"]}, limit=5)
    assert len(quotes) == 2
    q = quotes[0]
    assert (q["account"], q["contact"], q["price_book"], q["owner_id"]) == (account["id"], contact["id"], book["id"],
                                                                            sam["id"])
    assert q["name"].startswith("Big deal - ")
    assert rt.records.get("opportunity", deal["id"])["version"] == deal["version"]   # the source is left as it was


def test_an_order_becomes_a_contract_and_is_linked_to_it(sales):
    rt, sam, client, headers = sales
    account = rt.records.create("account", {"name": "Acme"}, context=Context(user_id=sam["id"], system=True))
    order = rt.records.create("order", {"account": account["id"], "order_date": "2030-01-01", "status": "confirmed"},
                              context=Context(user_id=sam["id"], system=True))
    r = client.post(f"/api/v1/order/{order['id']}/_convert/order_contract", headers=headers, json={})
    assert r.status_code == 200, r.json
    contract = rt.records.get("contract", r.json["targets"]["contract"]["id"])
    assert contract["account"] == account["id"] and contract["name"] == f"Contract for {order['order_number']}"
    assert rt.records.get("order", order["id"])["contract"] == contract["id"]
    again = client.post(f"/api/v1/order/{order['id']}/_convert/order_contract", headers=headers, json={})
    assert again.status_code == 422      # ISBLANK(contract) no longer holds


def test_an_unknown_conversion_name_is_a_404_naming_those_there_are(sales):
    rt, sam, client, headers = sales
    book, *_ = catalogue(rt)
    quote = a_quote(rt, book, owner=sam)
    r = client.get(f"/api/v1/quote/{quote['id']}/_convert/nope", headers=headers)
    assert r.status_code == 404 and "quote_order" in r.json["detail"]


def test_the_lead_conversion_keeps_its_unnamed_path_and_gets_a_named_one(sales):
    rt, sam, client, headers = sales
    lead = rt.records.create("lead", {"last_name": "Doe", "company": "Globex", "status": "qualified"},
                             context=Context(user_id=sam["id"], system=True))
    assert client.get(f"/api/v1/lead/{lead['id']}/_convert", headers=headers).json["conversion"] == "lead"
    assert client.get(f"/api/v1/lead/{lead['id']}/_convert/lead", headers=headers).json["conversion"] == "lead"
    paths = client.get("/api/v1/openapi.json", headers=headers).json["paths"]
    assert "/api/v1/quote/{id}/_convert/quote_order" in paths and "/api/v1/lead/{id}/_convert" in paths
    assert "/api/v1/lead/{id}/_convert/lead" in paths and "/api/v1/quote/_convert/quote_order" in paths


SECOND = """\
conversion: lead_to_contact
source: lead
label: {en: Only a contact}
targets:
  contact:
    entity: contact
    map: {last_name: last_name}
    lines:
      - {from: activity.nope, to: contact_line.contact}
"""


def test_bad_lines_are_refused_at_load_with_file_and_line(make_runtime, write_tree):
    site = write_tree("site", {"more.yaml": SECOND})
    with pytest.raises(MetadataError) as err:
        make_runtime(site_dir=site, migrate=False)
    text = str(err.value)
    assert "more.yaml:9" in text and "must be child_entity.lookup with the lookup pointing to lead" in text


def test_the_record_page_shows_a_button_per_conversion_and_the_screen_copies_the_lines(sales):
    from engine.app import create_app
    from engine.security.passwords import set_password
    from tests.ui_kit import PASSWORD, Browser

    rt, sam, _, _ = sales
    quote, _, _ = _accepted_quote_with_two_lines(rt, sam)
    set_password(rt.records, sam["id"], PASSWORD)
    web = Browser(create_app(runtime=rt)).login(sam["email"])
    page = web.get(f"/ui/quote/{quote['id']}").get_data(as_text=True)
    assert f"/ui/quote/{quote['id']}/convert" in page
    screen = web.get(f"/ui/quote/{quote['id']}/convert")
    assert screen.status_code == 200
    assert 'data-lines="2"' in screen.get_data(as_text=True)
    named = web.get(f"/ui/quote/{quote['id']}/convert/quote_order")
    assert named.status_code == 200 and f'action="/ui/quote/{quote["id"]}/convert"' in named.get_data(as_text=True)
    done = web.post(f"/ui/quote/{quote['id']}/convert/quote_order", {"choice.order": "create"})
    assert done.status_code == 200, done.get_data(as_text=True)[-800:]
    [order] = rt.records.query("order", limit=5)
    assert len(rt.records.query("order_line", where={"order": order["id"]}, limit=5)) == 2
    assert web.get(f"/ui/quote/{quote['id']}/convert/nope").status_code == 404
