"""The record service: one door for every write, on the base CRM."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest

from engine.storage.errors import Conflict, DeleteRestricted, NotFound, ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)


def account(crm, name="Acme", **values):
    return crm.records.create("account", {"name": name, **values})


def opportunity(crm, acc, **values):
    return crm.records.create("opportunity", {"name": "Big deal", "account": acc["id"],
                                              "close_date": "2027-01-31", **values})


def codes(info) -> dict:
    return {e.field: e.code for e in info.value.errors}


def test_create_coerces_applies_defaults_and_sets_system_columns(crm):
    user = crm.records.create("user", {"name": "Sam", "email": "sam@example.com"})
    acc = account(crm)
    opp = crm.records.create("opportunity", {"name": "Deal", "account": str(acc["id"]), "amount": 1200.5,
                                             "close_date": "2027-03-01"}, context=Context(user_id=user["id"]))
    stored = crm.records.get("opportunity", opp["id"])
    assert stored["amount"] == Decimal("1200.50") and stored["close_date"] == date(2027, 3, 1)
    assert stored["stage"] == "prospecting"                     # the declared default
    assert stored["account"] == acc["id"]
    assert stored["version"] == 1
    assert stored["created_by"] == stored["updated_by"] == stored["owner_id"] == user["id"]
    assert stored["created_at"].tzinfo is not None


def test_bad_values_are_refused_field_by_field_and_nothing_is_written(crm):
    acc = account(crm)
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("opportunity", {"account": acc["id"], "amount": "lots", "stage": "won-ish",
                                           "close_date": "31/01/2027", "colour": "red"})
    assert codes(info) == {"name": "required", "amount": "type", "stage": "choice", "close_date": "format",
                           "colour": "unknown"}
    assert crm.records.query("opportunity") == []


def test_required_and_lookup_existence_are_checked(crm):
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("opportunity", {"name": "x", "account": 999, "close_date": "2027-01-01"})
    assert codes(info) == {"account": "lookup"}
    assert "no account with id 999" in str(info.value)
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("opportunity", {"name": "x", "close_date": "2027-01-01"})
    assert codes(info) == {"account": "required"}


def test_readonly_and_engine_columns_cannot_be_written_by_users(crm):
    with pytest.raises(ValidationFailed) as info:
        account(crm, last_activity_at="2026-01-01T00:00:00Z", version=7, id=3)
    assert codes(info) == {"last_activity_at": "readonly", "version": "readonly", "id": "readonly"}
    acc = crm.records.create("account", {"name": "A", "last_activity_at": "2026-01-01T00:00:00Z"}, context=SYSTEM)
    assert acc["last_activity_at"].year == 2026


def test_unique_fields_are_enforced_with_a_field_error(crm):
    account(crm, account_number="A-1")
    with pytest.raises(ValidationFailed) as info:
        account(crm, "Other", account_number="A-1")
    assert codes(info) == {"account_number": "unique"}


def test_update_is_partial_bumps_version_and_records_history(crm):
    sam = crm.records.create("user", {"name": "Sam", "email": "sam@example.com"})
    acc = account(crm)
    opp = opportunity(crm, acc, amount=100)
    updated = crm.records.update("opportunity", opp["id"], {"stage": "proposal", "amount": "250.00"},
                                 version=1, context=Context(user_id=sam["id"]))
    assert updated["version"] == 2 and updated["name"] == "Big deal"
    history = [(h["field"], h["old_value"], h["new_value"], h["changed_by"])
               for h in crm.records.history_of("opportunity", opp["id"])]
    assert ("stage", "prospecting", "proposal", sam["id"]) in history
    assert ("amount", "100.00", "250.00", sam["id"]) in history
    assert not any(f == "next_step" for f, *_ in history)    # untracked fields leave no history
    same = crm.records.update("opportunity", opp["id"], {"stage": "proposal"})
    assert same["version"] == 2                                # no change, no new version


def test_stale_version_is_a_conflict_never_an_overwrite(crm):
    acc = account(crm)
    crm.records.update("account", acc["id"], {"phone": "+1 201 555 0100"}, version=1)
    with pytest.raises(Conflict) as info:
        crm.records.update("account", acc["id"], {"phone": "+1 201 555 0199"}, version=1)
    assert info.value.current == 2
    assert crm.records.get("account", acc["id"])["phone"] == "+12015550100"   # stored in E.164 (normalise: e164)


def test_two_concurrent_updates_one_wins_the_other_conflicts(crm):
    acc = account(crm)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def edit(phone: str) -> None:
        barrier.wait()
        try:
            crm.records.update("account", acc["id"], {"phone": phone}, version=1)
            outcomes.append(f"ok {phone}")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=edit, args=(p,)) for p in ("+12015550001", "+12015550002")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.split()[0] for o in outcomes) == ["conflict", "ok"]
    winner = next(o for o in outcomes if o.startswith("ok")).split(" ", 1)[1]
    stored = crm.records.get("account", acc["id"])
    assert stored["phone"] == winner and stored["version"] == 2


def test_concurrent_updates_without_versions_are_serialised_not_lost(crm):
    acc = account(crm)
    fields = ["phone", "website", "description", "billing_city"]
    values = {"phone": "+12015550101", "website": "https://acme.example", "description": "d", "billing_city": "Paris"}
    present = [f for f in fields if f in crm.model.entity("account").fields]
    errors = []

    def edit(name):
        try:
            crm.records.update("account", acc["id"], {name: values[name]})
        except Conflict:
            errors.append(name)

    threads = [threading.Thread(target=edit, args=(f,)) for f in present]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = crm.records.get("account", acc["id"])
    written = [f for f in present if f not in errors]
    assert all(stored[f] == values[f] for f in written)        # every success is really stored
    assert stored["version"] == 1 + len(written)


def test_delete_restrict_names_the_referencing_records(crm):
    acc = account(crm)
    opp = opportunity(crm, acc)
    with pytest.raises(DeleteRestricted) as info:
        crm.records.delete("account", acc["id"])
    assert info.value.references[0][:3] == ("opportunity", "account", [opp["id"]])
    assert "opportunity via account" in str(info.value)
    assert crm.records.get("account", acc["id"])


def test_delete_set_null_and_cascade(crm):
    acc = account(crm)
    contact = crm.records.create("contact", {"last_name": "Lee", "account": acc["id"]})
    opp = opportunity(crm, acc)
    quote = crm.records.create("quote", {"name": "Q", "opportunity": opp["id"]})
    product = crm.records.create("product", {"name": "Widget", "code": "W-1"})
    line = crm.records.create("quote_line", {"quote": quote["id"], "product": product["id"], "unit_price": "9.99"})
    crm.records.delete("opportunity", opp["id"])               # quote cascades, its lines cascade
    for entity, rid in (("opportunity", opp["id"]), ("quote", quote["id"]), ("quote_line", line["id"])):
        with pytest.raises(NotFound):
            crm.records.get(entity, rid)
    crm.records.delete("account", acc["id"])                  # contact.account is set_null
    kept = crm.records.get("contact", contact["id"])
    assert kept["account"] is None and kept["version"] == 2
    assert [h["field"] for h in crm.records.history_of("contact", contact["id"])][-1] == "account"


def test_a_restricted_grandchild_stops_the_whole_cascade(crm):
    acc = account(crm)
    opp = opportunity(crm, acc)
    quote = crm.records.create("quote", {"name": "Q", "opportunity": opp["id"]})
    product = crm.records.create("product", {"name": "Widget", "code": "W-1"})
    crm.records.create("quote_line", {"quote": quote["id"], "product": product["id"], "unit_price": "1"})
    with pytest.raises(DeleteRestricted):
        crm.records.delete("product", product["id"])
    crm.records.delete("opportunity", opp["id"])
    crm.records.delete("product", product["id"])               # the line went with the quote


def test_reference_fields_point_to_any_record_and_follow_on_delete(crm):
    acc = account(crm)
    task = crm.records.create("activity", {"subject": "Call", "related_to": {"entity": "account", "id": acc["id"]}})
    assert crm.records.get("activity", task["id"])["related_to"] == ("account", acc["id"])
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("activity", {"subject": "x", "related_to": "account:424242"})
    assert codes(info) == {"related_to": "lookup"}
    rule = crm.model.entity("activity").fields["related_to"].type.on_delete(crm.model.entity("activity").fields["related_to"])
    crm.records.delete("account", acc["id"])
    if rule == "cascade":
        with pytest.raises(NotFound):
            crm.records.get("activity", task["id"])
    else:
        assert crm.records.get("activity", task["id"])["related_to"] is None


def test_autonumbers_follow_their_pattern_and_never_repeat(crm):
    acc = account(crm)
    opp = opportunity(crm, acc)
    numbers = [crm.records.create("quote", {"name": f"Q{i}", "opportunity": opp["id"]})["quote_number"] for i in range(3)]
    year = date.today().year
    assert numbers == [f"Q-{year}-0001", f"Q-{year}-0002", f"Q-{year}-0003"]


def test_unknown_entity_and_missing_record(crm):
    with pytest.raises(NotFound):
        crm.records.create("spaceship", {})
    with pytest.raises(NotFound):
        crm.records.update("account", 12345, {"name": "x"})


class Recorder:
    def __init__(self):
        self.calls = []

    from engine.plugins import hookimpl

    @hookimpl
    def crm_before_write(self, event, entity, record, old):
        self.calls.append(("before", event, entity.name))
        if event == "create" and entity.name == "account" and record.get("name") == "Shout":
            record["name"] = "SHOUT"

    @hookimpl
    def crm_after_write(self, event, entity, record):
        self.calls.append(("after", event, entity.name, record.get("id")))

    @hookimpl
    def crm_after_commit(self, event, entity, record, context):
        self.calls.append(("commit", event, entity.name, record.get("id")))


def test_lifecycle_hooks_run_in_order_and_may_change_the_record(crm):
    recorder = Recorder()
    crm.pm.register(recorder)
    acc = crm.records.create("account", {"name": "Shout"})
    assert crm.records.get("account", acc["id"])["name"] == "SHOUT"
    crm.records.update("account", acc["id"], {"phone": "+1 201 555 0000"})
    crm.records.delete("account", acc["id"])
    assert recorder.calls == [
        ("before", "create", "account"), ("after", "create", "account", acc["id"]), ("commit", "create", "account", acc["id"]),
        ("before", "update", "account"), ("after", "update", "account", acc["id"]), ("commit", "update", "account", acc["id"]),
        ("before", "delete", "account"), ("after", "delete", "account", acc["id"]), ("commit", "delete", "account", acc["id"]),
    ]


def test_a_user_who_owns_records_cannot_be_deleted_and_the_message_says_why(crm):
    sam = crm.records.create("user", {"name": "Sam", "email": "sam@example.com"})
    crm.records.create("account", {"name": "Acme"}, context=Context(user_id=sam["id"]))
    with pytest.raises(DeleteRestricted) as info:
        crm.records.delete("user", sam["id"])
    assert "account via owner_id" in str(info.value)
    loner = crm.records.create("user", {"name": "Lone", "email": "lone@example.com"})
    crm.records.delete("user", loner["id"])


def test_set_null_reaches_every_referrer_and_reports_each_change_after_commit(crm):
    recorder = Recorder()
    acc = account(crm)
    made = crm.records.bulk("contact", [{"last_name": f"C{i}", "account": acc["id"]} for i in range(25)])
    crm.pm.register(recorder)
    crm.records.delete("account", acc["id"])
    assert all(c["account"] is None for c in crm.records.query("contact", limit=100))
    commits = [c for c in recorder.calls if c[0] == "commit"]
    assert sorted(c[3] for c in commits if c[1] == "update") == sorted(i["id"] for i in made.items)
    assert commits[-1] == ("commit", "delete", "account", acc["id"])


def test_restrict_counts_every_referrer_but_names_a_few(crm):
    acc = account(crm)
    crm.records.bulk("opportunity", [{"name": f"O{i}", "account": acc["id"], "close_date": "2027-01-01"}
                                     for i in range(12)])
    with pytest.raises(DeleteRestricted) as info:
        crm.records.delete("account", acc["id"])
    [(other, field, ids, count)] = info.value.references
    assert (other, field, len(ids), count) == ("opportunity", "account", 10, 12)


def test_query_compares_values_as_the_field_types_store_them(crm):
    crm.records.create("user", {"name": "Sam", "email": "sam@Example.COM"})
    assert [u["name"] for u in crm.records.query("user", where={"email": "sam@EXAMPLE.com"})] == ["Sam"]
    acc = account(crm)
    opportunity(crm, acc, amount="10.5")
    assert len(crm.records.query("opportunity", where={"amount": "10.50", "close_date": "2027-01-31"})) == 1
    with pytest.raises(ValidationFailed):
        crm.records.query("opportunity", where={"close_date": "someday"})


def test_cascade_through_a_cycle_ends(config_root, make_runtime):
    (config_root / "base" / "node.yaml").write_text(
        "entity: node\nfields:\n  name: {type: text}\n"
        "  parent: {type: lookup, to: node, on_delete: cascade}\n")
    rt = make_runtime(config_root=config_root)
    a = rt.records.create("node", {"name": "a"})
    b = rt.records.create("node", {"name": "b", "parent": a["id"]})
    rt.records.update("node", a["id"], {"parent": b["id"]})          # a -> b -> a
    self_loop = rt.records.create("node", {"name": "c"})
    rt.records.update("node", self_loop["id"], {"parent": self_loop["id"]})
    rt.records.delete("node", a["id"])
    rt.records.delete("node", self_loop["id"])
    assert rt.records.query("node") == []


def test_deleting_a_user_takes_their_credentials_and_tokens_along(crm):
    from engine.security.tokens import authenticate, create_token

    user = crm.records.create("user", {"name": "Temp", "email": "temp@example.com"})
    _, token = create_token(crm.records, user["id"], "t")
    crm.records.delete("user", user["id"])
    assert authenticate(crm.records, token) is None
