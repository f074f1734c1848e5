"""The formula language wired into the metadata and the record service: load-time checks with
file:line, validation rules, required_when / readonly_when, formula fields (stored and computed on
read), defaults written as formulas; through single writes, bulk writes and the API."""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from decimal import ROUND_HALF_UP
from decimal import Decimal as D

import pytest

from engine.metadata import MetadataError
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)

DEALS = """
entity: company
title: name
fields:
  name: {type: text, required: true}
  region: {type: text}
---
entity: deal
title: name
fields:
  name: {type: text, required: true}
  company: {type: lookup, to: company}
  amount: {type: currency}
  stage: {type: picklist, options: [open, won, lost], default: open}
  probability: {type: percent, default: {formula: "IF(amount > 1000, 50, 10)"}}
  reason: {type: text, required_when: "stage = 'lost'", visible_when: "stage = 'lost'"}
  note: {type: text, readonly_when: "stage = 'won'"}
  close_date: {type: date}
  expected: {type: formula, returns: currency, expr: "amount * probability / 100"}
  thirds: {type: formula, returns: integer, expr: "amount / 3", blank_as_zero: true}
  doubled: {type: formula, returns: currency, expr: "expected * 2"}
  region: {type: formula, returns: text, expr: "UPPER(company.region)"}
  label: {type: formula, returns: text, expr: "name & ' @ ' & region"}
validations:
  - {name: close_in_future, error_when: "ISNEW() AND close_date < TODAY()",
     message: "Close date cannot be in the past", field: close_date}
  - {name: no_shrink, error_when: "NOT(ISNEW()) AND amount < PRIORVALUE(amount)", message: "Amount cannot shrink"}
  - {name: big_needs_region, error_when: "amount > 1000000 AND ISBLANK(company.region)",
     message: "Big deals need a company with a region", field: company}
  - {name: admins_win, error_when: "ISCHANGED(stage) AND stage = 'won' AND $user.role <> 'admin'",
     message: "Only admins mark deals won", field: stage}
"""


@pytest.fixture
def deals(make_runtime, config_root):
    (config_root / "base" / "deals.yaml").write_text(textwrap.dedent(DEALS).lstrip(), encoding="utf-8")
    return make_runtime(config_root=config_root)


def codes(exc: ValidationFailed) -> set[tuple]:
    return {(e.field, e.code) for e in exc.errors}


# -- 1. load-time checks ------------------------------------------------------------------------------------------------
def test_bad_expressions_are_metadata_errors_at_the_line_of_the_expression(make_runtime, config_root):
    (config_root / "base" / "deal.yaml").write_text(textwrap.dedent("""
        entity: deal
        fields:
          name: {type: text}
          amount: {type: currency}
          stage: {type: picklist, options: [open, lost]}
          reason: {type: text, required_when: "stage = 'open' OR stag = 'x'"}
          total:
            type: formula
            returns: currency
            expr: |
              amount *
                nope
          due: {type: date, default: {formula: "TODAY() + 'x'"}}
          shout: {type: formula, returns: number, expr: "UPPER(name)"}
        validations:
          - {name: broken, error_when: "amount >", message: "no", field: amount}
          - {name: elsewhere, error_when: "amount > 0", message: "no", field: missing}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    problems = {(p.location.path, p.location.line): p.message for p in info.value.problems}
    assert set(problems) == {("fields/reason/required_when", 6), ("fields/total/expr", 12),
                             ("fields/due/default/formula", 13), ("fields/shout/expr", 14),
                             ("validations/0/error_when", 16), ("validations/1/field", 17)}
    reason = problems[("fields/reason/required_when", 6)]
    assert "column 19" in reason and "stag" in reason
    assert "column 3 of line 2" in problems[("fields/total/expr", 12)]   # the block's second line
    assert "must give number" in problems[("fields/shout/expr", 14)]
    assert "unknown field 'missing'" in problems[("validations/1/field", 17)]
    assert all(p.location.file.endswith("deal.yaml") for p in info.value.problems)


def test_validations_need_error_when_and_message(make_runtime, config_root):
    (config_root / "base" / "deal.yaml").write_text(textwrap.dedent("""
        entity: deal
        fields:
          name: {type: text}
        validations:
          - {name: bare}
          - {name: typo, error_when: "name = 'x'", message: "m", feild: name}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    text = str(info.value)
    assert "'error_when' is a required property" in text and "'message' is a required property" in text
    assert "unknown property" in text and "feild" in text


def test_plugin_functions_are_known_when_the_metadata_loads(make_runtime, settings, config_root):
    from engine import rules
    from engine.plugins import hookimpl
    from engine.runtime import Runtime

    class Twice:
        @hookimpl
        def crm_formula_functions(self):
            return [rules.Function("TWICE", ("number",), "number", lambda x: x * 2)]

    (config_root / "base" / "deal.yaml").write_text(textwrap.dedent("""
        entity: deal
        fields:
          amount: {type: number}
          double: {type: formula, returns: number, expr: "TWICE(amount)"}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError, match="TWICE"):
        make_runtime(config_root=config_root, migrate=False)
    rt = Runtime.boot(settings.with_(config_root=config_root), extra_plugins=(Twice(),))
    try:
        rt.migrate()
        assert rt.records.create("deal", {"amount": 4})["double"] == 8
    finally:
        rt.close()


# -- 2. validation rules ------------------------------------------------------------------------------------------------
def test_validation_rules_refuse_the_write_and_report_every_failing_rule(deals):
    rec = deals.records
    past = date.today() - timedelta(days=3)
    with pytest.raises(ValidationFailed) as info:
        rec.create("deal", {"name": "A", "close_date": past, "amount": 2_000_000, "stage": "lost"})
    assert codes(info.value) == {("close_date", "rule:close_in_future"), ("company", "rule:big_needs_region"),
                                 ("reason", "required")}
    assert next(e for e in info.value.errors if e.code == "rule:close_in_future").message == \
        "Close date cannot be in the past"
    assert rec.query("deal") == []
    deal = rec.create("deal", {"name": "A", "close_date": date.today(), "amount": 100})
    assert deal["probability"] == D("10.00")
    moved = rec.update("deal", deal["id"], {"close_date": past})  # ISNEW() is FALSE on update
    assert moved["close_date"] == past
    with pytest.raises(ValidationFailed) as info:
        rec.update("deal", deal["id"], {"amount": 50})
    assert codes(info.value) == {(None, "rule:no_shrink")}
    assert rec.get("deal", deal["id"])["amount"] == D("100.00")


def test_lookup_paths_read_the_related_record_in_the_write_transaction(deals):
    rec = deals.records
    bare = rec.create("company", {"name": "Bare"})
    placed = rec.create("company", {"name": "Placed", "region": "emea"})
    with pytest.raises(ValidationFailed) as info:
        rec.create("deal", {"name": "Big", "company": bare["id"], "amount": 5_000_000})
    assert codes(info.value) == {("company", "rule:big_needs_region")}
    deal = rec.create("deal", {"name": "Big", "company": placed["id"], "amount": 5_000_000})
    assert deal["region"] == "EMEA"


def test_user_is_the_writing_users_record(deals):
    rec = deals.records
    admin = rec.create("user", {"name": "Ada", "email": "ada@example.com", "role": "admin"}, context=SYSTEM)
    seller = rec.create("user", {"name": "Sam", "email": "sam@example.com", "role": "sales"}, context=SYSTEM)
    deal = rec.create("deal", {"name": "D", "amount": 10}, context=Context(user_id=seller["id"]))
    with pytest.raises(ValidationFailed) as info:
        rec.update("deal", deal["id"], {"stage": "won"}, context=Context(user_id=seller["id"]))
    assert codes(info.value) == {("stage", "rule:admins_win")}
    assert rec.update("deal", deal["id"], {"stage": "won"}, context=Context(user_id=admin["id"]))["stage"] == "won"


def test_bulk_writes_run_the_rules_per_row(deals):
    rec = deals.records
    past = date.today() - timedelta(days=1)
    rows = [{"name": "ok", "amount": 3000}, {"name": "old", "close_date": past}, {"name": "lost", "stage": "lost"}]
    result = rec.bulk("deal", rows, atomic=False)
    assert [i["status"] for i in result.items] == ["created", "error", "error"]
    assert result.items[1]["errors"][0]["code"] == "rule:close_in_future"
    assert result.items[2]["errors"][0] == {"field": "reason", "code": "required",
                                            "message": "is required when stage = 'lost'"}
    created = rec.get("deal", result.items[0]["id"])
    assert created["probability"] == D("50.00") and created["expected"] == D("1500.00") and created["thirds"] == 1000
    result = rec.bulk("deal", [{"id": created["id"], "amount": 10}], mode="update")
    assert result.items[0]["errors"][0]["code"] == "rule:no_shrink"
    result = rec.bulk("deal", [{"id": created["id"], "amount": 6000}], mode="update")
    assert result.ok and rec.get("deal", created["id"])["expected"] == D("3000.00")
    assert rec.bulk("deal", rows[1:], atomic=True).counts() == {"error": 2}


# -- 3. required_when / readonly_when --------------------------------------------------------------------------------
def test_required_when_and_readonly_when(deals):
    rec = deals.records
    deal = rec.create("deal", {"name": "D", "note": "first"})
    with pytest.raises(ValidationFailed) as info:
        rec.update("deal", deal["id"], {"stage": "lost"})
    assert codes(info.value) == {("reason", "required")}
    rec.update("deal", deal["id"], {"stage": "lost", "reason": "price"})
    admin = rec.create("user", {"name": "Ada", "email": "ada@example.com", "role": "admin"}, context=SYSTEM)
    rec.update("deal", deal["id"], {"stage": "won", "reason": None}, context=Context(user_id=admin["id"]))
    with pytest.raises(ValidationFailed) as info:
        rec.update("deal", deal["id"], {"note": "changed"}, context=Context(user_id=admin["id"]))
    assert codes(info.value) == {("note", "readonly")}
    assert rec.update("deal", deal["id"], {"note": "first", "name": "E"})["name"] == "E"   # unchanged: fine
    assert rec.update("deal", deal["id"], {"note": "system"}, context=SYSTEM)["note"] == "system"
    back = rec.update("deal", deal["id"], {"stage": "open", "note": "again"})  # the merged record is not won
    assert back["note"] == "again"


def test_required_when_holds_through_the_api(make_runtime, config_root):
    from engine.app import create_app
    from engine.security.tokens import create_token

    (config_root / "base" / "deals.yaml").write_text(textwrap.dedent(DEALS).lstrip(), encoding="utf-8")
    rt = make_runtime(config_root=config_root)
    user = rt.records.create("user", {"name": "Api", "email": "api@example.com", "role": "admin"}, context=SYSTEM)
    _, token = create_token(rt.records, user["id"], "tests")
    client = create_app(runtime=rt).test_client()
    headers = {"Authorization": f"Bearer {token}"}
    answer = client.post("/api/v1/deal", json={"name": "X", "stage": "lost"}, headers=headers)
    assert answer.status_code == 422, answer.get_json()
    assert {(e["field"], e["code"]) for e in answer.get_json()["errors"]} == {("reason", "required")}
    answer = client.post("/api/v1/deal", json={"name": "X", "amount": "2000", "expected": "1"}, headers=headers)
    assert answer.status_code == 422 and answer.get_json()["errors"][0]["field"] == "expected"
    answer = client.post("/api/v1/deal", json={"name": "X", "amount": "2000"}, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    body = answer.get_json()
    assert body["expected"] == "1000.00" and body["probability"] == "50.00" and not body["region"]
    listed = client.get("/api/v1/deal", headers=headers).get_json()["data"]
    assert listed[0]["expected"] == "1000.00" and "region" in listed[0]
    spec = client.get("/api/v1/openapi.json", headers=headers).get_json()
    schemas = spec["components"]["schemas"]
    deal_schema = next(v for k, v in schemas.items() if k.lower() == "deal")
    create_schema = next(v for k, v in schemas.items() if k.lower() == "dealcreate")
    assert "expected" in deal_schema["properties"] and "region" in deal_schema["properties"]
    assert "expected" not in create_schema["properties"]
    meta = client.get("/api/v1/_meta/deal", headers=headers)
    assert meta.status_code == 200
    fields = {f["name"]: f for f in meta.get_json()["fields"]}
    assert fields["reason"]["visible_when"] == "stage = 'lost'" and fields["expected"]["readonly"] is True


# -- 4. formula fields ---------------------------------------------------------------------------------------------------
def test_formula_fields_are_stored_or_computed_on_read(deals):
    rec = deals.records
    model = deals.model.entity("deal")
    assert model.fields["expected"].stored and model.fields["thirds"].stored and model.fields["doubled"].stored
    assert not model.fields["region"].stored and not model.fields["label"].stored
    table = rec.table("deal")
    assert "expected" in table.c and "region" not in table.c and "label" not in table.c
    company = rec.create("company", {"name": "C", "region": "apac"})
    deal = rec.create("deal", {"name": "D", "amount": 100, "probability": 25, "company": company["id"]})
    assert deal["expected"] == D("25.00") and deal["doubled"] == D("50.00") and deal["thirds"] == 33
    assert deal["region"] == "APAC" and deal["label"] == "D @ APAC"
    rec.update("company", company["id"], {"region": "emea"})
    for got in (rec.get("deal", deal["id"]), rec.query("deal")[0], rec.fetch_many("deal", [deal["id"]])[deal["id"]]):
        assert got["region"] == "EMEA" and got["label"] == "D @ EMEA" and got["expected"] == D("25.00")
    from engine.storage.query import ListQuery

    page = rec.list(ListQuery("deal", limit=10))
    assert page.records[0]["region"] == "EMEA"
    updated = rec.update("deal", deal["id"], {"amount": 1000})  # stored formulas recompute on save
    assert updated["expected"] == D("250.00") and updated["thirds"] == 333 and updated["region"] == "EMEA"
    assert rec.get("deal", deal["id"])["doubled"] == D("500.00")
    with pytest.raises(ValidationFailed) as info:
        rec.create("deal", {"name": "E", "expected": 5})
    assert codes(info.value) == {("expected", "readonly")}
    blank = rec.create("deal", {"name": "F"})
    assert blank["expected"] is None and blank["thirds"] == 0  # blank_as_zero


def test_formula_field_json_and_csv_follow_the_return_type(deals):
    field = deals.model.entity("deal").fields["expected"]
    assert field.type.json_schema(field)["format"] == "decimal"
    assert field.type.to_json(field, D("2.50")) == "2.50"
    assert field.type.format_csv(field, D("2.50")) == "2.50"
    assert field.type.signature(field) == ["decimal", 18, 2]


# -- 5. defaults as formulas ---------------------------------------------------------------------------------------------
def test_defaults_written_as_formulas_are_evaluated_on_create(deals):
    rec = deals.records
    assert rec.create("deal", {"name": "small", "amount": 5})["probability"] == D("10.00")
    assert rec.create("deal", {"name": "big", "amount": 5000})["probability"] == D("50.00")
    assert rec.create("deal", {"name": "given", "amount": 5000, "probability": 7})["probability"] == D("7.00")
    assert deals.model.entity("deal").fields["stage"].default == "open"   # literals stay literals


# -- 7. the base CRM's examples ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("industry", ["base", "real_estate"])
def test_the_demo_data_passes_the_base_crms_rules(make_runtime, industry):
    from engine import demo

    rt = make_runtime(industry=industry)
    counts = demo.seed(rt.records, unit=8)
    assert counts["opportunity"] > 0 and counts["quote_line"] > 0
    for opp in rt.records.query("opportunity", limit=1000):
        if opp["stage"] == "lost":
            assert opp["lost_reason"] is not None
        if opp["amount"] is not None and opp["probability"] is not None:
            assert opp["expected_revenue"] == (opp["amount"] * opp["probability"] / 100).quantize(D("0.01"), ROUND_HALF_UP)
    line = rt.records.query("quote_line", limit=1)[0]
    # as quote_line.yaml declares it: the discount amount is a currency (rounded to the cent, as the
    # quote shows it), and the total is the gross less that amount
    gross = line["quantity"] * line["unit_price"]
    discount = (gross * (line["discount"] or D(0)) / 100).quantize(D("0.01"), ROUND_HALF_UP)
    assert line["discount_amount"] == discount
    assert line["total"] == (gross - discount).quantize(D("0.01"), ROUND_HALF_UP)


def test_the_base_crms_opportunity_rules(crm):
    rec = crm.records
    account = rec.create("account", {"name": "Acme"})
    base = {"name": "Deal", "account": account["id"], "close_date": date.today(), "amount": 1000, "probability": 30}
    with pytest.raises(ValidationFailed) as info:
        rec.create("opportunity", {**base, "close_date": date.today() - timedelta(days=1)})
    assert codes(info.value) == {("close_date", "rule:close_in_future")}
    opp = rec.create("opportunity", base)
    assert opp["expected_revenue"] == D("300.00")
    with pytest.raises(ValidationFailed) as info:
        rec.update("opportunity", opp["id"], {"stage": "lost"})
    assert codes(info.value) == {("lost_reason", "required")}
    assert rec.update("opportunity", opp["id"], {"stage": "lost", "lost_reason": "price"})["stage"] == "lost"
