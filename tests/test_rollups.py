"""Rollup fields: COUNT / SUM / MIN / MAX of child records kept current by the record service
(create, update, re-parent, delete, cascades, bulk), load-time checks with file:line, read-only."""

from __future__ import annotations

import textwrap
from datetime import date
from decimal import Decimal as D

import pytest

from engine.metadata import MetadataError
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)

MODEL = """
entity: team
title: name
fields:
  name: {type: text, required: true}
  deals: {type: rollup, of: deal.team, function: COUNT}
  open_deals: {type: rollup, of: deal.team, function: COUNT, where: "NOT(stage IN ('won', 'lost'))"}
  pipeline: {type: rollup, of: deal.team, function: SUM, field: amount}
  won: {type: rollup, of: deal.team, function: SUM, field: amount, where: "stage = 'won'"}
  smallest: {type: rollup, of: deal.team, function: MIN, field: amount}
  biggest_open: {type: rollup, of: deal.team, function: MAX, field: amount, where: "stage = 'open'"}
  first_close: {type: rollup, of: deal.team, function: MIN, field: close_date}
  units: {type: rollup, of: deal.team, function: SUM, field: units}
  weighted: {type: rollup, of: deal.team, function: SUM, field: weighted}
  grand: {type: formula, returns: currency, expr: "pipeline * 2", blank_as_zero: true}
---
entity: desk
title: name
fields:
  name: {type: text, required: true}
---
entity: deal
title: name
fields:
  name: {type: text, required: true}
  team: {type: lookup, to: team, on_delete: cascade}
  desk: {type: lookup, to: desk, on_delete: cascade}
  amount: {type: currency}
  units: {type: integer}
  stage: {type: picklist, options: [open, won, lost], default: open}
  close_date: {type: date}
  weighted: {type: formula, returns: currency, expr: "amount / 2"}
"""

EMPTY = {"deals": 0, "open_deals": 0, "pipeline": D("0.00"), "won": D("0.00"), "smallest": None,
         "biggest_open": None, "first_close": None, "units": 0, "weighted": D("0.00")}


@pytest.fixture
def rt(make_runtime, config_root):
    (config_root / "base" / "model.yaml").write_text(textwrap.dedent(MODEL).lstrip(), encoding="utf-8")
    return make_runtime(config_root=config_root)


def rolled(rt, team_id: int) -> dict:
    record = rt.records.get("team", team_id)
    return {k: record[k] for k in EMPTY}


def expected(rt, team_id: int) -> dict:
    """The rollups computed in Python from the stored deals."""
    deals = [d for d in rt.records.query("deal", limit=10000) if d["team"] == team_id]
    amounts = [d["amount"] for d in deals if d["amount"] is not None]
    open_amounts = [d["amount"] for d in deals if d["amount"] is not None and d["stage"] == "open"]
    closes = [d["close_date"] for d in deals if d["close_date"] is not None]
    return {"deals": len(deals), "open_deals": sum(d["stage"] not in ("won", "lost") for d in deals),
            "pipeline": sum(amounts, D("0.00")),
            "won": sum((d["amount"] for d in deals if d["stage"] == "won" and d["amount"] is not None), D("0.00")),
            "smallest": min(amounts, default=None), "biggest_open": max(open_amounts, default=None),
            "first_close": min(closes, default=None), "units": sum(d["units"] or 0 for d in deals),
            "weighted": sum((d["weighted"] for d in deals if d["weighted"] is not None), D("0.00"))}


def test_a_new_parent_starts_at_zero_and_blank(rt):
    team = rt.records.create("team", {"name": "A"})
    assert {k: team[k] for k in EMPTY} == EMPTY
    assert rolled(rt, team["id"]) == EMPTY


def test_create_update_reparent_delete_keep_rollups_current(rt):
    a = rt.records.create("team", {"name": "A"})["id"]
    b = rt.records.create("team", {"name": "B"})["id"]
    version_before = rt.records.get("team", a)["version"]
    updated_before = rt.records.get("team", a)["updated_at"]
    d1 = rt.records.create("deal", {"name": "d1", "team": a, "amount": "100.50", "units": 3,
                                    "close_date": "2030-05-01"})
    d2 = rt.records.create("deal", {"name": "d2", "team": a, "amount": "20", "stage": "won", "units": 1})
    d3 = rt.records.create("deal", {"name": "d3", "team": a, "amount": "7.25", "stage": "lost",
                                    "close_date": "2029-01-02"})
    got = rolled(rt, a)
    assert got == expected(rt, a)
    assert got["deals"] == 3 and got["open_deals"] == 1 and got["pipeline"] == D("127.75")
    assert got["won"] == D("20.00") and got["smallest"] == D("7.25") and got["biggest_open"] == D("100.50")
    assert got["first_close"] == date(2029, 1, 2) and got["units"] == 4 and got["weighted"] == D("63.88")
    parent = rt.records.get("team", a)
    # each child write that changes the parent's rollups is an edit of the parent: a new version,
    # updated_at, and the stored formula reading them (grand) recomputed in the same write
    assert parent["version"] == version_before + 3 and parent["updated_at"] > updated_before
    assert parent["grand"] == D("255.50")
    assert rolled(rt, b) == EMPTY

    # a field of the where condition, the aggregated field
    rt.records.update("deal", d3["id"], {"stage": "open"})
    rt.records.update("deal", d1["id"], {"amount": "1"})
    assert rolled(rt, a) == expected(rt, a)
    assert rolled(rt, a)["open_deals"] == 2 and rolled(rt, a)["biggest_open"] == D("7.25")
    # a change the rollups do not read leaves the parent alone
    rt.records.update("deal", d1["id"], {"name": "renamed"})
    assert rolled(rt, a) == expected(rt, a)

    # re-parenting updates the old and the new parent
    rt.records.update("deal", d2["id"], {"team": b})
    assert rolled(rt, a) == expected(rt, a) and rolled(rt, b) == expected(rt, b)
    assert rolled(rt, b)["won"] == D("20.00") and rolled(rt, a)["won"] == D("0.00")
    rt.records.update("deal", d3["id"], {"team": None})
    assert rolled(rt, a) == expected(rt, a) and rolled(rt, a)["deals"] == 1

    rt.records.delete("deal", d1["id"])
    assert rolled(rt, a) == EMPTY
    rt.records.delete("deal", d2["id"])
    assert rolled(rt, b) == EMPTY


def test_deleting_through_a_cascade_updates_the_parent(rt):
    a = rt.records.create("team", {"name": "A"})["id"]
    desk = rt.records.create("desk", {"name": "East"})["id"]
    for i in range(4):
        rt.records.create("deal", {"name": f"d{i}", "team": a, "amount": i + 1, "desk": desk if i % 2 else None})
    assert rolled(rt, a)["deals"] == 4 and rolled(rt, a)["pipeline"] == D("10.00")
    rt.records.delete("desk", desk)   # cascades to deals 1 and 3 (amounts 2 and 4)
    assert rolled(rt, a) == expected(rt, a)
    assert rolled(rt, a)["deals"] == 2 and rolled(rt, a)["pipeline"] == D("4.00")
    rt.records.delete("team", a)      # the team goes with its deals
    assert rt.records.query("deal") == []


def test_bulk_writes_update_each_parent(rt):
    a = rt.records.create("team", {"name": "A"})["id"]
    b = rt.records.create("team", {"name": "B"})["id"]
    rows = [{"name": f"d{i}", "team": a if i % 3 else b, "amount": f"{i}.10", "units": i,
             "stage": ("open", "won", "lost")[i % 3], "close_date": f"2030-01-{i % 28 + 1:02d}"} for i in range(60)]
    result = rt.records.bulk("deal", rows)
    assert result.ok
    assert rolled(rt, a) == expected(rt, a) and rolled(rt, b) == expected(rt, b)
    assert rolled(rt, a)["deals"] == 40 and rolled(rt, b)["deals"] == 20
    ids = [item["id"] for item in result.items]
    # bulk update: re-parent some, change amounts of others
    changes = [{"id": ids[i], "team": b} for i in range(1, 10, 3)] + [{"id": ids[i], "amount": 1000} for i in (0, 2)]
    assert rt.records.bulk("deal", changes, mode="update").ok
    assert rolled(rt, a) == expected(rt, a) and rolled(rt, b) == expected(rt, b)
    assert rolled(rt, b)["deals"] == 23


def test_users_cannot_write_a_rollup(rt):
    with pytest.raises(ValidationFailed) as info:
        rt.records.create("team", {"name": "A", "deals": 5})
    assert {(e.field, e.code) for e in info.value.errors} == {("deals", "readonly")}
    team = rt.records.create("team", {"name": "A"})
    with pytest.raises(ValidationFailed) as info:
        rt.records.update("team", team["id"], {"pipeline": 10})
    assert {(e.field, e.code) for e in info.value.errors} == {("pipeline", "readonly")}
    result = rt.records.bulk("team", [{"name": "B", "open_deals": 1}])
    assert not result.ok and result.items[0]["errors"][0]["code"] == "readonly"


def test_bad_rollups_are_metadata_errors_with_file_and_line(make_runtime, config_root):
    (config_root / "base" / "bad.yaml").write_text(textwrap.dedent("""
        entity: team
        fields:
          name: {type: text}
          a: {type: rollup, of: nothing.team, function: COUNT}
          b: {type: rollup, of: deal.name, function: COUNT}
          c: {type: rollup, of: deal.team, function: SUM}
          d: {type: rollup, of: deal.team, function: SUM, field: name}
          e: {type: rollup, of: deal.team, function: MAX, field: missing}
          f: {type: rollup, of: deal.team, function: COUNT, where: "stag = 'won'"}
          g: {type: rollup, of: deal.team, function: COUNT, where: "team.name = 'x'"}
          h: {type: rollup, of: deal.team, function: MIN, field: stage}
          i: {type: rollup, of: deal.team, function: AVG, field: amount}
        ---
        entity: deal
        fields:
          name: {type: text}
          team: {type: lookup, to: team}
          amount: {type: currency}
          stage: {type: picklist, options: [open, won]}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    problems = {(p.location.path, p.location.line): p.message for p in info.value.problems}
    assert set(problems) == {("fields/a/of", 4), ("fields/b/of", 5), ("fields/c/function", 6), ("fields/d/field", 7),
                             ("fields/e/field", 8), ("fields/f/where", 9), ("fields/g/where", 10),
                             ("fields/h/field", 11), ("fields/i/function", 12)}, problems
    assert "no entity 'nothing'" in problems[("fields/a/of", 4)]
    assert "not a lookup pointing to team" in problems[("fields/b/of", 5)]
    assert "stag" in problems[("fields/f/where", 9)]
    assert "own fields" in problems[("fields/g/where", 10)]
    assert "is picklist" in problems[("fields/h/field", 11)]


def test_base_crm_rollups(crm):
    rec = crm.records
    account = rec.create("account", {"name": "Acme"})
    assert account["open_opportunities"] == 0
    opp = {"name": "Deal", "account": account["id"], "stage": "prospecting", "close_date": "2031-01-01",
           "amount": 100}
    first = rec.create("opportunity", opp)
    rec.create("opportunity", {**opp, "name": "Other"})
    assert rec.get("account", account["id"])["open_opportunities"] == 2
    rec.update("opportunity", first["id"], {"stage": "lost", "lost_reason": "price"})
    assert rec.get("account", account["id"])["open_opportunities"] == 1

    product = rec.create("product", {"name": "Widget", "code": "W-1"})
    quote = rec.create("quote", {"name": "Q", "account": account["id"], "opportunity": first["id"]},
                       context=SYSTEM)
    assert quote["subtotal"] == D("0.00")
    lines = rec.bulk("quote_line", [{"quote": quote["id"], "product": product["id"], "quantity": q,
                                     "unit_price": "10.00", "discount": 10} for q in (1, 2, 3)])
    assert lines.ok
    assert rec.get("quote", quote["id"])["subtotal"] == D("54.00")
    rec.delete("quote_line", lines.items[0]["id"])
    assert rec.get("quote", quote["id"])["subtotal"] == D("45.00")
    rec.update("quote_line", lines.items[1]["id"], {"quantity": 1})
    assert rec.get("quote", quote["id"])["subtotal"] == D("36.00")
    rec.delete("opportunity", first["id"])   # cascades to the quote and its lines
    assert rec.get("account", account["id"])["open_opportunities"] == 1
    assert rec.query("quote_line") == []


def test_demo_data_gets_its_rollups_computed(make_runtime):
    from engine import demo

    rt = make_runtime()
    demo.seed(rt.records, unit=8)
    rec = rt.records
    lines = rec.query("quote_line", limit=10000)
    assert lines
    for quote in rec.query("quote", limit=10000):
        total = sum((ln["total"] for ln in lines if ln["quote"] == quote["id"] and ln["total"] is not None), D("0.00"))
        assert quote["subtotal"] == total
    opps = rec.query("opportunity", limit=10000)
    for account in rec.query("account", limit=10000):
        assert account["open_opportunities"] == sum(
            1 for o in opps if o["account"] == account["id"] and o["stage"] not in ("won", "lost"))
