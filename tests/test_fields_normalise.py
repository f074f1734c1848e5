"""Normalisation on write (engine/fields/text.py): text trimmed, e-mail checked with email-validator
and lower-cased, URL given https://, phone numbers declared ``normalise: e164`` stored in E.164 in the
field's region; each refusal a field error naming the field."""

from __future__ import annotations

import pytest

from engine.metadata.errors import MetadataError
from engine.storage.errors import ValidationFailed
from engine.storage.records import Context

SYSTEM = Context(system=True)


def _errors(exc) -> dict:
    return {e.field: (e.code, e.message) for e in exc.value.errors}


@pytest.mark.parametrize("typed, stored", [
    ("+86 138 0013 8000", "+8613800138000"),          # a + country code wins over the region
    ("(201) 555-0123", "+12015550123"),                # national, read in the field's region (US)
    ("201.555.0123 ext. 45", "+12015550123 ext. 45"),  # the extension is kept
    ("  +44 7400 123456 ", "+447400123456"),
])
def test_phones_are_stored_in_e164(crm, typed, stored):
    lead = crm.records.create("lead", {"last_name": "Li", "company": "Acme", "phone": typed}, context=SYSTEM)
    assert crm.records.get("lead", lead["id"])["phone"] == stored


@pytest.mark.parametrize("typed, message", [
    ("not a number", "is not a phone number"),
    ("12345", "is not a valid phone number for US"),
    ("+86 123", "is not a valid phone number"),
])
def test_a_phone_that_cannot_be_parsed_is_a_field_error_and_nothing_is_written(crm, typed, message):
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("contact", {"last_name": "Li", "mobile": typed}, context=SYSTEM)
    code, text = _errors(info)["mobile"]
    assert code == "format" and text.startswith(message), text
    assert crm.records.query("contact", limit=5) == []


def test_bulk_writes_normalise_the_same_way(crm):
    result = crm.records.bulk("account", [{"name": "A", "phone": "201 555 0100"}, {"name": "B", "phone": "nope"}],
                              mode="create", atomic=False, context=SYSTEM)
    assert [i["status"] for i in result.items] == ["created", "error"]
    assert crm.records.get("account", result.items[0]["id"])["phone"] == "+12015550100"


@pytest.mark.parametrize("typed, stored", [
    (" Ann.Lee@Example.COM ", "ann.lee@example.com"),
    ("用户@例子.广告", "用户@例子.广告"),                    # internationalised addresses are addresses
    ("x+tag@sub.example.co.uk", "x+tag@sub.example.co.uk"),
])
def test_emails_are_validated_and_lower_cased(crm, typed, stored):
    lead = crm.records.create("lead", {"last_name": "Li", "company": "Acme", "email": typed}, context=SYSTEM)
    assert crm.records.get("lead", lead["id"])["email"] == stored


@pytest.mark.parametrize("typed, reason", [
    ("ann..lee@example.com", "two periods"), ("ann@localhost", "period"), ("ann@example.test", "special-use"),
    ("@example.com", "There must be something before the @-sign"), ("ann@exa mple.com", "invalid characters"),
])
def test_a_bad_email_is_refused_with_the_libraries_reason(crm, typed, reason):
    with pytest.raises(ValidationFailed) as info:
        crm.records.create("lead", {"last_name": "Li", "company": "Acme", "email": typed}, context=SYSTEM)
    code, text = _errors(info)["email"]
    assert code == "format" and text.startswith("is not an e-mail address") and reason in text, text


def test_urls_get_a_scheme_and_text_is_trimmed(crm):
    acc = crm.records.create("account", {"name": "  Acme Ltd \t", "website": " www.acme.example/about "},
                             context=SYSTEM)
    got = crm.records.get("account", acc["id"])
    assert got["name"] == "Acme Ltd" and got["website"] == "https://www.acme.example/about"
    crm.records.update("account", acc["id"], {"website": "http://old.example"}, context=SYSTEM)
    assert crm.records.get("account", acc["id"])["website"] == "http://old.example"   # a scheme given is kept
    with pytest.raises(ValidationFailed) as info:
        crm.records.update("account", acc["id"], {"website": "ftp://files.example"}, context=SYSTEM)
    assert _errors(info)["website"][0] == "format"


def test_the_api_answers_422_naming_the_phone_field(api):
    r = api.post("/api/v1/lead", json={"last_name": "Li", "company": "Acme", "phone": "call me"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json["errors"]] == ["phone"]
    ok = api.post("/api/v1/lead", json={"last_name": "Li", "company": "Acme", "phone": "+86 10 1234 5678"})
    assert ok.status_code == 201 and ok.json["phone"] == "+861012345678"


@pytest.mark.parametrize("props, problem", [
    ("normalise: e164, region: XX", "region 'XX' is not a region"),
    ("region: CN", "region applies to a phone field that declares normalise: e164"),
    ("normalise: e123", "normalise"),
])
def test_bad_phone_declarations_name_the_file_and_line(make_runtime, write_tree, config_root, props, problem):
    write_tree(config_root.name, {"base/person.yaml": f"""
        entity: person
        label: {{en: Person}}
        fields:
          name: {{type: text, required: true}}
          phone: {{type: phone, {props}}}
        """})
    with pytest.raises(MetadataError) as info:
        make_runtime(config_root=config_root)
    assert problem in str(info.value) and "person.yaml" in str(info.value)


def test_a_phone_without_normalise_stays_free_form(make_runtime, write_tree, config_root):
    write_tree(config_root.name, {"base/person.yaml": """
        entity: person
        label: {en: Person}
        fields:
          name: {type: text, required: true}
          phone: {type: phone}
          cn: {type: phone, normalise: e164, region: CN}
        """})
    rt = make_runtime(config_root=config_root)
    made = rt.records.create("person", {"name": "Wang", "phone": "(555) 0100-200", "cn": "138 0013 8000"}, context=SYSTEM)
    got = rt.records.get("person", made["id"])
    assert got["phone"] == "(555) 0100-200" and got["cn"] == "+8613800138000"
