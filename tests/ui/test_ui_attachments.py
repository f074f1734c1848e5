"""Attachments on a record page, in a real Chromium: attach a PDF and an image to an account (the image
shows as a thumbnail, the PDF opens in the browser), download them as another user who may read the
account, get nothing as one who may not; refused uploads (over the limit, a refused type, a name with
nothing usable) show a message naming the reason."""

from __future__ import annotations

import pytest

from engine.files.service import Limits
from engine.storage.records import Context

from .conftest import _add_user, login, shot

pytestmark = pytest.mark.usefixtures("live_server")



def _pdf() -> bytes:
    """A real one-page PDF (the browser's viewer shows it)."""
    import io

    pdfium = pytest.importorskip("pypdfium2")
    doc = pdfium.PdfDocument.new()
    doc.new_page(300, 200)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


PDF = _pdf()
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")


def _attach(page, name, mime, data):
    page.set_input_files("#attachment-file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.click("#attachment-submit")
    page.wait_for_load_state()


def test_attach_view_download_and_refuse_on_an_account_page(make_page, live_server):
    rt = live_server.runtime
    account = rt.records.create("account", {"name": "Attachment Test Co", "type": "customer"},
                                context=Context(system=True))
    agent = _add_user(rt, "agent@example.com", "Sia Service", "service", "agent-password-1")
    page = make_page()
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/account/{account['id']}")
    panel = page.locator('[data-panel="attachments"]')
    assert "No files attached." in panel.inner_text()
    _attach(page, "合同 2026.pdf", "application/pdf", PDF)
    assert "Attached 合同 2026.pdf." in page.locator("main").inner_text()
    _attach(page, "logo.png", "image/png", PNG)
    panel = page.locator('[data-panel="attachments"]')
    assert panel.locator("img").count() == 1   # the image's thumbnail
    assert "合同 2026.pdf" in panel.inner_text() and "Ada Admin" in panel.inner_text()
    shot(page, "attached")

    # refused: over the limit, a type not allowed, a name with nothing usable
    files = rt.extensions["files"]
    files.default_limits = Limits(200, files.default_limits.types)
    _attach(page, "big.pdf", "application/pdf", PDF + b"x" * 300)
    assert "larger than the limit of 200 B" in page.locator("main").inner_text()
    files.default_limits = Limits(25 * 1024 * 1024, files.default_limits.types)
    _attach(page, "tool.exe", "application/octet-stream", b"MZ\x90\x00")
    assert "files of type .exe are not allowed" in page.locator("main").inner_text()
    _attach(page, "page.pdf", "application/pdf", b"<html><script>alert(1)</script></html>")
    assert "not a .pdf file" in page.locator("main").inner_text()
    _attach(page, "..pdf", "application/pdf", PDF)
    assert "is not usable" in page.locator("main").inner_text()
    shot(page, "refused")
    assert page.locator('[data-panel="attachments"] [data-attachment]').count() == 2

    links = {a.inner_text(): a.get_attribute("href") for a in page.locator('[data-download]').all()}
    pdf_url, png_url = links["合同 2026.pdf"], links["logo.png"]

    # another user who may read the account downloads both
    other = make_page()
    login(other, live_server, agent.email, agent.password)
    other.goto(f"/ui/account/{account['id']}")
    assert other.locator("#attachment-upload").count() == 0   # may read, not update: no upload, no delete
    assert other.locator("[data-delete-attachment]").count() == 0
    r = other.request.get(pdf_url)
    assert r.status == 200 and r.body() == PDF
    assert r.headers["content-disposition"].startswith("attachment;") and "UTF-8''" in r.headers["content-disposition"]
    assert r.headers["x-content-type-options"] == "nosniff"
    r = other.request.get(png_url + "?inline=1")
    assert r.status == 200 and r.body() == PNG and r.headers["content-disposition"].startswith("inline;")
    other.goto(pdf_url + "?inline=1")   # a PDF opens in the browser
    shot(other, "pdf-inline")

    # a sales rep of another team does not see the account: its files are not found for them
    rep = make_page()
    login(rep, live_server, live_server.sales)
    r = rep.request.get(pdf_url)
    assert r.status in (403, 404) and r.body() != PDF
    assert rep.goto(f"/ui/account/{account['id']}").status in (403, 404)

    # the admin deletes one
    page.once("dialog", lambda d: d.accept())
    page.locator("[data-delete-attachment]").first.click()
    page.wait_for_load_state()
    assert page.locator('[data-panel="attachments"] [data-attachment]').count() == 1


def test_attachments_panel_at_phone_width(make_page, live_server):
    rt = live_server.runtime
    account = rt.records.create("account", {"name": "Phone Co", "type": "customer"}, context=Context(system=True))
    page = make_page(viewport={"width": 390, "height": 844})
    login(page, live_server, live_server.admin)
    page.goto(f"/ui/account/{account['id']}")
    _attach(page, "a-rather-long-file-name-for-a-small-screen-合同.pdf", "application/pdf", PDF)
    panel = page.locator('[data-panel="attachments"]')
    panel.scroll_into_view_if_needed()
    box = panel.bounding_box()
    assert box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone")
