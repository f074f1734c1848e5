"""Exports of lists as people see them (engine/api/exports.py, exports_xlsx.py): lookup titles and
optional ids, owner names, picklist labels in the language asked for, date-times in the caller's
zone, amounts raw or readable, XLSX typed cells, formula injection escaped, headers importable."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from engine.storage.records import Context

SYSTEM = Context(system=True)


def _csv(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def _xlsx(response):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert response.headers["Content-Disposition"].endswith('.xlsx"')
    return load_workbook(io.BytesIO(response.get_data())).active


@pytest.fixture
def deals(api):
    rt = api.rt
    owner = rt.records.create("user", {"name": "Wang Fang", "email": "wang@example.com", "role": "sales"}, context=SYSTEM)
    acme = rt.records.create("account", {"name": "=HYPERLINK(\"http://evil\",\"x\")", "owner_id": owner["id"]},
                             context=SYSTEM)
    beta = rt.records.create("account", {"name": "Beta Ltd", "owner_id": owner["id"]}, context=SYSTEM)
    one = rt.records.create("opportunity", {"name": "Big deal", "account": beta["id"], "amount": "1234.5",
                                            "stage": "qualification", "close_date": "2031-01-02",
                                            "owner_id": owner["id"]}, context=SYSTEM)
    two = rt.records.create("opportunity", {"name": "+1 trick", "account": acme["id"], "amount": "99",
                                            "stage": "prospecting", "close_date": "2031-02-03"}, context=SYSTEM)
    return {"owner": owner, "acme": acme, "beta": beta, "one": one, "two": two}


def test_csv_shows_titles_owner_names_and_labels_with_ids_on_request(api, deals):
    rows = _csv(api.get("/api/v1/opportunity/_export?fields=name,account,stage,amount,owner_id&sort=id"))
    assert [r["account"] for r in rows] == ["Beta Ltd", "'=HYPERLINK(\"http://evil\",\"x\")"]
    assert [r["stage"] for r in rows] == ["Qualification", "Prospecting"]
    assert rows[0]["owner_id"] == "Wang Fang"
    assert [r["amount"] for r in rows] == ["1234.50", "99.00"]          # raw by default
    assert rows[1]["name"] == "'+1 trick"                                 # formula injection escaped
    assert "account.id" not in rows[0]
    with_ids = _csv(api.get("/api/v1/opportunity/_export?fields=account,owner_id&sort=id&ids=1"))
    assert list(with_ids[0]) == ["id", "account", "account.id", "owner_id", "owner_id.id"]
    assert with_ids[0]["account.id"] == str(deals["beta"]["id"])
    assert with_ids[0]["owner_id.id"] == str(deals["owner"]["id"])


def test_headers_are_labels_in_the_language_asked_for(api, deals):
    zh = _csv(api.get("/api/v1/opportunity/_export?fields=name,account,stage,owner_id&sort=id&headers=label&lang=zh"))
    model = api.rt.model.entity("opportunity")
    assert list(zh[0])[1:] == [model.fields[n].label.get("zh") for n in ("name", "account", "stage")] + ["负责人"]
    stage = {o.value: o.label.get("zh") for o in model.fields["stage"].options}
    assert zh[0][model.fields["stage"].label.get("zh")] == stage["qualification"]
    en = _csv(api.get("/api/v1/opportunity/_export?fields=name&headers=label"))
    assert list(en[0]) == ["ID", model.fields["name"].label.get("en")]


def test_readable_money_and_date_times_in_the_callers_zone(api, deals):
    rows = _csv(api.get("/api/v1/opportunity/_export?fields=amount,close_date,created_at&sort=id&format=readable"
                        "&tz=Asia/Shanghai"))
    assert rows[0]["amount"] == "$1,234.50"
    assert rows[0]["close_date"] == "2031-01-02"
    made = datetime.fromisoformat(rows[0]["created_at"])
    assert made.utcoffset().total_seconds() == 8 * 3600
    stored = api.rt.records.get("opportunity", deals["one"]["id"])["created_at"]
    assert made == stored.replace(tzinfo=stored.tzinfo or timezone.utc)


@pytest.mark.parametrize("query, name", [("file=pdf", "file"), ("headers=title", "headers"), ("ids=yes", "ids"),
                                         ("tz=Mars/Olympus", "tz"), ("lang=fr", "lang")])
def test_bad_export_options_are_a_400_naming_the_parameter(api, query, name):
    r = api.get(f"/api/v1/account/_export?{query}")
    assert r.status_code == 400 and r.json["errors"][0]["field"] == name


def test_xlsx_has_typed_cells_a_bold_header_and_no_formulas(api, deals):
    sheet = _xlsx(api.get("/api/v1/opportunity/_export?file=xlsx&fields=name,account,amount,close_date,created_at"
                          "&sort=id&format=readable&headers=label&tz=Asia/Shanghai&ids=1"))
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    model = api.rt.model.entity("opportunity")
    assert header == ("ID", *(model.fields[n].label.get("en") for n in ("name", "account")), "Account.id",
                      *(model.fields[n].label.get("en") for n in ("amount", "close_date")), "Created")
    assert sheet["A1"].font.b and sheet.freeze_panes == "A2"
    first, second = rows[1], rows[2]
    assert first[0] == deals["one"]["id"] and isinstance(first[0], int)
    assert first[2] == "Beta Ltd" and first[3] == deals["beta"]["id"]
    amount = sheet.cell(row=2, column=5)
    assert amount.value == Decimal("1234.5") or amount.value == 1234.5
    assert "$" in amount.number_format
    assert isinstance(sheet.cell(row=2, column=6).value, datetime)            # a date cell
    assert sheet.cell(row=2, column=6).value.date() == date(2031, 1, 2)
    created = sheet.cell(row=2, column=7).value
    stored = api.rt.records.get("opportunity", deals["one"]["id"])["created_at"]
    utc = stored.replace(tzinfo=stored.tzinfo or timezone.utc)
    local = utc.astimezone(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    assert abs((created - local).total_seconds()) < 0.01                   # Excel keeps milliseconds
    evil = sheet.cell(row=3, column=3)
    assert evil.value == '=HYPERLINK("http://evil","x")' and evil.data_type == "s" and evil.quotePrefix
    assert second[1] == "+1 trick" and sheet.cell(row=3, column=2).data_type == "s"
    widths = {k: d.width for k, d in sheet.column_dimensions.items()}
    assert widths and all(8 <= w <= 42 for w in widths.values())


def test_the_export_keeps_the_lists_filters_sort_and_scope(api, deals):
    rows = _csv(api.get("/api/v1/opportunity/_export?stage=qualification&fields=name"))
    assert [r["name"] for r in rows] == ["Big deal"]
    rows = _csv(api.get("/api/v1/opportunity/_export?fields=name&sort=-name"))
    assert [r["name"] for r in rows] == ["Big deal", "'+1 trick"]
    sheet = _xlsx(api.get("/api/v1/opportunity/_export?file=xlsx&where=amount > 100&fields=name"))
    assert [r[1] for r in sheet.iter_rows(min_row=2, values_only=True)] == ["Big deal"]
