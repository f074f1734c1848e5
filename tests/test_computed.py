"""Computed values that stay true: a child write recomputes its parent's rollups, the formulas and
``follows`` fields reading them and the grandparent's rollups, in the write's transaction, as an
edit of the parent (version, updated_at, history); concurrent child writes; cycles refused at load;
the migration's backfill; picklist options' ``sets``; ``follows``; ``exclusive_within``; on SQLite
and PostgreSQL."""

from __future__ import annotations

import textwrap
import threading
from decimal import Decimal as D

import pytest

from engine.metadata import MetadataError
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)

MODEL = """
entity: region
title: name
fields:
  name: {type: text, required: true}
  revenue: {type: rollup, of: order.region, function: SUM, field: grand}
  lines: {type: rollup, of: order.region, function: SUM, field: line_count}
---
entity: order
title: name
fields:
  name: {type: text, required: true}
  region: {type: lookup, to: region, on_delete: set_null}
  subtotal: {type: rollup, of: line.order, function: SUM, field: total}
  line_count: {type: rollup, of: line.order, function: COUNT}
  discount: {type: percent, min: 0, max: 100, default: 0}
  shipping: {type: currency, min: 0}
  grand: {type: formula, returns: currency, expr: "subtotal * (1 - discount / 100) + shipping",
          blank_as_zero: true, track_history: true}
validations:
  - {name: credit_limit, error_when: "grand > 10000", message: the order exceeds the credit limit}
---
entity: line
title: name
fields:
  name: {type: text}
  order: {type: lookup, to: order, required: true, on_delete: cascade}
  quantity: {type: integer, min: 0}
  price: {type: currency, min: 0}
  total: {type: formula, returns: currency, expr: "quantity * price", blank_as_zero: true}
"""


@pytest.fixture
def rt(make_runtime, config_root):
    (config_root / "base" / "model.yaml").write_text(textwrap.dedent(MODEL).lstrip(), encoding="utf-8")
    return make_runtime(config_root=config_root)


def test_a_line_change_updates_the_grand_total_version_and_history(rt):
    rec = rt.records
    order = rec.create("order", {"name": "O", "discount": 10, "shipping": 5})
    assert order["grand"] == D("5.00") and order["version"] == 1
    line = rec.create("line", {"order": order["id"], "quantity": 2, "price": "50"})
    got = rec.get("order", order["id"])
    assert got["subtotal"] == D("100.00") and got["grand"] == D("95.00")
    assert got["version"] == 2 and got["updated_at"] > order["updated_at"]
    history = [(h["field"], h["old_value"], h["new_value"]) for h in rec.history_of("order", order["id"])]
    assert history == [("grand", "5.00", "95.00")]
    rec.update("line", line["id"], {"quantity": 3})
    assert rec.get("order", order["id"])["grand"] == D("140.00")
    # optimistic concurrency: a client holding version 2 is now stale
    with pytest.raises(Exception) as info:
        rec.update("order", order["id"], {"shipping": 1}, version=2)
    assert type(info.value).__name__ == "Conflict"
    rec.delete("line", line["id"])
    got = rec.get("order", order["id"])
    assert got["subtotal"] == D("0.00") and got["grand"] == D("5.00") and got["version"] == 4
    # a change no rollup reads leaves the parent alone
    other = rec.create("line", {"order": order["id"], "quantity": 1, "price": "1"})
    version = rec.get("order", order["id"])["version"]
    rec.update("line", other["id"], {"name": "renamed"})
    assert rec.get("order", order["id"])["version"] == version


def test_the_line_and_the_parent_commit_or_roll_back_together(rt):
    rec = rt.records
    order = rec.create("order", {"name": "O"})
    # the parent's validation refuses the new totals: the line is refused too, nothing is written
    with pytest.raises(ValidationFailed) as info:
        rec.create("line", {"order": order["id"], "quantity": 1, "price": "20000"})
    assert "credit limit" in str(info.value.errors)
    assert rec.query("line") == [] and rec.get("order", order["id"])["version"] == 1
    # a later step of the same transaction fails: the line and the parent's new totals go together
    with pytest.raises(RuntimeError):
        with rt.db.write() as conn:
            rec.create("line", {"order": order["id"], "quantity": 2, "price": "3"}, conn=conn)
            inside = rec.get("order", order["id"], conn=conn)
            assert inside["grand"] == D("6.00") and inside["version"] == 2
            raise RuntimeError("a later step fails")
    got = rec.get("order", order["id"])
    assert rec.query("line") == [] and got["grand"] == D("0.00") and got["version"] == 1


def test_rollup_of_rollup_propagates_to_the_grandparent(rt):
    rec = rt.records
    north = rec.create("region", {"name": "North"})["id"]
    south = rec.create("region", {"name": "South"})["id"]
    o1 = rec.create("order", {"name": "O1", "region": north, "shipping": 10})["id"]
    o2 = rec.create("order", {"name": "O2", "region": north, "discount": 50})["id"]
    assert rec.get("region", north)["revenue"] == D("10.00")
    rec.create("line", {"order": o1, "quantity": 1, "price": "100"})
    rec.create("line", {"order": o2, "quantity": 4, "price": "10"})
    got = rec.get("region", north)
    assert got["revenue"] == D("130.00") and got["lines"] == 2   # 110 + 40 * 50 %
    version = got["version"]
    rec.update("order", o2, {"discount": 0})   # a parent field the grandparent reads through its formula
    assert rec.get("region", north)["revenue"] == D("150.00")
    assert rec.get("region", north)["version"] == version + 1
    rec.update("order", o1, {"region": south})   # moving the order moves its totals
    assert rec.get("region", north)["revenue"] == D("40.00") and rec.get("region", south)["revenue"] == D("110.00")
    rec.delete("order", o2)   # cascades to its line; the region loses the order
    assert rec.get("region", north)["revenue"] == D("0.00") and rec.get("region", north)["lines"] == 0


def test_bulk_lines_recompute_each_parent_once_per_chunk(rt):
    rec = rt.records
    region = rec.create("region", {"name": "R"})["id"]
    orders = [rec.create("order", {"name": f"O{i}", "region": region})["id"] for i in range(3)]
    rows = [{"order": orders[i % 3], "quantity": 1, "price": f"{i}"} for i in range(30)]
    assert rec.bulk("line", rows).ok
    for i, oid in enumerate(orders):
        got = rec.get("order", oid)
        assert got["grand"] == D(sum(j for j in range(30) if j % 3 == i)) and got["version"] == 2
    assert rec.get("region", region)["revenue"] == D(sum(range(30)))


def test_concurrent_line_inserts_leave_the_totals_right(rt):
    """Threads with their own connections insert lines into one order at the same time: on
    PostgreSQL the parent row lock makes the second wait and aggregate the first's committed line;
    on SQLite the writes serialize."""
    rec = rt.records
    order = rec.create("order", {"name": "O"})["id"]
    per_thread, threads = 15, 4
    barrier = threading.Barrier(threads)
    failures: list[BaseException] = []

    def insert(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                rec.create("line", {"order": order, "quantity": 1, "price": f"{n + 1}"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    workers = [threading.Thread(target=insert, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []
    got = rec.get("order", order)
    assert got["line_count"] == per_thread * threads
    assert got["grand"] == got["subtotal"] == D(per_thread * sum(range(1, threads + 1)))
    assert got["version"] == 1 + per_thread * threads


CYCLE_A = """
entity: alpha
fields:
  name: {type: text}
  beta: {type: lookup, to: beta}
  total: {type: formula, returns: number, expr: "from_betas + 1", blank_as_zero: true}
  from_betas: {type: rollup, of: beta.alpha, function: SUM, field: total}
"""
CYCLE_B = """
entity: beta
fields:
  name: {type: text}
  alpha: {type: lookup, to: alpha}
  total: {type: formula, returns: number, expr: "from_alphas * 2", blank_as_zero: true}
  from_alphas: {type: rollup, of: alpha.beta, function: SUM, field: total}
"""


def test_a_cycle_between_formulas_and_rollups_is_refused_naming_both_files(make_runtime, config_root):
    (config_root / "base" / "alpha.yaml").write_text(CYCLE_A.lstrip(), encoding="utf-8")
    (config_root / "base" / "beta.yaml").write_text(CYCLE_B.lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    cycles = [p for p in info.value.problems if "cycle" in p.message]
    assert len(cycles) == 1, info.value.problems
    message = cycles[0].message
    assert "alpha.yaml:5" in message and "alpha.yaml:6" in message   # total's expr, from_betas' of
    assert "beta.yaml:5" in message and "beta.yaml:6" in message
    assert "alpha.total" in message and "beta.from_alphas" in message


def test_a_cycle_through_a_self_lookup_is_refused(make_runtime, config_root):
    (config_root / "base" / "node.yaml").write_text(textwrap.dedent("""
        entity: node
        fields:
          parent: {type: lookup, to: node}
          own: {type: number}
          total: {type: formula, returns: number, expr: "own + below", blank_as_zero: true}
          below: {type: rollup, of: node.parent, function: SUM, field: total}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    assert any("cycle" in p.message and "node.total" in p.message and "node.below" in p.message
               for p in info.value.problems), info.value.problems


BEFORE = """
entity: order
title: name
fields:
  name: {type: text, required: true}
  shipping: {type: currency}
---
entity: line
fields:
  order: {type: lookup, to: order, required: true, on_delete: cascade}
  price: {type: currency}
"""
AFTER = BEFORE.replace("  shipping: {type: currency}\n", """  shipping: {type: currency}
  subtotal: {type: rollup, of: line.order, function: SUM, field: price}
  grand: {type: formula, returns: currency, expr: "subtotal + shipping", blank_as_zero: true}
""")


def test_backfill_fills_new_and_changed_computed_values_on_a_populated_table(make_runtime, config_root):
    path = config_root / "base" / "model.yaml"
    path.write_text(BEFORE.lstrip(), encoding="utf-8")
    rt = make_runtime(config_root=config_root)
    orders = rt.records.bulk("order", [{"name": f"O{i}", "shipping": i % 7} for i in range(2500)])
    ids = [item["id"] for item in orders.items]
    assert rt.records.bulk("line", [{"order": ids[i % 2500], "price": f"{i % 11}.50"} for i in range(6000)]).ok
    expected = {}
    for line in rt.records.query("line", limit=10000):
        expected[line["order"]] = expected.get(line["order"], D(0)) + line["price"]

    path.write_text(AFTER.lstrip(), encoding="utf-8")
    rt2 = make_runtime(config_root=config_root, migrate=False)
    plan = rt2.plan()
    assert [(s.op, s.column) for s in plan.steps if s.op == "backfill"] == [("backfill", "subtotal"),
                                                                            ("backfill", "grand")]
    told: list[str] = []
    rt2.migrate(progress=told.append)
    assert "backfill order.subtotal: 1000/2500 records" in told and "backfill order.grand: 2500/2500 records" in told
    for order in rt2.records.query("order", limit=10000):
        assert order["subtotal"] == expected.get(order["id"], D("0.00"))
        assert order["grand"] == expected.get(order["id"], D(0)) + order["shipping"]
        assert order["version"] == 1   # a migration is not an edit

    # a changed expression is recomputed for every record
    path.write_text(AFTER.replace('"subtotal + shipping"', '"subtotal * 2"').lstrip(), encoding="utf-8")
    rt3 = make_runtime(config_root=config_root, migrate=False)
    assert [(s.op, s.column) for s in rt3.plan().steps] == [("backfill", "grand")]
    rt3.migrate()
    for order in rt3.records.query("order", limit=10000):
        assert order["grand"] == expected.get(order["id"], D(0)) * 2
    assert make_runtime(config_root=config_root, migrate=False).plan().steps == []


# -- the base CRM: stage defaults, the primary quote -------------------------------------------------

def _opportunity(rec, **values):
    account = rec.create("account", {"name": "Acme"})
    return rec.create("opportunity", {"name": "Deal", "account": account["id"], "close_date": "2031-01-01",
                                      "amount": 100, **values})


def test_stage_options_set_probability_and_forecast_category(crm):
    rec = crm.records
    opp = _opportunity(rec)
    assert (opp["probability"], opp["forecast_category"]) == (D("10.00"), "pipeline")
    got = rec.update("opportunity", opp["id"], {"stage": "proposal"})
    assert (got["probability"], got["forecast_category"]) == (D("50.00"), "best_case")
    # an explicit value in the same write wins
    got = rec.update("opportunity", opp["id"], {"stage": "negotiation", "probability": 60})
    assert got["probability"] == D("60.00") and got["forecast_category"] == "commit"
    got = crm.records.update("opportunity", opp["id"], {"stage": "won"})
    assert (got["probability"], got["forecast_category"]) == (D("100.00"), "closed")
    assert got["expected_revenue"] == D("100.00")
    # a value that only repeats the stored one (what a form posts) does not stop the option's values
    other = _opportunity(rec)
    got = rec.update("opportunity", other["id"], {"stage": "lost", "lost_reason": "price", "probability": "10",
                                                  "forecast_category": "pipeline"})
    assert (got["probability"], got["forecast_category"]) == (D("0.00"), "omitted")
    # on create: the option's values, unless given (a form posting the declared default gives nothing)
    won = _opportunity(rec, stage="won", probability=10)
    assert (won["probability"], won["forecast_category"]) == (D("100.00"), "closed")
    assert _opportunity(rec, stage="won", probability=90)["probability"] == D("90.00")
    # a change of another field leaves them alone; so does the bulk path apply them
    rec.update("opportunity", won["id"], {"probability": 95})
    assert rec.update("opportunity", won["id"], {"name": "x"})["probability"] == D("95.00")
    account = rec.create("account", {"name": "Bulk"})["id"]
    result = rec.bulk("opportunity", [{"name": f"B{s}", "account": account, "close_date": "2031-01-01", "stage": s,
                                       "lost_reason": "price" if s == "lost" else None}
                                      for s in ("won", "lost", "proposal")])
    got = {r["stage"]: (r["probability"], r["forecast_category"])
           for r in rec.query("opportunity", where={"account": account})}
    assert result.ok, result.items
    assert got == {"won": (D("100.00"), "closed"), "lost": (D("0.00"), "omitted"),
                                 "proposal": (D("50.00"), "best_case")}


def test_the_amount_follows_the_primary_quote(crm):
    rec = crm.records
    opp = _opportunity(rec, stage="proposal")
    product = rec.create("product", {"name": "Widget", "code": "W-1"})
    q1 = rec.create("quote", {"name": "Q1", "opportunity": opp["id"]}, context=SYSTEM)
    rec.create("quote_line", {"quote": q1["id"], "product": product["id"], "quantity": 2, "unit_price": "40"})
    assert rec.get("opportunity", opp["id"])["amount"] == D("100.00")   # no primary quote: typed in
    rec.update("quote", q1["id"], {"is_primary": True})
    got = rec.get("opportunity", opp["id"])
    assert got["amount"] == got["primary_quote_amount"] == rec.get("quote", q1["id"])["grand_total"] == D("80.00")
    assert got["expected_revenue"] == D("40.00")
    # a line change reaches the opportunity through the quote's grand total
    rec.create("quote_line", {"quote": q1["id"], "product": product["id"], "quantity": 1, "unit_price": "20"})
    assert rec.get("opportunity", opp["id"])["amount"] == D("100.00")
    rec.update("quote", q1["id"], {"shipping": 5})
    assert rec.get("opportunity", opp["id"])["amount"] == D("105.00")
    # read-only while it follows; repeating the value is fine (a form posts it)
    with pytest.raises(ValidationFailed) as info:
        rec.update("opportunity", opp["id"], {"amount": 1})
    assert [(e.field, e.code) for e in info.value.errors] == [("amount", "readonly")]
    rec.update("opportunity", opp["id"], {"amount": "105.00", "name": "Renamed"})
    # marking another quote primary unmarks the first; the amount follows the new one
    q2 = rec.create("quote", {"name": "Q2", "opportunity": opp["id"], "is_primary": True, "shipping": 7},
                    context=SYSTEM)
    assert rec.get("quote", q1["id"])["is_primary"] is False and q2["is_primary"] is True
    assert rec.get("opportunity", opp["id"])["amount"] == D("7.00")
    assert rec.get("opportunity", opp["id"])["primary_quotes"] == 1
    # no primary quote any more: the amount keeps its value and may be typed in again
    rec.update("quote", q2["id"], {"is_primary": False})
    assert rec.get("opportunity", opp["id"])["amount"] == D("7.00")
    assert rec.update("opportunity", opp["id"], {"amount": 500})["amount"] == D("500.00")
    # a bulk request marking two quotes of one opportunity is refused
    result = rec.bulk("quote", [{"id": q1["id"], "is_primary": True}, {"id": q2["id"], "is_primary": True}],
                      mode="update", context=SYSTEM)
    assert not result.ok and any(e["code"] == "exclusive" for i in result.items for e in i.get("errors", []))


def test_demo_opportunities_follow_their_stage(make_runtime):
    from engine import demo

    rt = make_runtime()
    demo.seed(rt.records, unit=8)
    opps = rt.records.query("opportunity", limit=10000)
    assert any(o["stage"] == "won" for o in opps)
    for o in opps:
        if o["stage"] == "won":
            assert (o["probability"], o["forecast_category"]) == (D("100.00"), "closed")
        if o["stage"] == "lost":
            assert (o["probability"], o["forecast_category"]) == (D("0.00"), "omitted")
    for q in rt.records.query("quote", limit=10000):
        assert q["grand_total"] is not None


def test_bad_sets_follows_and_exclusive_are_metadata_errors(make_runtime, config_root):
    (config_root / "base" / "bad.yaml").write_text(textwrap.dedent("""
        entity: deal
        fields:
          name: {type: text}
          owner_team: {type: lookup, to: deal}
          stage:
            type: picklist
            options:
              - {value: open, sets: {missing: 1}}
              - {value: won, sets: {chance: 500}}
          chance: {type: percent, min: 0, max: 100}
          amount: {type: currency, follows: {value: "name", when: "owner_team.name = 'x'"}}
          primary: {type: boolean, exclusive_within: name}
    """).lstrip(), encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root, migrate=False)
    found = {(p.location.path, p.location.line): p.message for p in info.value.problems}
    assert "does not exist" in found[("fields/stage/options/0/sets/missing", 8)]
    assert "500" in found[("fields/stage/options/1/sets/chance", 9)]
    assert any(path.endswith("follows/when") and line == 11 and "own fields" in m for (path, line), m in found.items())
    assert "has no lookup 'name'" in found[("fields/primary/exclusive_within", 12)]


def test_option_sets_in_bulk_on_an_entity_without_rules(make_runtime, config_root):
    (config_root / "base" / "model.yaml").write_text(textwrap.dedent("""
        entity: deal
        fields:
          name: {type: text}
          stage: {type: picklist, default: open, options: [{value: open, sets: {chance: 10}}, {value: won, sets: {chance: 100}}]}
          chance: {type: integer}
    """).lstrip(), encoding="utf-8")
    rt = make_runtime(config_root=config_root)
    result = rt.records.bulk("deal", [{"name": "a"}, {"name": "b", "stage": "won"}])
    ids = [item["id"] for item in result.items]
    assert [rt.records.get("deal", i)["chance"] for i in ids] == [10, 100]
    rt.records.update("deal", ids[1], {"chance": 90})
    # a change to the option applies its sets; staying on it (the stored value sent again) does not
    assert rt.records.bulk("deal", [{"id": ids[0], "stage": "won"}, {"id": ids[1], "stage": "won", "name": "x"}],
                           mode="update").ok
    assert [rt.records.get("deal", i)["chance"] for i in ids] == [100, 90]
