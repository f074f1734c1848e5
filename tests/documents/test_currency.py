"""Amounts in their currency: the entity's ``currency:`` key (a field, or lookup.field for lines), the
site's currency otherwise; CLDR symbols and decimals (Babel) on the record page, lists, related
lists, kanban cards and the readable CSV export."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest

from engine.fields.numeric import format_money
from engine.storage.records import Context
from tests.ui_kit import site  # noqa: F401 - the fixture

from .test_documents import _quote

SYSTEM = Context(system=True)


@pytest.mark.parametrize(("value", "code", "lang", "shown"), [
    ("1234.5", "USD", "en", "$1,234.50"), ("1234.5", "CNY", "zh", "¥1,234.50"), ("1234.5", "CNY", "en", "CN¥1,234.50"),
    ("1234.5", "JPY", "en", "¥1,235"), ("-3", "EUR", "en", "-€3.00"), (Decimal("0.005"), "USD", "en", "$0.01"),
    ("1234.5", "USD", "zh", "US$1,234.50")])
def test_amounts_have_the_symbol_and_decimals_of_their_currency(value, code, lang, shown):
    assert format_money(value, code, lang) == shown


def test_the_record_page_list_and_kanban_show_each_quote_in_its_currency(site):  # noqa: F811
    rt = site.rt
    yuan = _quote(rt, "CNY", name="Yuan quote")
    dollar = _quote(rt, "USD", name="Dollar quote")
    yen = _quote(rt, "JPY", lines=(("Camera", 1, "1234.56", 0),), name="Yen quote")
    browser = site.browser(site.admin)
    page = browser.get(f"/ui/quote/{yuan['id']}").get_data(as_text=True)
    assert "CN¥2,738.97" in page and "CN¥5.00" in page
    assert "$2,738.97" not in page.replace("CN¥", "")
    # the record page offers its documents; the button downloads the PDF with the web session
    download = f"/api/v1/quote/{yuan['id']}/_documents/quote_pdf?lang=en"
    assert 'data-document="document-quote_pdf"' in page and download.replace("&", "&amp;") in page
    pdf = browser.get(download)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    page = browser.get(f"/ui/quote/{dollar['id']}").get_data(as_text=True)
    assert "$2,738.97" in page and "¥" not in page.split("<main", 1)[-1]
    page = browser.get(f"/ui/quote/{yen['id']}").get_data(as_text=True)
    assert "¥1,235" in page and "¥1,234.56" not in page   # yen: no decimals, rounded half up
    # the related list of lines reads the currency of the quote they belong to
    assert "¥1,235" in page.split("Quote lines", 1)[-1]
    browser.lang("zh")
    page = browser.get(f"/ui/quote/{yuan['id']}").get_data(as_text=True)
    assert "¥2,738.97" in page and "CN¥" not in page
    browser.lang("en")
    listing = browser.get("/ui/quote?sort=id").get_data(as_text=True)
    assert "CN¥2,743.97" in listing                       # the grand total: 2738.97 + 5.00 shipping
    assert "$2,743.97" in listing.replace("CN¥", "")
    lines = browser.get("/ui/quote_line?sort=id").get_data(as_text=True)
    assert "CN¥1,234.50" in lines and "$99.99" in lines and "¥1,235" in lines
    board = browser.get("/ui/quote/kanban").get_data(as_text=True)
    assert "CN¥2,743.97" in board and "$2,743.97" in board.replace("CN¥", "")


def test_the_readable_csv_export_writes_amounts_in_their_currency(site):  # noqa: F811
    from engine.security.tokens import create_token

    rt = site.rt
    yuan = _quote(rt, "CNY", name="Yuan quote")
    yen = _quote(rt, "JPY", lines=(("Camera", 1, "1234.56", 0),), name="Yen quote")
    _, token = create_token(rt.records, site.admin["id"], "tests")
    client = site.app.test_client()
    auth = {"Authorization": f"Bearer {token}"}

    def export(query):
        r = client.get(f"/api/v1/quote_line/_export?{query}", headers=auth)
        assert r.status_code == 200, r.get_data(as_text=True)
        return list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))

    ids = f"quote[in]={yuan['id']},{yen['id']}&fields=quote,unit_price,total&sort=id"
    readable = export(f"{ids}&format=readable")
    assert [row["unit_price"] for row in readable] == ["CN¥1,234.50", "CN¥99.99", "¥1,235"]
    assert [row["unit_price"] for row in export(f"{ids}&format=readable&lang=zh")] == ["¥1,234.50", "¥99.99", "JP¥1,235"]
    assert [row["unit_price"] for row in export(ids)] == ["1234.50", "99.99", "1234.56"]   # raw: machine-readable
    r = client.get(f"/api/v1/quote_line/_export?{ids}&format=pretty", headers=auth)
    assert r.status_code == 400 and "format" in r.get_data(as_text=True)


def test_a_currency_key_naming_no_code_field_is_refused_at_load(write_tree, config_root):
    from engine.metadata.errors import MetadataError
    from engine.plugins import make_plugin_manager
    from engine.runtime import load_model_from
    from engine.settings import Settings

    base = write_tree("industries/base", {"deal.yaml": """
        entity: deal
        currency: amount
        fields:
          name: {type: text}
          amount: {type: currency}
        """})
    pm = make_plugin_manager(entry_point_plugins=False)
    with pytest.raises(MetadataError) as exc:
        load_model_from(pm, Settings(config_root=base.parent).layers())
    assert "deal.yaml:2" in str(exc.value) and "currency 'amount'" in str(exc.value)


def test_dashboard_amounts_are_in_the_sites_currency_and_counts_stay_numbers(crm):
    from engine.dashboards import compute
    from engine.dashboards.plugin import dashboards_of
    from engine.dashboards.svg import money_of, render

    acc = crm.records.create("account", {"name": "Acme"}, context=SYSTEM)
    crm.records.create("opportunity", {"name": "Big", "account": acc["id"], "amount": "1234.5",
                                       "close_date": "2030-01-15"}, context=SYSTEM)
    sales = dashboards_of(crm)["sales"]
    pipeline, deals = sales.widget("open_pipeline"), sales.widget("open_deals")
    assert money_of(crm.model, pipeline, "JPY", "en") == ("JPY", "en")
    assert money_of(crm.model, deals, "JPY", "en") is None        # a count is no amount
    svg = render(compute(crm.records, pipeline), money_of(crm.model, pipeline, "JPY", "en"))
    assert "¥1,235" in svg
    assert "¥" not in render(compute(crm.records, deals), money_of(crm.model, deals, "JPY", "en"))
