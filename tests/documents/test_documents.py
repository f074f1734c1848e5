"""Documents (a quote as a PDF): the text and pixels of the PDF in English and Chinese, the API's
permissions, `crm validate` on a template with a jinja error, the e-mail attachment; and amounts
shown in their currency (UI, CSV)."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.settings import ROOT
from engine.storage.records import Context
from tests.automation_kit import Harness

pdfium = pytest.importorskip("pypdfium2")

SYSTEM = Context(system=True)
COMPANY = "Northwind 北风贸易 Ltd"


def _quote(rt, currency="CNY", lines=(("Laptop Pro", 2, "1234.50", 0), ("Docking station", 3, "99.99", 10)),
           name="Office refresh"):
    acc = rt.records.create("account", {"name": "Acme Trading"}, context=SYSTEM)
    opp = rt.records.create("opportunity", {"name": "Deal", "account": acc["id"], "amount": 100,
                                            "close_date": date.today() + timedelta(days=30)}, context=SYSTEM)
    quote = rt.records.create("quote", {"name": name, "opportunity": opp["id"], "account": acc["id"],
                                        "currency_code": currency, "shipping": "5.00",
                                        "valid_until": date.today() + timedelta(days=30),
                                        "terms": "Payment within 30 days."}, context=SYSTEM)
    for i, (product, qty, price, discount) in enumerate(lines, 1):
        prod = rt.records.create("product", {"name": product, "code": f"P-{product[:3]}-{i}-{quote['id']}"},
                                 context=SYSTEM)
        rt.records.create("quote_line", {"quote": quote["id"], "position": i, "product": prod["id"], "quantity": qty,
                                         "unit_price": price, "discount": discount,
                                         "description": "with a 3-year warranty" if i == 1 else None}, context=SYSTEM)
    return rt.records.get("quote", quote["id"], context=SYSTEM)


def _text(pdf: bytes) -> str:
    doc = pdfium.PdfDocument(pdf)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


@pytest.fixture
def docs_api(make_runtime):
    from engine.app import create_app
    from engine.security.tokens import create_token

    rt = make_runtime(company_name=COMPANY, company_address="1 Harbour Road, Shanghai")
    admin = rt.records.create("user", {"name": "Ada", "email": "ada@example.com", "role": "admin"}, context=SYSTEM)
    service = rt.records.create("user", {"name": "Sid", "email": "sid@example.com", "role": "service"}, context=SYSTEM)
    tokens = {u["role"]: create_token(rt.records, u["id"], "tests")[1] for u in (admin, service)}
    return rt, create_app(runtime=rt).test_client(), tokens


def _get(client, token, path):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_the_quote_pdf_has_the_company_lines_and_totals_in_english(docs_api):
    rt, client, tokens = docs_api
    quote = _quote(rt)
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id']}/_documents/quote_pdf?lang=en")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "application/pdf" and r.data.startswith(b"%PDF")
    assert f"quote_pdf-{quote['quote_number']}.pdf" in r.headers["Content-Disposition"]
    text = " ".join(_text(r.data).split())   # a cell's text may wrap onto two lines
    # 2 x 1234.50 + 3 x 99.99 x 0.9 = 2469.00 + 269.973 -> 2738.97, no tax, shipping 5.00
    assert (quote["subtotal"], quote["grand_total"]) == (Decimal("2738.97"), Decimal("2743.97"))
    for expected in (COMPANY, "1 Harbour Road", quote["quote_number"], "Laptop Pro", "Docking station",
                     "Acme Trading", "with a 3-year warranty", "CN¥1,234.50", "CN¥269.97", "CN¥2,738.97", "CN¥5.00",
                     "CN¥2,743.97", "Subtotal",
                     "Grand total", "Payment within 30 days."):
        assert expected in text, (expected, text)


def test_the_quote_pdf_in_chinese_has_chinese_labels_that_render_as_glyphs(docs_api, tmp_path):
    rt, client, tokens = docs_api
    quote = _quote(rt)
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id']}/_documents/quote_pdf?lang=zh")
    assert r.status_code == 200, r.get_data(as_text=True)
    text = _text(r.data)
    for expected in ("报价单", "小计", "总计", "单价", "数量", "北风贸易", "¥2,738.97"):
        assert expected in text, (expected, text.replace("\r\n", " | ")[:3000])
    assert "CN¥" not in text   # in Chinese the yuan is plain ¥
    page = pdfium.PdfDocument(r.data)[0].render(scale=2).to_pil()
    page.save(tmp_path / "quote-zh.png")
    if os.environ.get("CRM_KEEP_PNG"):   # to look at it
        page.save(os.environ["CRM_KEEP_PNG"])


def test_two_chinese_characters_draw_different_glyphs_not_boxes():
    from engine.documents.pdf import find_font, html_to_pdf

    font = find_font(os.environ.get("CRM_PDF_FONT", ""))
    if font is None:
        pytest.skip("no CJK font here (tests/ui/install_browser.sh installs fonts-noto-cjk)")
    bitmaps = []
    for char in ("报", "价", "\uffff"):   # the last has no glyph in any font: the "box" (.notdef) if anything
        pdf = html_to_pdf(f"<p><font size=\"40\">{char}</font></p>", font=font)
        image = pdfium.PdfDocument(pdf)[0].render(scale=1).to_pil().convert("L")
        bitmaps.append(image.tobytes())
    one, two, missing = bitmaps
    assert any(b < 128 for b in one) and any(b < 128 for b in two), "the characters drew nothing"
    assert one != two, "two different characters drew the same pixels (boxes?)"
    assert one != missing and two != missing


def test_a_user_who_may_not_read_quotes_gets_no_pdf(docs_api):
    rt, client, tokens = docs_api
    quote = _quote(rt)
    r = _get(client, tokens["service"], f"/api/v1/quote/{quote['id']}/_documents/quote_pdf")
    assert r.status_code in (403, 404), r.status_code
    assert not r.data.startswith(b"%PDF")
    assert client.get(f"/api/v1/quote/{quote['id']}/_documents/quote_pdf").status_code == 401


def test_unknown_documents_and_languages_are_clear_errors(docs_api):
    rt, client, tokens = docs_api
    quote = _quote(rt)
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id']}/_documents/nope")
    assert r.status_code == 404
    r = _get(client, tokens["admin"], f"/api/v1/account/{quote['account']}/_documents/quote_pdf")
    assert r.status_code == 404
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id']}/_documents/quote_pdf?lang=fr")
    assert r.status_code == 400
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id'] + 999}/_documents/quote_pdf")
    assert r.status_code == 404


def test_the_document_route_is_in_the_openapi_document(docs_api):
    _rt, client, tokens = docs_api
    doc = _get(client, tokens["admin"], "/api/v1/openapi.json").get_json()
    op = doc["paths"]["/api/v1/quote/{record_id}/_documents/quote_pdf"]["get"]
    assert "application/pdf" in op["responses"]["200"]["content"]


SITE_DOC = """
document: broken_pdf
of: quote
template: documents/broken.html.j2
"""


def test_crm_validate_reports_a_jinja_syntax_error_at_the_template_file_and_line(tmp_path):
    site = tmp_path / "site"
    (site / "documents").mkdir(parents=True)
    (site / "documents.yaml").write_text(SITE_DOC, encoding="utf-8")
    (site / "documents" / "broken.html.j2").write_text("<h1>{{ record.name }}</h1>\n<p>ok</p>\n{% if record.name %}\n"
                                                        "<p>{{ record.name | }}</p>\n", encoding="utf-8")
    env = {**os.environ, "CRM_SITE_DIR": str(site), "CRM_PLUGIN_DIRS": ""}
    out = subprocess.run([sys.executable, "-m", "engine.cli", "validate"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=False)
    assert out.returncode != 0
    report = out.stdout + out.stderr
    assert "broken.html.j2:4" in report and "document broken_pdf" in report, report


def test_a_template_error_at_render_time_names_the_document(docs_api):
    from engine.documents.plugin import documents_of
    from engine.documents.spec import environment

    rt, client, tokens = docs_api
    quote = _quote(rt)
    service = documents_of(rt)
    spec = service.specs["quote_pdf"]
    bad = type(spec)(**{**spec.__dict__, "template": environment().from_string("<p>{{ record.nme.upper() }}</p>")})
    service.specs = {**service.specs, "quote_pdf": bad}
    r = _get(client, tokens["admin"], f"/api/v1/quote/{quote['id']}/_documents/quote_pdf")
    assert r.status_code == 422 and "quote_pdf" in r.get_json()["detail"], r.get_data(as_text=True)


EMAIL = """
automation: send_quote
on: {entity: quote, events: [updated], changed: [status]}
when: "status = 'presented'"
actions:
  - do: send_email
    to: "'buyer@example.com'"
    subject: "Quote {{ record.quote_number }}"
    body: "Please find the quote attached."
    attach: [quote_pdf]
    lang: zh
"""


def test_an_automation_e_mail_carries_the_quote_pdf(make_runtime, write_tree, smtp, receiver):
    rt = make_runtime(site_dir=write_tree("site", {"automations.yaml": EMAIL}), company_name=COMPANY,
                      mail_url=f"smtp://127.0.0.1:{smtp.port}")
    harness = Harness(rt, "inprocess", {}, receiver, smtp)
    quote = _quote(rt)
    rt.records.update("quote", quote["id"], {"status": "presented"}, context=SYSTEM)
    [run] = harness.settle(automation="send_quote")
    assert run["status"] == "done", run
    [mail] = smtp.messages
    message = email.message_from_bytes(mail["data"])
    [part] = [p for p in message.walk() if p.get_content_type() == "application/pdf"]
    assert part.get_filename() == f"quote_pdf-{quote['quote_number']}.pdf"
    text = _text(part.get_payload(decode=True))
    assert "报价单" in text and "Laptop Pro" in text and COMPANY in text


def test_an_attachment_nobody_makes_fails_the_action(make_runtime, write_tree, smtp, receiver):
    rt = make_runtime(site_dir=write_tree("site", {"automations.yaml": EMAIL.replace("[quote_pdf]", "[nope_pdf]")}),
                      mail_url=f"smtp://127.0.0.1:{smtp.port}", job_backoff=0.01)
    harness = Harness(rt, "inprocess", {}, receiver, smtp)
    quote = _quote(rt)
    rt.records.update("quote", quote["id"], {"status": "presented"}, context=SYSTEM)
    runs = harness.settle(automation="send_quote")
    assert runs and runs[-1]["status"] != "done" and "nope_pdf" in (runs[-1].get("error") or "")
    assert smtp.messages == []

ROLE = """
role: quoter
label: {en: Quoter}
entities:
  quote: {allow: [read], scope: all, fields: {terms: none, shipping: none}}
  quote_line: {allow: [read], scope: all, fields: {unit_price: none}}
  product: {allow: [read]}
  account: {allow: [read]}
"""


def test_fields_the_reader_may_not_read_are_not_in_the_pdf(make_runtime, write_tree):
    from engine.app import create_app
    from engine.security.tokens import create_token

    rt = make_runtime(site_dir=write_tree("site", {"roles.yaml": ROLE}))
    user = rt.records.create("user", {"name": "Quinn", "email": "q@example.com", "role": "quoter"}, context=SYSTEM)
    admin = rt.records.create("user", {"name": "Ada", "email": "ada@example.com", "role": "admin"}, context=SYSTEM)
    quote = _quote(rt)
    client = create_app(runtime=rt).test_client()
    path = f"/api/v1/quote/{quote['id']}/_documents/quote_pdf"
    full = _text(_get(client, create_token(rt.records, admin["id"], "t")[1], path).data)
    r = _get(client, create_token(rt.records, user["id"], "t")[1], path)
    assert r.status_code == 200, r.get_data(as_text=True)
    text = _text(r.data)
    assert "Payment within 30 days." in full and "CN¥5.00" in full and "CN¥1,234.50" in full
    assert "Payment within 30 days." not in text and "CN¥5.00" not in text and "CN¥1,234.50" not in text
    assert "Laptop Pro" in text and "Acme Trading" in text   # what the role may read is there (a total computed
    assert "CN¥2,469.00" not in text                    # from a hidden price is hidden too)


def test_without_a_cjk_font_the_pdf_is_latin_with_a_warning(caplog):
    from engine.documents import pdf as module
    from engine.documents.pdf import html_to_pdf

    module._warned.clear()   # the warning is logged once per process
    with caplog.at_level("WARNING", logger="engine.documents.pdf"):
        pdf = html_to_pdf("<h1>Quote 报价单</h1><p>Total $5.00</p>", font=None)
    text = _text(pdf)
    assert "Quote ???" in text and "Total $5.00" in text
    assert any("no CJK font" in r.getMessage() for r in caplog.records)


def test_crm_pdf_font_chooses_the_font_and_a_wrong_one_is_a_clear_error(make_runtime, tmp_path):
    from engine.app import create_app
    from engine.documents.pdf import FontMissing, find_font
    from engine.security.tokens import create_token

    with pytest.raises(FontMissing, match="CRM_PDF_FONT"):
        find_font(str(tmp_path / "nope.ttf"))
    other = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    if other.is_file():
        assert find_font(str(other)) == (other, 0)
    rt = make_runtime(pdf_font=str(tmp_path / "nope.ttf"))
    admin = rt.records.create("user", {"name": "Ada", "email": "ada@example.com", "role": "admin"}, context=SYSTEM)
    quote = _quote(rt)
    r = _get(create_app(runtime=rt).test_client(), create_token(rt.records, admin["id"], "t")[1],
             f"/api/v1/quote/{quote['id']}/_documents/quote_pdf")
    assert r.status_code == 422 and "quote_pdf" in r.get_json()["detail"] and "CRM_PDF_FONT" in r.get_json()["detail"]


def test_a_reader_of_the_quote_who_may_not_read_its_lines_gets_it_without_lines(make_runtime, write_tree):
    from engine.app import create_app
    from engine.security.tokens import create_token

    role = ROLE.replace("  quote_line: {allow: [read], scope: all, fields: {unit_price: none}}\n", "")
    rt = make_runtime(site_dir=write_tree("site", {"roles.yaml": role}))
    user = rt.records.create("user", {"name": "Quinn", "email": "q@example.com", "role": "quoter"}, context=SYSTEM)
    quote = _quote(rt)
    r = _get(create_app(runtime=rt).test_client(), create_token(rt.records, user["id"], "t")[1],
             f"/api/v1/quote/{quote['id']}/_documents/quote_pdf")
    assert r.status_code == 200, r.get_data(as_text=True)
    text = _text(r.data)
    assert "Unit price" in text and "Laptop Pro" not in text and "Office refresh" in text
