"""The import wizard in a real Chromium: a Chinese Excel file of customers (accounts) written with
openpyxl, headers in Chinese as the base CRM labels its fields, imported by a user reading the
interface in Chinese: the headers are mapped automatically, a dry run shows the two bad rows, the
error file is downloaded and names them with their reasons, the import creates the good rows (seen
in the list), and Undo removes them. Each step is screenshotted in English and Chinese at 1280 and
390 px wide (/tmp/wiz-<step>-<lang>-<width>.png, and var/screenshots/) and must not overflow a phone."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from openpyxl import Workbook

from .conftest import shot

pytestmark = pytest.mark.usefixtures("live_server")

HEADERS = ["客户名称", "行业", "电话", "账单城市"]
GOOD = [["上海明远科技有限公司", "科技", "+86 21 5555 0101", "上海"],
        ["北京华信咨询有限公司", "咨询", "+86 10 8888 0202", "北京"],
        ["杭州云栖零售有限公司", "零售", "+86 571 8765 4321", "杭州"]]
UNKNOWN_INDUSTRY = ["深圳远航贸易有限公司", "火星贸易", "+86 755 2222 3333", "深圳"]
NO_NAME = [None, "零售", "+86 20 3333 4444", "广州"]
WIDTHS = (1280, 390)
SHOTS = Path("/tmp")


def write_workbook(path: Path) -> Path:
    book = Workbook()
    sheet = book.active
    sheet.title = "客户"
    for row in [HEADERS, GOOD[0], UNKNOWN_INDUSTRY, GOOD[1], NO_NAME, GOOD[2]]:
        sheet.append(row)
    book.save(path)
    return path


def switch_language(page, code: str) -> None:
    """The navigation bar's language button (inside the collapsed menu on a phone: clicked by script)."""
    with page.expect_navigation():
        page.evaluate(f"document.getElementById('lang-{code}').click()")


def shots(page, step: str, lang: str = "zh") -> None:
    """The current page at each width in ``lang`` and then in the other language (back to ``lang``
    at the end); the page never scrolls sideways on a phone."""
    other = "en" if lang == "zh" else "zh"
    for i, language in enumerate((lang, other)):
        if i:
            switch_language(page, language)
        for width in WIDTHS if not i else tuple(reversed(WIDTHS)):
            page.set_viewport_size({"width": width, "height": 844 if width < 600 else 800})
            page.screenshot(path=str(SHOTS / f"wiz-{step}-{language}-{width}.png"), full_page=True)
            shot(page, f"{step}-{language}-{width}")
            if width < 600:
                overflow = page.evaluate("document.documentElement.scrollWidth")
                assert overflow <= width + 1, f"{step} ({language}) is {overflow}px wide on a {width}px phone"
    switch_language(page, lang)
    page.set_viewport_size({"width": 1280, "height": 800})


def counts(page) -> dict[str, int]:
    return {el.get_attribute("data-count"): int(el.text_content().replace(",", ""))
            for el in page.locator("[data-count]").all()}


def slow_leads(rt) -> list[dict]:
    return [r for r in rt.records.query("lead", limit=10000) if (r.get("company") or "").startswith("Slow Co")]


def account_names(rt) -> set[str]:
    return {a["name"] for a in rt.records.query("account", limit=10000)}


def test_import_chinese_customers_with_the_wizard_then_undo(make_page, live_server, tmp_path):
    rt = live_server.runtime
    before = account_names(rt)
    workbook = write_workbook(tmp_path / "客户名单.xlsx")
    page = make_page(locale="zh-CN")
    from .conftest import login

    login(page, live_server, live_server.admin)
    page.on("dialog", lambda dialog: dialog.accept())        # Undo asks first

    # 0. the list's Import button
    page.goto("/ui/account")
    page.locator('[data-import="import"]').click()
    page.wait_for_url(re.compile(r"/ui/imports/new\?entity=account$"))
    assert page.locator("#f-skip").count() == 1               # an administrator may skip automations
    shots(page, "1-upload")

    # 1. upload
    page.set_input_files("#f-file", str(workbook))
    page.locator("#upload-submit").click()
    page.wait_for_url(re.compile(r"/ui/imports/draft/[0-9a-f]{32}$"))
    draft_url = page.url

    # 2. the Chinese headers are mapped by the fields' Chinese labels
    mapped = {h: page.locator(f'.map-row[data-column="{h}"] select').input_value() for h in HEADERS}
    assert mapped == {"客户名称": "name", "行业": "industry", "电话": "phone", "账单城市": "billing_city"}
    assert "上海明远科技有限公司" in page.locator('.map-row[data-column="客户名称"] .samples').text_content()
    assert "客户" in page.locator("#file-facts").text_content()           # the sheet's name
    shots(page, "2-mapping")
    assert page.url == draft_url

    # 3. the dry run: three would be created, two fail, nothing written
    page.locator("#dry-run").click()
    page.wait_for_url(re.compile(r"/ui/imports/\d+\?draft="))
    page.locator("#counts").wait_for(timeout=30_000)          # the page reloads itself when the job ends
    assert counts(page) == {"created": 3, "updated": 0, "unchanged": 0, "failed": 2}
    errors = page.locator("#first-errors").text_content()
    assert "火星贸易" in errors and "行业" in errors               # the unknown option, in its column
    assert "客户名称" in errors and "required" in errors             # the missing name
    assert account_names(rt) == before
    shots(page, "3-dry-run")

    # the error file: the two rejected rows as they were, each with its reason
    with page.expect_download() as download:
        page.locator("#error-file").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig"))))
    assert rows[0] == [*HEADERS, "error"]
    # cells a spreadsheet would run (a phone starting with +) come back quoted, as every export writes them
    assert [r[:4] for r in rows[1:]] == [[*UNKNOWN_INDUSTRY[:2], "'" + UNKNOWN_INDUSTRY[2], UNKNOWN_INDUSTRY[3]],
                                         ["", *NO_NAME[1:2], "'" + NO_NAME[2], *NO_NAME[3:]]]
    assert "火星贸易" in rows[1][4] and "industry" in rows[1][4]
    assert "name" in rows[2][4] and "required" in rows[2][4]

    # 4./5. the import itself, then its result
    page.locator("#run-import").click()
    page.wait_for_url(re.compile(r"/ui/imports/\d+$"))
    page.locator("#counts").wait_for(timeout=30_000)
    assert counts(page) == {"created": 3, "updated": 0, "unchanged": 0, "failed": 2}
    result_url = page.url
    shots(page, "4-result")
    page.goto("/ui/account?sort=-id")
    listed = page.locator("#records tbody").text_content()
    for name, *_ in GOOD:
        assert name in listed
    assert UNKNOWN_INDUSTRY[0] not in listed
    [shanghai] = rt.records.query("account", where={"name": GOOD[0][0]}, limit=5)
    assert (shanghai["industry"], shanghai["billing_city"]) == ("technology", "上海")

    # Undo
    page.goto(result_url)
    page.locator("#undo-import").click()
    page.wait_for_url(result_url)
    assert page.locator("#flash").get_attribute("class").endswith("alert-success")
    assert account_names(rt) == before
    assert page.locator("#undo-import").count() == 0
    shots(page, "5-undone")

    page.goto("/ui/imports")
    assert page.locator("#imports tbody tr[data-id]").count() == 2         # the dry run and the import
    shots(page, "6-history")


def test_progress_shows_while_the_import_runs_and_cancel_stops_it(page, live_server, tmp_path, monkeypatch):
    """A slowed import (5 rows a chunk, a pause after each): the page shows rows done, rate and time
    left moving, then Cancel stops it after the chunk it is writing; what was written can be undone."""
    import time

    from engine.dataio.importing import service as service_module

    from .conftest import login

    rt = live_server.runtime
    imports = rt.extensions["imports"]
    slow = imports._chunk

    def paused(*args, **kwargs):
        done = slow(*args, **kwargs)
        time.sleep(0.4)
        return done

    monkeypatch.setattr(service_module, "CHUNK", 5)
    monkeypatch.setattr(imports, "_chunk", paused)
    path = tmp_path / "leads.csv"
    path.write_text("Last name,Company\n" + "".join(f"Slow {i},Slow Co {i}\n" for i in range(200)), "utf-8")
    login(page, live_server, live_server.admin)
    page.goto("/ui/imports/new?entity=lead")
    page.set_input_files("#f-file", str(path))
    page.locator("#upload-submit").click()
    page.wait_for_url(re.compile(r"/ui/imports/draft/"))
    page.locator("#run-now").click()
    page.wait_for_url(re.compile(r"/ui/imports/\d+"))
    assert page.locator("#rows-total").text_content() == "200"
    page.wait_for_function("parseInt(document.getElementById('rows-done').textContent.replace(/,/g, '')) >= 10")
    page.wait_for_function("document.getElementById('time-left').textContent.endsWith(' s')")
    assert float(page.locator("#rate").text_content().replace(",", "")) > 0
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(SHOTS / "wiz-progress-en-390.png"), full_page=True)
    shot(page, "progress")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.locator("#cancel-import").click()
    page.locator("#counts").wait_for(timeout=30_000)
    assert page.locator("#job-status").text_content() == "Cancelled"
    created = counts(page)["created"]
    assert 0 < created < 200
    assert len(slow_leads(rt)) == created
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#undo-import").click()
    page.locator("#flash").wait_for()
    assert slow_leads(rt) == []
