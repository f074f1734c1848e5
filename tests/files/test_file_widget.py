"""The ``file`` widget on the record form (server side): the form draws a file input that uploads at once
(htmx) and keeps the new id in a hidden input; the form saves it; a refusal shows under the input."""

from __future__ import annotations

import io

from engine.storage.records import Context
from tests.ui_kit import form_fields, make_site

FIELD = """
entity: account
fields:
  contract_scan: {type: file, label: Signed contract, max_size: 2000, types: [pdf]}
layouts:
  form:
    - section: {en: Contract}
      fields: [name, contract_scan]
"""
PDF = b"%PDF-1.4\n%%EOF\n"


def test_the_file_widget_uploads_and_the_form_saves_the_id(make_runtime, write_tree):
    rt = make_runtime(site_dir=write_tree("site", {"account_file.yaml": FIELD}))
    site = make_site(rt, seeded=False)
    account = rt.records.create("account", {"name": "Widget Co"}, context=Context(system=True))
    admin = site.browser(site.admin)
    page = admin.get(f"/ui/account/{account['id']}/edit").get_data(as_text=True)
    assert 'hx-post="/ui/account/_files/contract_scan"' in page and 'name="_upload_contract_scan"' in page

    r = admin.post("/ui/account/_files/contract_scan", {"_upload_contract_scan": (io.BytesIO(PDF), "合同.pdf")},
                   content_type="multipart/form-data")
    box = r.get_data(as_text=True)
    assert r.status_code == 200 and "合同.pdf" in box
    row = next(iter(_rows(rt)))
    assert f'name="contract_scan" value="{row["id"]}"' in box

    refused = admin.post("/ui/account/_files/contract_scan", {"_upload_contract_scan": (io.BytesIO(b"x" * 3000), "a.pdf")},
                         content_type="multipart/form-data").get_data(as_text=True)
    assert "larger than the limit of 2.0 KB" in refused and 'data-error-for="contract_scan"' in refused

    fields = dict(form_fields(page))
    fields["contract_scan"] = str(row["id"])
    fields.pop("_upload_contract_scan", None)
    r = admin.post(f"/ui/account/{account['id']}/edit", fields)
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    assert rt.records.get("account", account["id"])["contract_scan"] == row["id"]
    assert _rows(rt)[0]["record_id"] == account["id"]   # the upload now belongs to the record
    got = admin.get(f"/api/v1/account/{account['id']}/_files/contract_scan")
    assert got.status_code == 200 and got.data == PDF


def _rows(rt):
    import sqlalchemy as sa

    table = rt.records.metadata.tables["_crm_file"]
    with rt.records.db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]
