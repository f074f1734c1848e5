"""Export -> import in update mode changes nothing (issue 16): what an export writes (lookup and owner
titles, picklist labels, dates, amounts, text a spreadsheet would run with its quote) is what the
import reads back, in CSV and in XLSX, in English and in Chinese headers."""

from __future__ import annotations

import pytest

from engine.security.permissions import access_for
from engine.storage.context import Context

from .import_kit import admin, run_import

SYSTEM = Context(system=True)
#: What the records' version, timestamps and computed signals move by; the rest must not change.
MOVING = {"version", "updated_at", "updated_by"}


def _leads(crm, owner):
    acc = crm.records.create("account", {"name": "Acme GmbH"}, context=SYSTEM)
    rows = [{"last_name": "Li", "first_name": "Lei", "company": "华为技术", "status": "working", "rating": "hot",
             "email": "li@example.com", "phone": "+1 201 555 0101", "annual_revenue": "1234567.89",
             "employees": 40, "description": "=HYPERLINK(\"http://x\")", "owner_id": owner["id"]},
            {"last_name": "O'Neil", "company": "-minus corp", "status": "new", "owner_id": owner["id"],
             "lead_source": "web", "city": "  Berlin "}]
    out = [crm.records.create("lead", r, context=SYSTEM) for r in rows]
    return acc, out


@pytest.mark.parametrize("file, lang, headers", [("csv", "en", "name"), ("xlsx", "zh", "label"), ("csv", "zh", "label")])
def test_an_export_imported_back_in_update_mode_changes_nothing(crm, api, tmp_path, file, lang, headers):
    boss = admin(crm)
    _, leads = _leads(crm, boss)
    before = {r["id"]: r for r in crm.records.query("lead", limit=100)}
    r = api.get(f"/api/v1/lead/_export?file={file}&lang={lang}&headers={headers}")
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    path = tmp_path / f"leads.{file}"
    path.write_bytes(r.get_data())
    access = access_for(crm.records, boss["id"])
    job = run_import(crm, path, "lead", mode="update", user_id=boss["id"], access=access)
    assert job["status"] == "done", job
    from engine.dataio.importing.plugin import imports_of
    assert job["failed"] == 0, imports_of(crm).first_errors(job["id"])
    after = {r["id"]: r for r in crm.records.query("lead", limit=100)}
    for rid, old in before.items():
        changed = {k: (old[k], after[rid][k]) for k in old if k not in MOVING and old[k] != after[rid][k]}
        assert changed == {}, (rid, changed)
