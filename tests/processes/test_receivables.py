"""Receivables (回款) in the base CRM: payment plans (instalments) of orders and contracts, payments
allocated to instalments, the paid / outstanding / overdue rollups of order, contract and account,
refusals of a payment or an allocation larger than what is outstanding (nothing written), the daily
overdue reminder that also refreshes the overdue flag, and the receivables dashboard. SQLite and,
with DATABASE_URL, PostgreSQL."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from engine.storage.errors import ValidationFailed
from engine.storage.records import Context


SYSTEM = Context(system=True)
TODAY = date.today()


def _setup(rt):
    owner = rt.records.create("user", {"name": "Mia", "email": "mia@example.com", "role": "manager"}, context=SYSTEM)
    ctx = Context(user_id=owner["id"], system=True)
    account = rt.records.create("account", {"name": "Acme"}, context=ctx)
    order = rt.records.create("order", {"account": account["id"], "order_date": TODAY.isoformat(),
                                        "status": "confirmed"}, context=ctx)
    return owner, ctx, account, order


def _plan(rt, ctx, order, *amounts_and_days):
    return [rt.records.create("payment_instalment", {"order": order["id"], "amount": str(a),
                                                     "due_date": (TODAY + timedelta(days=d)).isoformat()}, context=ctx)
            for a, d in amounts_and_days]


def test_a_payment_plan_and_allocated_payments_roll_up_to_order_and_account(crm):
    owner, ctx, account, order = _setup(crm)
    first, second = _plan(crm, ctx, order, (600, -10), (400, 30))
    assert first["account"] == account["id"]                        # from the order
    assert (first["outstanding"], first["overdue"], second["overdue"]) == (Decimal("600.00"), True, False)
    got = crm.records.get("order", order["id"])
    assert (got["planned_amount"], got["amount_overdue"]) == (Decimal("1000.00"), Decimal("600.00"))
    assert crm.records.get("account", account["id"])["amount_overdue"] == Decimal("600.00")
    pay = crm.records.create("payment", {"order": order["id"], "amount": "700"}, context=ctx)
    assert pay["account"] == account["id"] and pay["received_date"] == TODAY
    crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": first["id"], "amount": "600"},
                       context=ctx)
    crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": second["id"], "amount": "100"},
                       context=ctx)
    assert crm.records.get("payment_instalment", first["id"])["paid"] == Decimal("600.00")
    assert crm.records.get("payment_instalment", second["id"])["paid"] == Decimal("100.00")
    assert crm.records.get("payment", pay["id"])["allocated"] == Decimal("700.00")
    assert crm.records.get("order", order["id"])["amount_paid"] == Decimal("700.00")
    assert crm.records.get("account", account["id"])["amount_paid"] == Decimal("700.00")


def test_outstanding_and_overdue_follow_the_allocations(crm):
    owner, ctx, account, order = _setup(crm)
    first, second = _plan(crm, ctx, order, (600, -10), (400, 30))
    pay = crm.records.create("payment", {"order": order["id"], "amount": "700"}, context=ctx)
    crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": first["id"], "amount": "600"},
                       context=ctx)
    crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": second["id"], "amount": "100"},
                       context=ctx)
    assert crm.records.get("payment_instalment", first["id"])["overdue"] is False
    got = crm.records.get("order", order["id"])
    assert (got["amount_outstanding"], got["amount_overdue"]) == (Decimal("300.00"), Decimal("0.00"))
    acc = crm.records.get("account", account["id"])
    assert (acc["amount_outstanding"], acc["amount_overdue"]) == (Decimal("300.00"), Decimal("0.00"))
    assert crm.records.get("payment", pay["id"])["unallocated"] == Decimal("0.00")


def test_a_contracts_plan_rolls_up_to_the_contract(crm):
    owner, ctx, account, _ = _setup(crm)
    contract = crm.records.create("contract", {"name": "C", "account": account["id"], "start_date": TODAY.isoformat(),
                                               "contract_value": "5000"}, context=ctx)
    crm.records.create("payment_instalment", {"contract": contract["id"], "amount": "2500",
                                              "due_date": (TODAY - timedelta(days=1)).isoformat()}, context=ctx)
    got = crm.records.get("contract", contract["id"])
    assert (got["planned_amount"], got["amount_overdue"]) == (Decimal("2500.00"), Decimal("2500.00"))
    crm.records.create("payment", {"contract": contract["id"], "amount": "1000"}, context=ctx)
    assert crm.records.get("contract", contract["id"])["amount_paid"] == Decimal("1000.00")


def test_an_allocation_larger_than_the_instalment_owes_or_the_payment_has_is_refused(crm):
    owner, ctx, account, order = _setup(crm)
    inst, _ = _plan(crm, ctx, order, (500, 10), (500, 40))
    pay = crm.records.create("payment", {"order": order["id"], "amount": "450"}, context=ctx)
    with pytest.raises(ValidationFailed) as err:
        crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": inst["id"], "amount": "460"},
                           context=ctx)
    assert [(e.field, e.code) for e in err.value.errors] == [("amount", "rule:allocation_within_payment")]
    assert "larger than what is left of the payment" in err.value.errors[0].message
    done = crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": inst["id"], "amount": "300"},
                              context=ctx)
    other = crm.records.create("payment", {"order": order["id"], "amount": "300"}, context=ctx)
    with pytest.raises(ValidationFailed) as err:      # 500 - 300 = 200 left on the instalment
        crm.records.create("payment_allocation", {"payment": other["id"], "instalment": inst["id"], "amount": "201"},
                           context=ctx)
    assert [e.code for e in err.value.errors] == ["rule:allocation_within_instalment"]
    with pytest.raises(ValidationFailed):             # raising an allocation counts only the difference
        crm.records.update("payment_allocation", done["id"], {"amount": "451"}, context=ctx)
    assert crm.records.update("payment_allocation", done["id"], {"amount": "450"}, context=ctx)["amount"] == Decimal("450.00")
    assert len(crm.records.query("payment_allocation")) == 1
    assert crm.records.get("payment_instalment", inst["id"])["paid"] == Decimal("450.00")
    with pytest.raises(ValidationFailed) as err:
        crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": inst["id"], "amount": "-1"},
                           context=ctx)
    assert {e.field for e in err.value.errors} == {"amount"}


def test_concurrent_allocations_never_overpay_an_instalment(crm):
    """Two allocations of 300 to an instalment of 500, each within what it owed when checked, from two
    threads with their own connections at the same moment: the instalment's row is locked before its
    paid amount is recomputed, so the second sees the first and is refused by instalment_not_overpaid
    (on SQLite the writes serialize and the allocation's own rule refuses it)."""
    owner, ctx, account, order = _setup(crm)
    inst, _ = _plan(crm, ctx, order, (500, 10), (500, 40))
    payments = [crm.records.create("payment", {"order": order["id"], "amount": "300"}, context=ctx) for _ in range(2)]
    barrier, results = threading.Barrier(2), []

    def allocate(payment):
        barrier.wait()
        try:
            crm.records.create("payment_allocation", {"payment": payment["id"], "instalment": inst["id"],
                                                      "amount": "300"}, context=ctx)
            results.append("ok")
        except ValidationFailed as exc:
            results.append(exc.errors[0].code)

    workers = [threading.Thread(target=allocate, args=(p,)) for p in payments]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) in (["ok", "rule:allocation_within_instalment"], ["ok", "rule:instalment_not_overpaid"])
    got = crm.records.get("payment_instalment", inst["id"])
    assert (got["paid"], got["outstanding"]) == (Decimal("300.00"), Decimal("200.00"))
    assert len(crm.records.query("payment_allocation")) == 1


def test_a_payment_larger_than_the_order_has_outstanding_is_refused(crm):
    owner, ctx, account, order = _setup(crm)
    _plan(crm, ctx, order, (600, 10), (400, 40))
    crm.records.create("payment", {"order": order["id"], "amount": "900"}, context=ctx)
    with pytest.raises(ValidationFailed) as err:
        crm.records.create("payment", {"order": order["id"], "amount": "100.01"}, context=ctx)
    assert [(e.field, e.code) for e in err.value.errors] == [("amount", "rule:payment_within_order_outstanding")]
    assert err.value.errors[0].message == "The payment is larger than what is outstanding on the order."
    assert len(crm.records.query("payment")) == 1
    crm.records.create("payment", {"order": order["id"], "amount": "100"}, context=ctx)


def test_an_instalment_needs_an_order_or_a_contract(crm):
    with pytest.raises(ValidationFailed) as err:
        crm.records.create("payment_instalment", {"amount": "1", "due_date": TODAY.isoformat()}, context=SYSTEM)
    assert "order" in {e.field for e in err.value.errors}


def test_the_daily_reminder_notifies_the_owner_and_refreshes_overdue(crm, monkeypatch):
    owner, ctx, account, order = _setup(crm)
    [inst] = _plan(crm, ctx, order, (800, 0))               # due today: not overdue yet
    [paid] = _plan(crm, ctx, order, (200, 0))
    pay = crm.records.create("payment", {"order": order["id"], "amount": "200"}, context=ctx)
    crm.records.create("payment_allocation", {"payment": pay["id"], "instalment": paid["id"], "amount": "200"},
                       context=ctx)
    assert crm.records.get("order", order["id"])["amount_overdue"] == Decimal("0.00")
    later = datetime.now(timezone.utc) + timedelta(days=2)

    from engine.storage import formulas

    class Later(datetime):                                  # the formulas' clock, two days on
        @classmethod
        def now(cls, tz=None):
            return later

    monkeypatch.setattr(formulas, "datetime", Later)
    sched = crm.scheduler()
    assert sched.tick(later)["scheduled"] == 1              # the paid one does not match ``when``
    crm.workflow.runner.drain()
    got = crm.records.get("payment_instalment", inst["id"])
    assert got["overdue"] is True and got["reminded_at"] is not None
    assert crm.records.get("order", order["id"])["amount_overdue"] == Decimal("800.00")
    assert crm.records.get("account", account["id"])["amount_overdue"] == Decimal("800.00")
    [note] = crm.records.query("notification")
    assert note["user"] == owner["id"] and note["message"].startswith(f"Payment overdue: {inst['instalment_number']} of Acme")


def test_the_receivables_dashboard_sums_what_is_overdue(crm):
    from engine.app import create_app
    from engine.security.tokens import create_token

    owner, ctx, account, order = _setup(crm)
    _plan(crm, ctx, order, (600, -10), (400, 30))
    _, token = create_token(crm.records, owner["id"], "t")
    client = create_app(runtime=crm).test_client()
    r = client.get("/api/v1/_dashboards/receivables", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.json
    widgets = {w["name"]: w for w in r.json["widgets"]}
    assert Decimal(str(widgets["overdue_amount"]["value"])) == Decimal(600)
    assert Decimal(str(widgets["outstanding_amount"]["value"])) == Decimal(1000)


def test_the_orders_payment_status_follows_the_payments(crm):
    owner, ctx, account, order = _setup(crm)
    _plan(crm, ctx, order, (600, 10), (400, 40))
    crm.records.create("payment", {"order": order["id"], "amount": "600"}, context=ctx)
    crm.workflow.runner.drain()
    assert crm.records.get("order", order["id"])["payment_status"] == "partially_paid"
    crm.records.create("payment", {"order": order["id"], "amount": "400"}, context=ctx)
    crm.workflow.runner.drain()
    assert crm.records.get("order", order["id"])["payment_status"] == "paid"
