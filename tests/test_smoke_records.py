from engine.storage.records import Context


def test_base_crm_migrates_and_takes_a_record(crm):
    account = crm.records.create("account", {"name": "Acme"}, context=Context(system=True))
    assert crm.records.get("account", account["id"])["name"] == "Acme"
