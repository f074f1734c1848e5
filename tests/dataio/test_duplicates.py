"""Duplicate rules below the web: the normalisers, the documents and their problems at file:line, the
key table kept by writes, ``check_many`` (exact, fuzzy, all, any, batched: statements counted), the
scan's groups and the scope of who sees what."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import sqlalchemy as sa

from engine import matching
from engine.dataio.duplicates.check import check_many
from engine.dataio.duplicates.keys import backfill
from engine.dataio.duplicates.plugin import service_of
from engine.dataio.duplicates.scan import duplicate_groups, with_titles
from engine.metadata import MetadataError
from engine.security.audit import query_audit
from engine.security.permissions import access_for
from engine.storage.errors import DuplicateFound
from engine.storage.records import Context

SYSTEM = Context(system=True, automations=False)

RULES = """
duplicate_rule: acct_fuzzy
of: account
label: {en: Similar name, zh: 相似名称}
conditions:
  - {field: name, by: company_name, fuzzy: 0.88}
action: warn
---
duplicate_rule: lead_block
of: lead
label: {en: Same e-mail and company, zh: 相同邮箱和公司}
match: all
conditions:
  - {field: email, by: email}
  - {field: company, by: company_name, fuzzy: 0.85}
action: block
"""


# -- normalisers ----------------------------------------------------------------------------------
def test_each_normaliser():
    assert matching.normalise("email", "  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert matching.normalise("email", "ｊａｎｅ@example.com") == "jane@example.com"          # full width folded
    assert matching.normalise("company_name", "ACME, Inc.") == matching.normalise("company_name", "acme") == "acme"
    assert matching.normalise("company_name", "华为技术有限公司") == "华为技术"
    assert matching.normalise("company_name", "ＡＣＭＥ　ＧｍｂＨ") == "acme"                  # width-folded CJK spaces
    assert matching.normalise("company_name", "深圳市腾讯计算机系统股份有限公司") == "深圳市腾讯计算机系统"
    assert matching.normalise("name", "Doe, Jane") == matching.normalise("name", "jane  DOE") == "doe jane"
    assert matching.normalise("text", "  Ｈｅｌｌｏ   World ") == "hello world"


def test_phone_in_e164_with_a_default_region():
    cn = "+8613800138000"
    assert matching.normalise("phone", "138 0013 8000", "CN") == cn
    assert matching.normalise("phone", "+86 138-0013-8000", "CN") == cn
    assert matching.normalise("phone", "0086 13800138000", "CN") == cn
    assert matching.normalise("phone", "＋８６ １３８００１３８０００") == cn                    # full-width digits
    assert matching.normalise("phone", "(415) 555-0100", "US") == "+14155550100"
    assert matching.normalise("phone", "(415) 555-0100", "CN") != "+14155550100"
    assert matching.normalise("phone", "ext. 12") == "12"                                  # unreadable: its digits
    assert matching.normalise("phone", "") == ""


PHONES = {"CN": ["138 0013 8000", "0086 138 0013 8000", "010-6552 9988", "(010) 65529988", "+86 10 6552 9988",
                 "17951 13800138000", "400-820-8820", "95588"],
          "US": ["(415) 555-0100", "1 415 555 0100", "+1-415-555-0100", "011 44 20 7946 0000", "415.555.0100"],
          "DE": ["030 123456", "+49 (0)30 123456", "0049 30 123456"], "GB": ["+44 (0)20 7946 0000", "07700 900123"],
          "IT": ["06 1234 5678", "+39 06 1234 5678"], "BR": ["(11) 91234-5678"], "AR": ["011 15-1234-5678"],
          "JP": ["090-1234-5678"]}


@pytest.mark.parametrize("region", sorted(PHONES))
def test_the_fast_path_of_e164_agrees_with_phonenumbers(region):
    import phonenumbers

    for raw in PHONES[region]:
        parsed = phonenumbers.parse(raw, region)
        assert matching.e164(raw, region) == phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), raw


@pytest.mark.parametrize("region", sorted(PHONES))
def test_one_e164_function_strict_for_fields_lenient_for_matching(region, monkeypatch):
    """``engine.fields.text.e164`` is the one E.164 function: a phone field reads strictly (valid numbers,
    errors), duplicate rules leniently through ``engine.matching.e164`` (digits when unreadable); both
    agree on every valid number, whether the fast path or ``parse`` reads it."""
    from engine.fields import text as fields_text
    from engine.fields.base import FieldValueError

    valid = 0
    for raw in PHONES[region]:
        try:
            strict = fields_text.e164(raw, region)
        except FieldValueError:   # a short code, a number of no plan: the field refuses it
            continue
        valid += 1
        assert matching.e164(raw, region) == fields_text.e164(raw, region, strict=False) == strict, raw
    assert valid
    assert matching.e164("call me", region) == "" and matching.e164("ext. 12") == "12"   # unreadable: its digits
    with pytest.raises(FieldValueError):
        fields_text.e164("12", region)
    seen = []
    monkeypatch.setattr(fields_text, "fast_e164", lambda raw, reg: seen.append(raw))   # matching goes through it
    import engine.matching as m

    monkeypatch.setattr(m, "fields_e164", fields_text.e164)
    matching.e164("+86 138 0013 8000", region)
    assert seen == ["+86 138 0013 8000"]


def test_fuzzy_scores_and_block_keys():
    assert matching.fuzzy("acme trading", "acme trading") == 1.0
    assert 0.9 < matching.fuzzy("acme trading", "acme tradng") < 1.0
    assert matching.fuzzy("acme trading", "globex") < 0.5
    assert matching.fuzzy("doe jane", "jane doe") == 1.0                                   # word order
    assert matching.block_keys("acme trading") == ["<acme", ">ding"]
    assert matching.block_keys("华为技术研究") == ["<华为", ">研究"]
    assert matching.block_keys("ibm") == ["=ibm"]


# -- documents -----------------------------------------------------------------------------------
def test_problems_of_a_rule_are_reported_at_their_line(make_runtime, write_tree):
    site = write_tree("site", {"bad.yaml": """
        duplicate_rule: bad
        of: account
        conditions:
          - {field: nope, by: text}
          - {field: annual_revenue, by: text}
          - {field: tax_id, by: text}
          - {field: email, by: email, fuzzy: 0.9}
        region: XX
        """})
    with pytest.raises(MetadataError) as caught:
        make_runtime(site_dir=site, migrate=False)
    text = str(caught.value)
    assert "bad.yaml:" in text
    assert "account has no stored field 'nope'" in text
    assert "duplicate rules compare text fields" in text
    assert "tax_id is encrypted" in text
    assert "email values are compared exactly" in text
    assert "'XX' is no region" in text


def test_schema_refuses_an_unknown_action(make_runtime, write_tree):
    site = write_tree("site", {"bad.yaml": """
        duplicate_rule: bad
        of: account
        conditions: [{field: name}]
        action: merge
        """})
    with pytest.raises(MetadataError, match="merge"):
        make_runtime(site_dir=site, migrate=False)


# -- keys, checks, scan --------------------------------------------------------------------------
@pytest.fixture
def rt(make_runtime, write_tree):
    return make_runtime(site_dir=write_tree("site", {"dups.yaml": RULES}))


def _keys(rt, entity: str, record_id: int) -> list[tuple[str, str]]:
    t = service_of(rt).keys
    with rt.records.db.read() as conn:
        return sorted(conn.execute(sa.select(t.c.rule, t.c.key).where(t.c.entity == entity, t.c.record_id == record_id)).all())


def test_writes_keep_the_key_table(rt):
    a = rt.records.create("account", {"name": "ACME Trading Ltd"})
    assert ("acct_fuzzy", "<acme") in _keys(rt, "account", a["id"])
    rt.records.update("account", a["id"], {"name": "Acme Trading Inc."})     # the same normalised: no change
    assert ("acct_fuzzy", "<acme") in _keys(rt, "account", a["id"])
    rt.records.update("account", a["id"], {"name": "Globex Industries"})
    assert ("acct_fuzzy", "<glob") in _keys(rt, "account", a["id"]) and ("acct_fuzzy", "<acme") not in _keys(rt, "account", a["id"])
    rt.records.delete("account", a["id"])
    assert _keys(rt, "account", a["id"]) == []


def test_exact_and_fuzzy_all_conditions(rt):
    lead = rt.records.create("lead", {"last_name": "Doe", "company": "Acme Trading Ltd", "email": "JD@acme.com"}, context=SYSTEM)
    found = check_many(rt, "lead", [
        {"email": "jd@ACME.com", "company": "ACME Trading"},        # both hold: a match
        {"email": "jd@acme.com", "company": "Acme Tradng Co"},      # fuzzy company holds
        {"email": "jd@acme.com", "company": "Globex"},              # e-mail alone: all needs both
        {"email": "other@acme.com", "company": "Acme Trading"},     # company alone
    ], within=False, rules=[service_of(rt).rules["lead_block"]])
    assert [[c.id for c in m.candidates] for m in found] == [[lead["id"]], [lead["id"]], [], []]
    assert found[0].action == "block" and found[0].candidates[0].score == 1.0
    assert 0.85 <= found[1].candidates[0].score < 1.0
    assert found[0].candidates[0].title == "Doe" and found[0].candidates[0].rule == "lead_block"


def test_any_conditions_match_on_either_field(make_runtime, write_tree):
    rt = make_runtime(site_dir=write_tree("site", {"any.yaml": """
        duplicate_rule: phones
        of: contact
        match: any
        conditions: [{field: mobile, by: phone}, {field: phone, by: phone}]
        action: warn
        region: CN
        """}))
    c = rt.records.create("contact", {"last_name": "Li", "mobile": "+86 138 0013 8000", "phone": "+86 10 6552 9988"}, context=SYSTEM)
    found = check_many(rt, "contact", [{"mobile": "13800138000"}, {"phone": "(010) 65529988"},
                                       {"mobile": "13900139000", "phone": "010 1111 2222"}], within=False)
    assert [[x.id for x in m.candidates] for m in found] == [[c["id"]], [c["id"]], []]
    assert {r.name for r in service_of(rt).rules_of("contact")} >= {"phones", "contact_phone"}


def _counted(rt, call):
    """(what ``call()`` returns, the SQL statements it ran)."""
    statements = []

    def note(conn, cursor, statement, *rest):
        statements.append(statement)
    sa.event.listen(rt.records.db.engine, "before_cursor_execute", note)
    try:
        return call(), statements
    finally:
        sa.event.remove(rt.records.db.engine, "before_cursor_execute", note)


def test_check_many_costs_a_few_statements_per_chunk(rt):
    rows = [{"name": f"{uuid.uuid4().hex[:12]} Holdings"} for i in range(2000)]
    rt.records.bulk("account", rows[:1000], mode="create", context=SYSTEM)
    small, n_small = _counted(rt, lambda: check_many(rt, "account", rows[:2]))
    big, n_big = _counted(rt, lambda: check_many(rt, "account", rows))
    assert all(m.candidates for m in big[:1000]) and all(m.candidates[0].id for m in big[:1000])
    assert len(small) == 2
    assert len(n_small) <= 3 and len(n_big) <= len(n_small) + 1, (n_small, n_big)   # not one per row
    # rows of the batch are compared with the earlier ones too (two lines of one import file)
    twice = check_many(rt, "account", [{"name": "Initech LLC"}, {"name": "Initech"}])
    assert twice[1].candidates[0].row == 0 and twice[1].candidates[0].id is None


def test_bulk_writes_keys_in_a_few_statements(rt):
    _, statements = _counted(rt, lambda: rt.records.bulk("account", [{"name": f"Firm {i}"} for i in range(500)],
                                                         mode="create", context=SYSTEM))
    keyed = [s for s in statements if "_crm_duplicate_key" in s]
    assert len(keyed) <= 2, keyed     # one INSERT of every key (executemany), not one per record
    assert len(_keys(rt, "account", 1)) == 2


def test_a_block_rule_refuses_a_user_write_and_names_only_what_the_user_may_read(rt):
    rep = rt.records.create("user", {"name": "Rep", "email": "rep@example.com", "role": "sales", "team": "north"}, context=SYSTEM)
    other = rt.records.create("user", {"name": "Far", "email": "far@example.com", "role": "sales", "team": "south"}, context=SYSTEM)
    mine = rt.records.create("lead", {"last_name": "Mine", "company": "Acme", "email": "a@acme.com", "owner_id": rep["id"]}, context=SYSTEM)
    rt.records.create("lead", {"last_name": "Theirs", "company": "Acme Ltd", "email": "a@acme.com", "owner_id": other["id"]}, context=SYSTEM)
    access = access_for(rt.records, rep["id"], "sales")
    ctx = Context(user_id=rep["id"], access=access)
    with pytest.raises(DuplicateFound) as caught:
        rt.records.create("lead", {"last_name": "New", "company": "ACME", "email": "A@acme.com"}, context=ctx)
    exc = caught.value
    assert exc.action == "block" and not exc.overridable
    assert [c["id"] for c in exc.candidates] == [mine["id"]] and exc.hidden == 1
    assert "Theirs" not in str(exc)
    with pytest.raises(DuplicateFound):   # a block holds whatever the writer says
        rt.records.create("lead", {"last_name": "New", "company": "ACME", "email": "a@acme.com"},
                          context=Context(user_id=rep["id"], access=access, duplicates="allow"))
    assert len(rt.records.query("lead", limit=10)) == 2
    # an update that leaves the compared values alone is not checked again
    rt.records.update("lead", mine["id"], {"job_title": "CEO"}, context=ctx)


def test_a_bulk_write_checks_each_chunk_at_once_with_the_outcome_of_single_writes(rt, monkeypatch):
    """``records.bulk`` by a user: one ``check_many`` per chunk (not one per record), and per record the
    same outcome a single write gets (blocked, warned, allowed and audited, updates checked on the
    rules whose values change, the chunk's own rows not compared with each other)."""
    import engine.dataio.duplicates.writes as writes
    from engine.storage import bulk

    rep = rt.records.create("user", {"name": "Rep", "email": "rep@example.com", "role": "sales", "team": "north"}, context=SYSTEM)
    old = rt.records.create("lead", {"last_name": "Old", "company": "Acme", "email": "a@acme.com", "owner_id": rep["id"],
                                     "phone": "+1 201 555 0100"}, context=SYSTEM)
    ctx = Context(user_id=rep["id"], access=access_for(rt.records, rep["id"], "sales"))
    calls = []
    real = writes.check_many
    monkeypatch.setattr(writes, "check_many", lambda *a, **k: calls.append(len(a[2])) or real(*a, **k))
    monkeypatch.setattr(bulk, "CHUNK", 3)
    rows = [{"last_name": "A", "company": "ACME Ltd", "email": "A@acme.com"},      # blocked: the stored lead
            {"last_name": "B", "company": "Other", "email": "b@other.com"},
            {"last_name": "C", "company": "Other", "email": "b@other.com"},         # same as row 1: one chunk, not checked together
            {"last_name": "D", "company": "Acme", "email": "a@acme.com"},           # blocked too (second chunk)
            {"last_name": "E", "company": "Other", "email": "B@other.com"}]         # sees rows 1 and 2, written by chunk 1
    result = rt.records.bulk("lead", rows, mode="create", atomic=False, context=ctx)
    assert calls == [3, 2], calls
    assert [i["status"] for i in result.items] == ["error", "created", "created", "error", "error"]
    assert [e["code"] for e in result.items[0]["errors"]] == ["duplicate"]
    single = []
    for row in rows:
        try:
            rt.records.create("lead", row, context=ctx)
        except DuplicateFound as exc:
            single.append(exc.errors[0].message)
    assert single[0] == result.items[0]["errors"][0]["message"]
    # warn rules (the same phone): refused, or with duplicates="allow" written and audited record by record
    calls.clear()
    phoned = [{"last_name": "P", "company": "Zed", "email": "p@zed.com", "phone": "+1 201 555 0100"},
              {"last_name": "Q", "company": "Why", "email": "q@why.com", "phone": "+1 201 555 0199"}]
    refused = rt.records.bulk("lead", phoned, mode="create", atomic=False, context=ctx)
    assert [i["status"] for i in refused.items] == ["error", "created"] and calls == [2]
    allowed = rt.records.bulk("lead", phoned[:1], mode="create", atomic=False, context=replace(ctx, duplicates="allow"))
    assert allowed.items[0]["status"] == "created"
    assert len(query_audit(rt.records, kind="duplicate_override")) == 1
    # updates: checked only when a compared value changes
    calls.clear()
    done = rt.records.bulk("lead", [{"id": old["id"], "job_title": "CEO"},
                                    {"id": refused.items[1]["id"], "phone": "(201) 555-0100"}],
                           mode="update", atomic=False, context=ctx)
    assert [i["status"] for i in done.items] == ["updated", "error"] and calls == [1]


def test_scan_groups_within_blocks_and_scope(rt):
    rep = rt.records.create("user", {"name": "Rep", "email": "rep@example.com", "role": "sales", "team": "north"}, context=SYSTEM)
    names = ["Acme Trading Ltd", "ACME Trading", "Acme Tradng Inc", "Globex", "Globex GmbH", "Initech", "Umbrella"]
    ids = [rt.records.create("account", {"name": n, "owner_id": rep["id"] if i != 2 else None}, context=SYSTEM)["id"]
           for i, n in enumerate(names)]
    groups = duplicate_groups(rt, "account", rule="acct_fuzzy")
    assert sorted(g.ids for g in groups) == [ids[0:3], ids[3:5]]
    acme = next(g for g in groups if ids[0] in g.ids)
    assert acme.rule == "acct_fuzzy" and 0.88 <= acme.score < 1.0
    assert next(g for g in groups if ids[3] in g.ids).score == 1.0
    with_titles(rt, "account", groups)
    assert acme.titles[ids[1]] == "ACME Trading"
    # a sales rep sees only the records in their scope: the third Acme is nobody's
    seen = duplicate_groups(rt, "account", access_for(rt.records, rep["id"], "sales"), rule="acct_fuzzy")
    assert sorted(g.ids for g in seen) == [ids[0:2], ids[3:5]]


def test_backfill_indexes_records_written_before_the_rules(make_runtime, write_tree):
    plain = make_runtime()
    for name in ("Acme Trading", "ACME Trading Ltd", "Other"):
        plain.records.create("lead", {"last_name": "X", "company": name, "email": f"{name[:4]}@x.com"}, context=SYSTEM)
    t = service_of(plain).keys
    with plain.records.db.write() as conn:
        conn.execute(t.delete())                   # as if the rules came after the records
    plain.close()
    rt = make_runtime(site_dir=write_tree("site", {"dups.yaml": RULES}))
    assert backfill(rt, service_of(rt), "lead") == 3
    assert backfill(rt, service_of(rt), "lead") == 0          # nothing left to do
    groups = duplicate_groups(rt, "lead", rule="lead_block")
    assert [g.ids for g in groups] == [[1, 2]]


def test_crm_duplicates_backfill_and_scan(crm, settings):
    from click.testing import CliRunner

    from engine.cli import main

    for i, email in enumerate(("a@x.com", "A@X.com ", "b@x.com")):
        crm.records.create("lead", {"last_name": f"L{i}", "company": "Co", "email": email}, context=SYSTEM)
    env = {"DATABASE_URL": settings.database_url, "CRM_PLUGIN_DIRS": ""}
    filled = CliRunner().invoke(main, ["duplicates", "backfill", "lead"], env=env)
    assert filled.exit_code == 0 and "lead: indexed 3 record(s)" in filled.output, filled.output
    scanned = CliRunner().invoke(main, ["duplicates", "scan", "lead"], env=env)
    assert scanned.exit_code == 0, scanned.output
    assert "lead_email" in scanned.output and "L0 (#1), L1 (#2)" in scanned.output and "1 group(s)" in scanned.output
    wrong = CliRunner().invoke(main, ["duplicates", "scan", "opportunity"], env=env)
    assert wrong.exit_code != 0 and "opportunity has no duplicate rules" in wrong.output


def test_the_scheduler_backfills_the_keys(crm):
    from engine.jobs import JobScheduler

    crm.records.create("lead", {"last_name": "A", "company": "A", "email": "a@x.com"}, context=SYSTEM)
    job = JobScheduler.from_runtime(crm).job("duplicates.backfill")
    assert job is not None
    assert job.run(crm, None) == {"duplicate_keys_indexed": 1}     # the first pass: every record
    assert job.run(crm, None) == {"duplicate_keys_indexed": 0}     # then only what is new
