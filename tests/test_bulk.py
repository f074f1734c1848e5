"""Bulk create / update / upsert through the same door, atomic or per item."""

from __future__ import annotations

import pytest

from engine.storage.errors import ValidationFailed


def leads(n, start=0, **extra):
    return [{"last_name": f"Lee {i}", "company": f"Co {i}", "email": f"lead{i}@example.com", **extra}
            for i in range(start, start + n)]


def test_bulk_create_gives_ids_in_order(crm):
    result = crm.records.bulk("lead", leads(5))
    assert result.ok and [i["status"] for i in result.items] == ["created"] * 5
    ids = [i["id"] for i in result.items]
    assert [crm.records.get("lead", rid)["last_name"] for rid in ids] == [f"Lee {i}" for i in range(5)]


def test_atomic_bulk_writes_nothing_when_one_item_fails(crm):
    rows = leads(3)
    rows[1]["email"] = "not-an-email"
    result = crm.records.bulk("lead", rows, atomic=True)
    assert [i["status"] for i in result.items] == ["skipped", "error", "skipped"]
    assert result.items[1]["errors"][0]["field"] == "email"
    assert crm.records.query("lead") == []


def test_per_item_bulk_writes_the_good_items_and_reports_the_bad(crm):
    rows = leads(3)
    rows[2].pop("last_name")
    result = crm.records.bulk("lead", rows, atomic=False)
    assert [i["status"] for i in result.items] == ["created", "created", "error"]
    assert result.items[2]["errors"] == [{"field": "last_name", "code": "required", "message": "is required"}]
    assert len(crm.records.query("lead")) == 2


def test_upsert_by_a_unique_field_updates_existing_and_creates_new(crm):
    product = crm.model.entity("product")
    key = next(f.name for f in product.fields.values() if f.unique)
    first = crm.records.bulk("product", [{"name": "A", key: "P-1"}, {"name": "B", key: "P-2"}], mode="upsert", key=key)
    assert first.counts() == {"created": 2}
    second = crm.records.bulk("product", [{"name": "A2", key: "P-1"}, {"name": "B", key: "P-2"},
                                          {"name": "C", key: "P-3"}], mode="upsert", key=key)
    assert [i["status"] for i in second.items] == ["updated", "unchanged", "created"]
    assert second.items[0]["id"] == first.items[0]["id"]
    a = crm.records.get("product", first.items[0]["id"])
    assert a["name"] == "A2" and a["version"] == 2
    changes = [(h["field"], h["old_value"], h["new_value"]) for h in crm.records.history_of("product", a["id"])]
    assert changes == [("name", "A", "A2")]          # history records changes, not creation


def test_upsert_refuses_duplicate_keys_in_one_request_and_a_non_unique_key(crm):
    key = next(f.name for f in crm.model.entity("product").fields.values() if f.unique)
    result = crm.records.bulk("product", [{"name": "A", key: "X"}, {"name": "B", key: "X"}], mode="upsert",
                              key=key, atomic=False)
    assert [i["status"] for i in result.items] == ["created", "error"]
    assert result.items[1]["errors"][0]["code"] == "duplicate"
    with pytest.raises(ValidationFailed) as info:
        crm.records.bulk("product", [], mode="upsert", key="name")
    assert info.value.errors[0].field == "key"


def test_bulk_update_by_id_checks_versions_lookups_and_required(crm):
    acc = crm.records.create("account", {"name": "Acme"})
    made = crm.records.bulk("contact", [{"last_name": "A"}, {"last_name": "B"}])
    ids = [i["id"] for i in made.items]
    result = crm.records.bulk("contact", [{"id": ids[0], "account": acc["id"]}, {"id": ids[1], "account": 9999},
                                          {"id": 777777, "last_name": "x"}, {"id": ids[1], "last_name": None}],
                              mode="update", atomic=False)
    assert [i["status"] for i in result.items] == ["updated", "error", "error", "error"]
    assert result.items[1]["errors"][0]["code"] == "lookup"
    assert result.items[2]["errors"][0]["code"] == "not_found"
    assert result.items[3]["errors"][0]["code"] == "duplicate"
    assert crm.records.get("contact", ids[0])["account"] == acc["id"]


def test_composite_unique_index_is_checked_inside_the_request_and_against_the_table(crm):
    ent = crm.model.entity("campaign_member")
    key = next(k for k in ent.unique_keys if len(k) == 2)
    campaign = crm.records.create("campaign", {"name": "Launch"})
    contact = crm.records.create("contact", {"last_name": "Kim"})
    values = {"campaign": campaign["id"], "contact": contact["id"]}
    assert set(key) == set(values)
    first = crm.records.bulk("campaign_member", [dict(values)])
    assert first.ok
    again = crm.records.bulk("campaign_member", [dict(values), dict(values)], atomic=False)
    assert [i["errors"][0]["code"] for i in again.items] == ["unique", "unique"]


def test_bulk_of_many_rows_spans_chunks(crm):
    result = crm.records.bulk("lead", leads(4500))
    assert result.counts() == {"created": 4500}
    ids = [i["id"] for i in result.items]
    assert len(set(ids)) == 4500 and crm.records.get("lead", ids[-1])["last_name"] == "Lee 4499"


class NoGmail:
    from engine.plugins import hookimpl

    @hookimpl
    def crm_before_write(self, event, entity, record):
        from engine.storage.errors import FieldError

        if entity.name == "lead" and (record.get("email") or "").endswith("@gmail.com"):
            raise ValidationFailed([FieldError("email", "rule", "business addresses only")])


def test_a_rule_refusing_one_item_does_not_sink_a_per_item_request(crm):
    crm.pm.register(NoGmail())
    rows = leads(3)
    rows[1]["email"] = "x@gmail.com"
    result = crm.records.bulk("lead", rows, atomic=False)
    assert [i["status"] for i in result.items] == ["created", "error", "created"]
    assert result.items[1]["errors"][0]["message"] == "business addresses only"


class ChunkChecker:
    """Checks a bulk write's chunk at once (``crm_before_write_chunk``): refuses one record of it and
    marks the rest checked, so its per-record hook skips them."""

    from engine.plugins import hookimpl

    def __init__(self):
        self.chunks, self.per_record = [], 0

    @hookimpl
    def crm_before_write_chunk(self, entity, items, context, conn):
        from engine.storage.errors import FieldError

        if entity.name != "lead":
            return
        self.chunks.append(len(items))
        for item in items:
            item["state"]["checked"] = True
            if (item["record"].get("email") or "").endswith("@gmail.com"):
                item["errors"].append(FieldError("email", "rule", "business addresses only"))

    @hookimpl
    def crm_before_write(self, event, entity, record, state):
        if entity.name == "lead" and not state.get("checked"):
            self.per_record += 1


def test_a_chunk_hook_checks_a_bulk_write_at_once_and_refuses_one_record(crm):
    checker = ChunkChecker()
    crm.pm.register(checker)
    rows = leads(3)
    rows[1]["email"] = "x@gmail.com"
    result = crm.records.bulk("lead", rows, atomic=False)
    assert [i["status"] for i in result.items] == ["created", "error", "created"]
    assert result.items[1]["errors"][0]["message"] == "business addresses only"
    assert checker.chunks == [3] and checker.per_record == 0   # once for the chunk, never per record
    crm.records.create("lead", leads(1)[0])                    # a single write: the per-record hook
    assert checker.per_record == 1


class ContactWatcher:
    """Watches contacts only; its before hook leaves a note in the write's state for its after hook."""

    from engine.plugins import hookimpl

    def __init__(self):
        self.before, self.after = [], []

    @hookimpl
    def crm_watches_writes(self, entity):
        return entity.name == "contact"

    @hookimpl
    def crm_before_write(self, event, entity, record, state, errors, conn):
        assert conn is not None and errors == []
        self.before.append((entity.name, event))
        state["note"] = f"{event} {record.get('last_name') or record.get('name')}"

    @hookimpl
    def crm_after_write(self, event, entity, record, state):
        self.after.append((entity.name, record["id"], state.get("note")))


def test_write_hooks_share_a_state_per_record_and_bulk_runs_them_only_for_watched_entities(crm):
    watcher = ContactWatcher()
    crm.pm.register(watcher)
    contacts = crm.records.bulk("contact", [{"last_name": f"Lee {i}"} for i in range(3)])
    ids = [i["id"] for i in contacts.items]
    assert watcher.after == [("contact", rid, f"create Lee {i}") for i, rid in enumerate(ids)]   # each its own state
    crm.records.bulk("contact", [{"id": ids[0], "last_name": "Kim"}], mode="update")
    assert watcher.after[-1] == ("contact", ids[0], "update Kim")
    watcher.before.clear()
    watcher.after.clear()
    products = crm.records.bulk("product", [{"name": f"Widget {i}", "code": f"W-{i}"} for i in range(3)])
    assert products.counts() == {"created": 3}
    assert watcher.before == [] and watcher.after == []      # nobody watches products: the fast path, no hooks
    one = crm.records.create("product", {"name": "Solo", "code": "S-1"})   # a single write always runs the hooks
    assert watcher.before == [("product", "create")] and watcher.after == [("product", one["id"], "create Solo")]
    # leads are watched (the workflow, the follow-up signals), but not by this plugin: a bulk write of
    # leads runs the hooks of the plugins that watch leads only
    assert crm.records.bulk("lead", leads(2)).counts() == {"created": 2}
    assert watcher.before == [("product", "create")] and len(watcher.after) == 1


class LeadOwnerSeen:
    """Implements a write hook without ``crm_watches_writes``: it watches every entity."""

    from engine.plugins import hookimpl

    def __init__(self):
        self.owners = []

    @hookimpl
    def crm_before_write(self, event, entity, record):
        if entity.name == "lead":
            self.owners.append(record.get("owner_id"))


def test_the_workflow_runs_before_plugins_so_they_see_what_before_save_automations_set(crm):
    from engine.storage.records import Context

    sam = crm.records.create("user", {"name": "Sam", "email": "sam@example.com", "role": "sales"},
                             context=Context(system=True))
    seen = LeadOwnerSeen()
    crm.pm.register(seen)
    crm.records.create("lead", {"last_name": "One", "company": "Co"})
    crm.records.bulk("lead", leads(2))
    assert seen.owners == [sam["id"]] * 3      # assigned round-robin by the workflow's before hook, first
