"""The import wizard's screens through the Flask test client: each step, the rights checked on every
route, CSRF, drafts and imports private to their user, escaping. The browser test of the whole wizard
with a Chinese Excel file is tests/ui/test_ui_import.py."""

from __future__ import annotations

import io
import re

import pytest

from engine.dataio.importing.plugin import imports_of

pytest.register_assert_rewrite("tests.ui_kit")
from tests.ui_kit import esc, text

pytest_plugins = ("tests.ui_kit",)   # the fixtures site and admin

CSV = (b"Account name,Industry,Phone,Rating\n"
       b"Alpha Ltd,Banking,+1 201 555 0100,Hot\n"
       b"Beta GmbH,Not an industry,+49 30 1234,Warm\n"
       b",Retail,+1 201 555 0101,Cold\n"
       b"Gamma Inc,Retail,+1 201 555 0102,\n")


def upload(web, entity="account", content=CSV, name="accounts.csv", **options):
    data = {"entity": entity, "mode": "create", "unresolved": "error", **options,
            "file": (io.BytesIO(content), name)}
    return web.post(f"/ui/imports/new?entity={entity}", data, content_type="multipart/form-data")


def token_of(response) -> str:
    assert response.status_code == 302, text(response)[-800:]
    found = re.search(r"/ui/imports/draft/([0-9a-f]{32})$", response.headers["Location"])
    assert found, response.headers["Location"]
    return found.group(1)


def mapping_form(page: str) -> dict:
    """The mapping form's selected values, as the browser would post them."""
    form = {}
    for name, body in re.findall(r'<select[^>]*name="((?:map|cf)-\d+)"[^>]*>(.*?)</select>', page, re.DOTALL):
        chosen = re.search(r'<option value="([^"]*)" selected', body)
        form[name] = chosen.group(1) if chosen else ""
    form["constants"] = re.search(r'name="constants" value="(\d+)"', page).group(1)
    return form


def job_of(response) -> int:
    assert response.status_code == 302, text(response)[-1500:]
    return int(re.search(r"/ui/imports/(\d+)", response.headers["Location"]).group(1))


def finish(site):
    assert imports_of(site.rt).worker.drain(30)


def test_upload_map_dry_run_import_and_undo(site, admin):
    before = len(site.records.query("account", limit=1000))
    token = token_of(upload(admin))
    page = text(admin.get(f"/ui/imports/draft/{token}"))
    form = mapping_form(page)
    assert [form[f"map-{i}"] for i in range(4)] == ["name", "industry", "phone", "rating"]   # auto-mapped
    assert "Alpha Ltd · Beta GmbH · Gamma Inc" in page                                        # first values
    assert "CSV, encoding utf-8, delimiter ," in page

    dry = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "dry_run"}))
    finish(site)
    page = text(admin.get(f"/ui/imports/{dry}?draft={token}"))
    counts = dict(re.findall(r'data-count="(\w+)">([\d,]+)<', page))
    assert counts == {"created": "2", "updated": "0", "unchanged": "0", "failed": "2"}
    assert "Would create" in page and 'id="first-errors"' in page
    assert esc("'Not an industry'") in page or "Not an industry" in page
    assert len(site.records.query("account", limit=1000)) == before                        # wrote nothing
    errors = admin.get(f"/ui/imports/{dry}/errors.csv")
    assert errors.status_code == 200 and errors.mimetype == "text/csv"
    body = errors.get_data(as_text=True)
    assert "Beta GmbH" in body and "Not an industry" in body and "required" in body
    assert f'href="/ui/imports/draft/{token}"' in page                                      # back to the mapping

    real = job_of(admin.post(f"/ui/imports/{dry}/run"))
    finish(site)
    page = text(admin.get(f"/ui/imports/{real}"))
    assert 'id="undo-import"' in page
    names = {a["name"] for a in site.records.query("account", limit=1000)}
    assert {"Alpha Ltd", "Gamma Inc"} <= names and "Beta GmbH" not in names
    history = text(admin.get("/ui/imports"))
    assert f'data-id="{real}"' in history and f'data-id="{dry}"' in history

    undone = admin.post(f"/ui/imports/{real}/revert")
    assert undone.status_code == 302
    assert "Import undone: 2 record(s)" in text(admin.get(undone.headers["Location"]))
    assert len(site.records.query("account", limit=1000)) == before


def test_undo_names_the_record_changed_since(site, admin):
    token = token_of(upload(admin))
    form = mapping_form(text(admin.get(f"/ui/imports/draft/{token}")))
    real = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "run"}))
    finish(site)
    [alpha] = site.records.query("account", where={"name": "Alpha Ltd"}, limit=5)
    site.records.update("account", alpha["id"], {"phone": "+1 201 555 0199"}, version=alpha["version"])
    answer = admin.post(f"/ui/imports/{real}/revert")
    message = text(admin.get(answer.headers["Location"]))
    assert "1 refused" in message and "changed since the import" in message
    assert [a["name"] for a in site.records.query("account", where={"name": "Alpha Ltd"}, limit=5)] == ["Alpha Ltd"]
    assert site.records.query("account", where={"name": "Gamma Inc"}, limit=5) == []


def test_saved_mapping_constants_and_a_changed_column(site, admin):
    token = token_of(upload(admin))
    form = mapping_form(text(admin.get(f"/ui/imports/draft/{token}")))
    form.update({"map-3": "", "cf-0": "type", "cv-0": "正式客户", "mapping_name": "crm export"})
    saved = admin.post(f"/ui/imports/draft/{token}", {**form, "action": "save"})
    assert saved.status_code == 302 and "mapping=crm+export" in saved.headers["Location"]
    again = token_of(upload(admin))
    page = text(admin.get(f"/ui/imports/draft/{again}?mapping=crm+export"))
    loaded = mapping_form(page)
    assert loaded["map-3"] == "" and loaded["cf-0"] == "type" and 'value="customer"' in page   # the label became its value
    job = job_of(admin.post(f"/ui/imports/draft/{again}", {**loaded, "cv-0": "customer", "action": "run"}))
    finish(site)
    [alpha] = site.records.query("account", where={"name": "Alpha Ltd"}, limit=5)
    assert alpha["type"] == "customer" and alpha["rating"] == "warm"                          # rating ignored: default
    assert imports_of(site.rt).get(job)["created"] == 2


def test_rights_on_every_route(site, admin):
    manager = site.user("manager@example.com", "manager", team=site.team)
    sales = site.browser(site.sales)            # sales: import on leads, not on accounts
    assert sales.get("/ui/imports/new?entity=account").status_code == 403
    assert sales.post("/ui/imports/begin/account").status_code == 403
    assert upload(sales).status_code == 403
    assert 'data-import="import"' not in text(sales.get("/ui/account"))
    assert 'data-import="import"' in text(sales.get("/ui/lead"))
    assert sales.get("/ui/imports/new?entity=lead").status_code == 200

    token = token_of(upload(admin))
    form = mapping_form(text(admin.get(f"/ui/imports/draft/{token}")))
    job = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "run"}))
    finish(site)
    boss = site.browser(manager)                # may import accounts, but neither the admin's draft nor job
    for url in (f"/ui/imports/draft/{token}", f"/ui/imports/{job}", f"/ui/imports/{job}/status",
                f"/ui/imports/{job}/errors.csv"):
        assert boss.get(url).status_code == 404, url
    for url in (f"/ui/imports/{job}/revert", f"/ui/imports/{job}/cancel", f"/ui/imports/{job}/run"):
        assert boss.post(url).status_code == 404, url
    assert f'data-id="{job}"' not in text(boss.get("/ui/imports"))
    assert admin.post(f"/ui/imports/{job}/revert", csrf=False).status_code == 403    # CSRF
    assert len(site.records.query("account", where={"name": "Alpha Ltd"}, limit=5)) == 1
    refused = upload(boss, skip_automations="1")                                     # admins only
    assert refused.status_code == 403 and "Only an administrator" in text(refused)
    anonymous = site.browser()
    assert anonymous.get("/ui/imports").status_code == 302


def test_bad_files_and_headers_are_shown_escaped(site, admin):
    empty = upload(admin, content=b"", name="empty.csv")
    assert empty.status_code == 422 and "the file is empty" in text(empty)
    binary = upload(admin, content=b"\x00\x01\x02garbage" * 20, name="x.csv")
    assert binary.status_code == 422 and "binary" in text(binary)
    token = token_of(upload(admin, content=b"<script>alert(1)</script>,Account name\n<b>x</b>,Delta\n"))
    page = text(admin.get(f"/ui/imports/draft/{token}"))
    assert "<script>alert(1)</script>" not in page and esc("<script>alert(1)</script>") in page
    assert "<b>x</b>" not in page
    twice = mapping_form(page)
    twice["map-0"] = "name"
    answer = admin.post(f"/ui/imports/draft/{token}", {**twice, "action": "dry_run"})
    assert answer.status_code == 422 and "both mapped to" in text(answer)


def test_the_upload_takes_files_beyond_the_request_limit_up_to_the_import_limit(site, admin, monkeypatch):
    from engine.dataio.importing import service as service_module

    monkeypatch.setattr(service_module, "MAX_MB", 34)
    rows = b"".join(b"Company %07d,Banking\n" % i for i in range(1_420_000))     # 34 MB: over the 32 MB of the API
    big = b"Account name,Industry\n" + rows
    assert len(big) > 32 * 1024 * 1024
    token_of(upload(admin, content=big, name="big.csv"))
    monkeypatch.setattr(service_module, "MAX_MB", 1)
    refused = upload(admin, content=big[:3 * 1024 * 1024], name="big.csv")
    assert refused.status_code == 413 and "larger than 1 MB" in text(refused)
    assert 'id="upload-form"' in text(refused)


def test_the_file_is_read_again_with_another_delimiter_and_encoding(site, admin):
    content = "Account name;Industry\nZürich AG;Banking\n".encode("latin-1")
    token = token_of(upload(admin, content=content))
    page = text(admin.get(f"/ui/imports/draft/{token}"))
    assert "delimiter ;" in page and "Zürich AG" in page and "2 columns" in page
    reread = {"constants": "0", "action": "reread", "encoding": "utf-8", "delimiter": ";", "locale": "de"}
    assert admin.post(f"/ui/imports/draft/{token}", reread).status_code == 302
    page = text(admin.get(f"/ui/imports/draft/{token}"))                  # ü is no UTF-8: said, not a crash
    assert "not readable as utf-8" in page and 'id="import-error"' in page
    reread.update(encoding="latin-1", delimiter=",")
    assert admin.post(f"/ui/imports/draft/{token}", reread).status_code == 302
    page = text(admin.get(f"/ui/imports/draft/{token}"))
    assert "CSV, encoding latin-1, delimiter ," in page and "1 columns" in page and "Zürich AG;Banking" in page
    assert '<option value="de" selected>' in page



def test_upsert_by_a_unique_key_chosen_on_the_upload_page(site, admin):
    from engine.storage.records import Context

    site.records.create("account", {"name": "Old name", "account_number": "AC-1"}, context=Context(system=True))
    content = b"Account number,Account name\nAC-1,New name\nAC-2,Second\n"
    assert upload(admin, content=content, mode="upsert").status_code == 422       # an upsert needs its key
    token = token_of(upload(admin, content=content, mode="upsert", key="account_number"))
    form = mapping_form(text(admin.get(f"/ui/imports/draft/{token}")))
    assert (form["map-0"], form["map-1"]) == ("account_number", "name")
    job = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "run"}))
    finish(site)
    done = imports_of(site.rt).get(job)
    assert (done["created"], done["updated"], done["failed"]) == (1, 1, 0)
    assert [a["name"] for a in site.records.query("account", where={"account_number": "AC-1"}, limit=5)] == ["New name"]


def test_the_duplicates_choice_and_constants_for_a_lookup_and_the_owner(site, admin):
    """The upload page offers what ``--duplicates`` does; a constant may name a linked record or the
    owner as a cell would, resolved like a mapped lookup (and refused like one when it finds nothing)."""
    from engine.storage.records import Context

    system = Context(system=True)
    site.records.create("account", {"name": "Alpha Ltd"}, context=system)
    parent = site.records.create("account", {"name": "Holding Group"}, context=system)
    page = text(admin.get("/ui/imports/new?entity=account"))
    assert 'name="duplicates"' in page and 'value="skip"' in page and 'value="update"' in page
    assert upload(admin, duplicates="sometimes").status_code == 422
    token = token_of(upload(admin, duplicates="skip"))
    page = text(admin.get(f"/ui/imports/draft/{token}"))
    assert '<option value="owner_id"' in page and '<option value="parent_account"' in page
    form = mapping_form(page)
    form.update({"cf-0": "parent_account", "cv-0": "Holding Group", "cf-1": "owner_id", "cv-1": "sales@example.com"})
    job = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "run"}))
    finish(site)
    done = imports_of(site.rt).get(job)
    assert (done["created"], done["unchanged"]) == (1, 1), done          # Alpha skipped as a duplicate; Beta, blank fail
    [gamma] = site.records.query("account", where={"name": "Gamma Inc"}, limit=5)
    assert gamma["parent_account"] == parent["id"] and gamma["owner_id"] == site.sales["id"]
    assert len(site.records.query("account", where={"name": "Alpha Ltd"}, limit=5)) == 1
    # a constant naming no record: refused per row like a cell (unresolved = error)
    token = token_of(upload(admin, content=b"Account name\nDelta\n"))
    form = mapping_form(text(admin.get(f"/ui/imports/draft/{token}")))
    form.update({"cf-0": "parent_account", "cv-0": "No such group"})
    job = job_of(admin.post(f"/ui/imports/draft/{token}", {**form, "action": "run"}))
    finish(site)
    assert (imports_of(site.rt).get(job)["created"], imports_of(site.rt).get(job)["failed"]) == (0, 1)
