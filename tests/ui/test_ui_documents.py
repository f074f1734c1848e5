"""A quote's PDF from its page, in a real Chromium: the download button of the record page gives the
PDF of the quote (its number, its lines, the company), in the interface's language; the page shows
the quote's amounts in its currency."""

from __future__ import annotations

import pytest

from engine.storage.records import Context

from .conftest import login, shot

pytestmark = pytest.mark.usefixtures("live_server")
pdfium = pytest.importorskip("pypdfium2")


def _pdf_text(pdf: bytes) -> str:
    doc = pdfium.PdfDocument(pdf)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_download_a_quotes_pdf_from_its_page_in_english_and_chinese(page, live_server):
    rt = live_server.runtime
    system = Context(system=True)
    [quote] = rt.records.query("quote", order_by=("id",), limit=1)
    rt.records.update("quote", quote["id"], {"currency_code": "CNY"}, context=system)
    lines = rt.records.query("quote_line", where={"quote": quote["id"]}, limit=50)
    products = rt.records.fetch_many("product", {line["product"] for line in lines}, context=system)
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/quote/{quote['id']}")
    assert "CN¥" in page.locator("main").inner_text()
    button = page.locator('[data-document="document-quote_pdf"]')
    assert button.is_visible()
    with page.expect_download(timeout=30_000) as download:
        button.click(no_wait_after=True)   # a PDF takes a moment: wait for the download, not a navigation
    text = _pdf_text(download.value.path().read_bytes())
    assert quote["quote_number"] in text and rt.settings.company_name in text and "Grand total" in text
    assert download.value.suggested_filename == f"quote_pdf-{quote['quote_number']}.pdf"
    for product in products.values():   # each line's product (a long name may wrap: its first word)
        assert product["name"].split()[0] in text
    page.click("#lang-zh")
    page.wait_for_url(f"**/ui/quote/{quote['id']}")
    # Chromium holds a second download from the same page for the user's permission: fetch the
    # button's link with the page's session instead
    href = page.locator('[data-document="document-quote_pdf"]').get_attribute("href")
    assert href.endswith("lang=zh")
    response = page.request.get(href)
    assert response.status == 200 and response.headers["content-type"] == "application/pdf"
    text = _pdf_text(response.body())
    assert "报价单" in text and "总计" in text and quote["quote_number"] in text
    shot(page, "quote-zh")
