"""The import engine end to end at the service level: mapping rules, conversions, lookups, modes."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.dataio.importing.plugin import imports_of
from engine.dataio.importing.service import ImportError_
from engine.storage.context import Context

from .import_kit import admin, records, run_import, site, write_csv  # noqa: F401 - site is a fixture


def test_headers_map_by_name_and_by_label_in_any_language(crm, tmp_path):
    path = write_csv(tmp_path / "a.csv", [["客户名称", "ACCOUNT_NUMBER", " 类 型 ", "Employees", "ｗｅｂｓｉｔｅ", "Notes?"],
                                          ["Acme", "A1", "正式客户", "1,200", "https://a.com", "x"],
                                          ["Beta", "A2", "Prospect", "5", "", ""]])
    job = run_import(crm, path, "account")
    assert (job["status"], job["created"], job["failed"]) == ("done", 2, 0)
    acme, beta = records(crm, "account")
    assert (acme["name"], acme["account_number"], acme["type"], acme["employees"], acme["website"]) == (
        "Acme", "A1", "customer", 1200, "https://a.com")
    assert (beta["type"], beta["website"]) == ("prospect", None)
    assert job["options"]["mapping"]["columns"]["Notes?"] is None   # unknown header: ignored


def test_edited_mapping_ignore_and_constants(crm, tmp_path):
    path = write_csv(tmp_path / "a.csv", [["Company", "Number", "Account name"], ["Acme", "A1", "ignored"]])
    job = run_import(crm, path, "account", mapping={"columns": {"Company": "name", "Number": "account_number",
                                                                 "Account name": None},
                                                     "constants": {"rating": "hot"}})
    assert job["created"] == 1
    (acme,) = records(crm, "account")
    assert (acme["name"], acme["account_number"], acme["rating"]) == ("Acme", "A1", "hot")


@pytest.mark.parametrize("mapping, message", [
    ({"columns": {"A": "name", "B": "name"}}, "both mapped to 'name'"),
    ({"columns": {"A": "nope"}}, "is no field of account"),
    ({"columns": {"Z": "name"}}, "no column is mapped"),   # a column the file lacks is ignored
    ({"columns": {"A": "name"}, "constants": {"name": "x"}}, "has a constant and the column"),
])
def test_bad_mappings_are_refused_naming_the_column(crm, tmp_path, mapping, message):
    path = write_csv(tmp_path / "a.csv", [["A", "B"], ["x", "y"]])
    with pytest.raises(ImportError_, match=message):
        run_import(crm, path, "account", mapping=mapping)


def test_saved_mapping_is_used_next_time(crm, tmp_path):
    from engine.dataio.importing.plugin import imports_of
    from engine.dataio.importing.store import load_mapping, save_mapping

    service = imports_of(crm)
    save_mapping(service, "account", "erp", {"columns": {"Firma": "name", "Nr": "account_number"}}, user_id=None)
    path = write_csv(tmp_path / "a.csv", [["Firma", "Nr"], ["Acme GmbH", "7"]])
    job = run_import(crm, path, "account", mapping=load_mapping(service, "account", "erp"))
    assert job["created"] == 1 and records(crm, "account")[0]["account_number"] == "7"
    with pytest.raises(ImportError_, match="no mapping 'other'"):
        load_mapping(service, "account", "other")


def test_picklists_by_value_or_label_in_any_language(crm, tmp_path):
    path = write_csv(tmp_path / "a.csv", [["name", "type", "industry"], ["A", "合作伙伴", "BANKING"],
                                          ["B", "Reseller", "零售"], ["C", "no such", ""]])
    job = run_import(crm, path, "account")
    assert (job["created"], job["failed"]) == (2, 1)
    assert [(r["type"], r["industry"]) for r in records(crm, "account")] == [("partner", "banking"),
                                                                              ("reseller", "retail")]


@pytest.mark.parametrize("locale, amount, day", [
    ("en", "1,234.56", "12/31/2026"), ("de", "1.234,56", "31.12.2026"), ("fr", "1 234,56", "31/12/2026"),
    ("zh", "1,234.56", "2026/12/31"), ("zh", "¥1,234.56", "2026年12月31日"), (None, "1234.56", "2026-12-31")])
def test_numbers_and_dates_in_the_files_locale(site, tmp_path, locale, amount, day):
    path = write_csv(tmp_path / "v.csv", [["subject", "amount", "visited_on", "done"], ["v", amount, day, "是"]])
    job = run_import(site, path, "visit", locale=locale)
    assert job["created"] == 1, job
    (visit,) = records(site, "visit")
    assert (visit["amount"], visit["visited_on"], visit["done"]) == (Decimal("1234.56"), date(2026, 12, 31), True)


def test_two_date_formats_in_one_column_is_an_error_naming_the_row(site, tmp_path):
    from engine.dataio.importing.plugin import imports_of

    path = write_csv(tmp_path / "v.csv", [["subject", "visited_on"], ["a", "31.12.2026"], ["b", "2026-12-30"],
                                          ["c", "1,5"]])
    job = run_import(site, path, "visit", locale="de")
    assert (job["created"], job["failed"]) == (1, 2)
    errors = imports_of(site).first_errors(job["id"])["visited_on"]
    assert errors[0]["row"] == 3 and "row 2 of this column is written DD.MM.YYYY" in errors[0]["message"]
    assert errors[1]["row"] == 4 and "is not a date" in errors[1]["message"]


def test_cells_starting_with_formula_signs_are_kept_as_text(crm, tmp_path):
    path = write_csv(tmp_path / "a.csv", [["name", "description"], ["=HYPERLINK(\"http://x\")", "+1 @a -b"]])
    run_import(crm, path, "account")
    (acme,) = records(crm, "account")
    assert (acme["name"], acme["description"]) == ('=HYPERLINK("http://x")', "+1 @a -b")


def _accounts(rt):
    rt.records.bulk("account", [{"name": "Acme", "account_number": "N1"}, {"name": "Beta", "account_number": "N2"},
                                {"name": "Twin", "account_number": "N3"}, {"name": "Twin", "account_number": "N4"}])
    rt.records.create("lead", {"last_name": "Li", "company": "X", "external_id": "L-9"})
    return {r["account_number"]: r["id"] for r in records(rt, "account")}


def test_lookups_by_title_unique_field_and_external_id(site, tmp_path):
    ids = _accounts(site)
    lead = records(site, "lead")[0]["id"]
    path = write_csv(tmp_path / "v.csv", [["subject", "客户", "account_no", "lead"], ["a", "Acme", "N2", "L-9"],
                                          ["b", f"#{ids['N1']}", "", ""], ["c", "Twin", "", ""],
                                          ["d", "Nobody", "N9", "L-0"]])
    job = run_import(site, path, "visit")
    assert (job["created"], job["failed"]) == (2, 2)
    a, b = records(site, "visit")
    assert (a["account"], a["account_no"], a["lead"]) == (ids["N1"], ids["N2"], lead)
    assert b["account"] == ids["N1"]
    from engine.dataio.importing.plugin import imports_of

    errors = imports_of(site).first_errors(job["id"])
    assert "names 2 account records by name" in errors["客户"][0]["message"]
    assert errors["客户"][1]["message"] == "no account has name 'Nobody'"
    assert errors["account_no"][0]["message"] == "no account has account_number 'N9'"
    assert errors["lead"][0]["message"] == "no lead has external_id 'L-0'"


def test_unresolved_lookups_left_empty_or_created(site, tmp_path):
    _accounts(site)
    path = write_csv(tmp_path / "v.csv", [["subject", "account"], ["a", "NewCo"], ["b", "NewCo"], ["c", "Acme"]])
    job = run_import(site, path, "visit", unresolved="empty")
    assert job["created"] == 3 and [v["account"] for v in records(site, "visit")][:2] == [None, None]
    job = run_import(site, path, "visit", unresolved="create")
    assert job["created"] == 3
    newco = records(site, "account", name="NewCo")
    assert len(newco) == 1   # created once for both rows
    assert [v["account"] for v in records(site, "visit")][3:5] == [newco[0]["id"]] * 2


def test_update_and_upsert_by_a_unique_key(crm, tmp_path):
    ids = _accounts(crm)
    path = write_csv(tmp_path / "a.csv", [["account_number", "employees"], ["N1", "10"], ["N2", "20"], ["N9", "1"]])
    job = run_import(crm, path, "account", mode="update", key="account_number")
    assert (job["updated"], job["failed"]) == (2, 1)
    assert crm.records.get("account", ids["N1"])["employees"] == 10
    path = write_csv(tmp_path / "b.csv", [["account_number", "name", "employees"], ["N1", "Acme", "11"],
                                          ["N8", "Gamma", "3"]])
    job = run_import(crm, path, "account", mode="upsert", key="account_number")
    assert (job["created"], job["updated"], job["failed"]) == (1, 1, 0)
    assert crm.records.get("account", ids["N1"])["employees"] == 11
    with pytest.raises(ImportError_, match="upsert needs --key"):
        run_import(crm, path, "account", mode="upsert")
    with pytest.raises(ImportError_, match="must be a unique field"):
        run_import(crm, path, "account", mode="update", key="name")


def test_lookup_import_by_must_name_a_unique_field(make_runtime, write_tree):
    bad = {"x.yaml": """
        entity: x
        fields:
          name: {type: text}
          account: {type: lookup, to: account, import_by: industry}
    """}
    with pytest.raises(Exception, match="import_by 'industry' must be 'title' or a unique field of account"):
        make_runtime(site_dir=write_tree("bad", bad))

SYSTEM = Context(system=True)


# -- duplicates, checked per chunk --------------------------------------------------------------------

def _dupe_file(tmp_path):
    return write_csv(tmp_path / "leads.csv", [
        ["Last name", "Company", "E-mail"],
        ["Stored", "Acme", "stored@acme.example"],      # the e-mail of a lead that exists
        ["New", "Beta", "new@beta.example"],
        ["Twin", "Beta", "NEW@beta.example"],           # the same e-mail as the row above
    ])


@pytest.mark.parametrize("choice", ["error", "skip", "create", "update"])
def test_a_duplicate_row_does_what_the_import_chose(crm, tmp_path, choice):
    from engine.security.audit import query_audit
    from engine.security.permissions import access_for

    boss = admin(crm)
    stored = crm.records.create("lead", {"last_name": "Before", "company": "Acme", "email": "stored@acme.example"},
                                context=SYSTEM)
    job = run_import(crm, _dupe_file(tmp_path), "lead", user_id=boss["id"], access=access_for(crm.records, boss["id"]),
                     duplicates=choice)
    assert job["status"] == "done", job
    by_mail = {}
    for r in records(crm, "lead"):
        by_mail.setdefault(r["email"], []).append(r["last_name"])
    errors = [e for errs in imports_of(crm).first_errors(job["id"]).values() for e in errs]
    if choice == "error":
        assert (job["created"], job["failed"]) == (1, 2)
        assert by_mail == {"stored@acme.example": ["Before"], "new@beta.example": ["New"]}
        assert {e["row"] for e in errors} == {2, 4}
        assert any(f"Before (#{stored['id']})" in e["message"] and "lead_email" in e["message"] for e in errors)
        assert any("row 3 of the file" in e["message"] for e in errors)
    elif choice == "skip":
        assert (job["created"], job["unchanged"], job["failed"]) == (1, 2, 0)
        assert by_mail == {"stored@acme.example": ["Before"], "new@beta.example": ["New"]}
    elif choice == "create":
        assert (job["created"], job["failed"]) == (3, 0)
        assert sorted(by_mail["new@beta.example"]) == ["New", "Twin"] and len(by_mail["stored@acme.example"]) == 2
        [audited] = query_audit(crm.records, kind="duplicate_override")
        assert audited["actor_id"] == boss["id"] and audited["detail"] == {"import": True, "rows": 2}
    else:   # update: the stored lead takes the row's values; the twin of a row of the same file is refused
        assert (job["created"], job["updated"], job["failed"]) == (1, 1, 1)
        assert crm.records.get("lead", stored["id"])["last_name"] == "Stored"
        assert "exactly one matching record" in errors[0]["message"]
