"""Declarative changes become safe migrations, on a populated table, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import main
from engine.storage.migrate import MigrationRefused, plan_migration

ROWS = 100_000

V1 = """
entity: deal
fields:
  name:  {type: text, max_length: 80, required: true}
  amount: {type: currency}
  stage: {type: picklist, options: [open, won, lost]}
  note:  {type: text, max_length: 40}
"""


def write(config_root: Path, text: str) -> None:
    (config_root / "base" / "deal.yaml").write_text(text.lstrip(), encoding="utf-8")


def fingerprint(rt, column_of_note: str = "note") -> tuple:
    t = sa.table("deal", sa.column("id"), sa.column("name"), sa.column("amount"), sa.column(column_of_note))
    with rt.db.read() as conn:
        return tuple(conn.execute(sa.select(
            sa.func.count(), sa.func.sum(t.c.amount), sa.func.sum(sa.func.length(t.c[column_of_note])),
            sa.func.max(t.c[column_of_note]), sa.func.sum(sa.func.length(t.c.name)))).one())


@pytest.fixture
def populated(config_root, make_runtime):
    write(config_root, V1)
    rt = make_runtime(config_root=config_root)
    table = rt.records.table("deal")
    rows = [{"name": f"Deal {i}", "amount": i % 1000, "stage": ("open", "won", "lost")[i % 3],
             "note": f"note {i}", "created_at": sa.func.now()} for i in range(0)]
    del rows, table
    result = rt.records.bulk("deal", [{"name": f"Deal {i}", "amount": f"{i % 1000}.25",
                                        "stage": ("open", "won", "lost")[i % 3], "note": f"note {i}"}
                                       for i in range(ROWS)])
    assert result.counts() == {"created": ROWS}
    return rt


def backups(rt) -> list[Path]:
    return sorted(Path(rt.settings.backup_dir).glob("*"))


def test_add_field_index_and_rename_on_a_populated_table_keeps_every_value(populated, config_root, make_runtime):
    before = fingerprint(populated)
    write(config_root, V1.replace("  note:  {type: text, max_length: 40}",
                                  "  remark: {type: text, max_length: 60, renamed_from: note}\n"
                                  "  priority: {type: integer, indexed: true}")
          .replace("max_length: 80", "max_length: 200") + "indexes:\n  - {fields: [stage, amount]}\n")
    rt = make_runtime(config_root=config_root, migrate=False)
    plan = rt.plan()
    ops = {(s.op, s.column or s.detail) for s in plan.steps}
    assert ("rename_column", "remark") in ops
    assert ("add_column", "priority") in ops
    assert ("alter_type", "name") in ops and ("alter_type", "remark") in ops   # both widened
    assert ("create_index", "ix_deal_stage_amount") in ops and ("create_index", "ix_deal_priority") in ops
    assert not plan.data_loss and not plan.blocked
    count = len(backups(rt))
    applied = rt.migrate()
    assert applied.backup is not None and applied.backup.exists() and len(backups(rt)) == count + 1
    assert fingerprint(rt, "remark") == before
    cols = {c["name"] for c in sa.inspect(rt.db.engine).get_columns("deal")}
    assert {"remark", "priority"} <= cols and "note" not in cols
    indexes = {ix["name"] for ix in sa.inspect(rt.db.engine).get_indexes("deal")}
    assert {"ix_deal_stage_amount", "ix_deal_priority"} <= indexes
    record = rt.records.get("deal", 7)
    assert record["remark"] == "note 6" and str(record["amount"]) == "6.25"
    assert rt.plan().steps == []   # applied: nothing left to do


def test_dropping_a_populated_column_is_refused_without_the_flag(populated, config_root, make_runtime):
    before = fingerprint(populated)
    write(config_root, V1.replace("  note:  {type: text, max_length: 40}\n", ""))
    rt = make_runtime(config_root=config_root, migrate=False)
    with pytest.raises(MigrationRefused) as info:
        rt.migrate()
    assert "deal.note" in str(info.value) and f"holds {ROWS} values" in str(info.value)
    assert "note" in {c["name"] for c in sa.inspect(rt.db.engine).get_columns("deal")}
    assert fingerprint(rt) == before
    count = len(backups(rt))
    applied = rt.migrate(allow_data_loss=True)
    assert applied.backup.exists() and len(backups(rt)) == count + 1
    assert "note" not in {c["name"] for c in sa.inspect(rt.db.engine).get_columns("deal")}
    assert rt.records.get("deal", 1)["name"] == "Deal 0"


def test_narrowing_a_type_with_values_is_refused(populated, config_root, make_runtime):
    write(config_root, V1.replace("max_length: 80", "max_length: 20"))
    rt = make_runtime(config_root=config_root, migrate=False)
    plan = rt.plan()
    assert [s.op for s in plan.data_loss] == ["alter_type"]
    with pytest.raises(MigrationRefused):
        rt.migrate()


def test_dropping_an_empty_column_or_table_needs_no_flag(config_root, make_runtime):
    write(config_root, V1)
    (config_root / "base" / "tmp.yaml").write_text("entity: scratch\nfields:\n  x: {type: text}\n")
    make_runtime(config_root=config_root)
    write(config_root, V1.replace("  note:  {type: text, max_length: 40}\n", ""))
    (config_root / "base" / "tmp.yaml").unlink()
    rt = make_runtime(config_root=config_root, migrate=False)
    assert {(s.op, s.loses_data) for s in rt.plan().steps} == {("drop_column", False), ("drop_table", False)}
    rt.migrate()
    assert not sa.inspect(rt.db.engine).has_table("scratch")


def test_unique_index_over_duplicates_is_blocked_even_with_the_flag(config_root, make_runtime):
    write(config_root, V1)
    rt = make_runtime(config_root=config_root)
    rt.records.bulk("deal", [{"name": "same"}, {"name": "same"}])
    write(config_root, V1.replace("required: true}", "required: true, unique: true}"))
    rt2 = make_runtime(config_root=config_root, migrate=False)
    with pytest.raises(MigrationRefused) as info:
        rt2.migrate(allow_data_loss=True)
    assert "occur more than once" in str(info.value)


def test_each_apply_is_recorded_with_version_digest_time_and_backup(config_root, make_runtime):
    write(config_root, V1)
    rt = make_runtime(config_root=config_root)
    write(config_root, V1 + "  extra: {type: boolean}\n")
    rt2 = make_runtime(config_root=config_root)
    with rt2.db.read() as conn:
        rows = conn.execute(sa.text("SELECT version, digest, applied_at, backup FROM _crm_model ORDER BY version")).all()
    assert [r.version for r in rows] == [1, 2]
    assert rows[0].digest == rt.model.digest and rows[1].digest == rt2.model.digest
    assert all(r.applied_at is not None and r.backup and Path(r.backup).exists() for r in rows)


def test_cli_dry_run_prints_the_plan_and_refusal_exits_1(config_root, make_runtime, settings, monkeypatch):
    write(config_root, V1)
    rt = make_runtime(config_root=config_root)
    rt.records.create("deal", {"name": "x", "note": "keep me"})
    write(config_root, V1.replace("  note:  {type: text, max_length: 40}\n", ""))
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRM_CONFIG_ROOT", str(config_root))
    monkeypatch.setenv("CRM_BACKUP_DIR", str(settings.backup_dir))
    monkeypatch.setenv("CRM_PLUGIN_DIRS", "")
    runner = CliRunner()
    dry = runner.invoke(main, ["migrate", "--dry-run"])
    assert dry.exit_code == 1 and "drop_column" in dry.output and "LOSES DATA" in dry.output
    assert runner.invoke(main, ["migrate", "--dry-run", "--allow-data-loss"]).exit_code == 0
    refused = runner.invoke(main, ["migrate"])
    assert refused.exit_code == 1 and "--allow-data-loss" in refused.output
    assert plan_migration(rt.db, make_runtime(config_root=config_root, migrate=False).model).data_loss


def test_decimal_scale_and_type_changes_convert_every_value_exactly(config_root, make_runtime):
    write(config_root, V1 + "  qty: {type: integer}\n  label: {type: text}\n")
    rt = make_runtime(config_root=config_root)
    rt.records.bulk("deal", [{"name": "a", "amount": "1.50", "qty": 5, "label": "12.345"},
                             {"name": "b", "amount": "-2.25", "qty": -3, "label": "7"}])
    write(config_root, V1.replace("amount: {type: currency}", "amount: {type: currency, scale: 4}")
          + "  qty: {type: number, precision: 18, scale: 2}\n  label: {type: number, scale: 2}\n")
    rt2 = make_runtime(config_root=config_root, migrate=False)
    assert {s.column for s in rt2.plan().data_loss} >= {"amount", "qty", "label"}
    rt2.migrate(allow_data_loss=True)
    got = [(str(r["amount"]), str(r["qty"]), str(r["label"])) for r in rt2.records.query("deal")]
    assert got == [("1.5000", "5.00", "12.35"), ("-2.2500", "-3.00", "7.00")]
    write(config_root, V1 + "  qty: {type: text}\n  label: {type: integer}\n")
    rt3 = make_runtime(config_root=config_root, migrate=False)
    [label] = [s for s in rt3.plan().steps if s.column == "label"]
    assert "1 cannot be converted" in label.detail and "'12.35'" in label.detail   # no whole number
    rt3.migrate(allow_data_loss=True)
    got = [(r["qty"], r["label"]) for r in rt3.records.query("deal")]
    assert got == [("5.00", None), ("-3.00", 7)]


def test_text_becoming_a_number_or_date_converts_or_reports_each_value(config_root, make_runtime):
    write(config_root, V1 + "  size: {type: text}\n  when: {type: text}\n  flag: {type: boolean}\n")
    rt = make_runtime(config_root=config_root)
    rt.records.bulk("deal", [{"name": "a", "size": "12", "when": "2026-01-31", "flag": True},
                             {"name": "b", "size": "abc", "when": "soon", "flag": False}])
    write(config_root, V1 + "  size: {type: integer}\n  when: {type: date}\n  flag: {type: text}\n")
    rt2 = make_runtime(config_root=config_root, migrate=False)
    details = {s.column: s.detail for s in rt2.plan().data_loss}
    assert "'abc'" in details["size"] and "'soon'" in details["when"] and "cannot" not in details["flag"]
    rt2.migrate(allow_data_loss=True)
    from datetime import date
    got = [(r["size"], r["when"], r["flag"]) for r in rt2.records.query("deal")]
    assert got == [(12, date(2026, 1, 31), "true"), (None, None, "false")]


def test_pointing_a_lookup_at_another_entity_replaces_the_column(config_root, make_runtime):
    (config_root / "base" / "org.yaml").write_text("entity: org\nfields:\n  name: {type: text}\n")
    (config_root / "base" / "team.yaml").write_text("entity: team\nfields:\n  name: {type: text}\n")
    write(config_root, V1 + "  owner_org: {type: lookup, to: org}\n")
    rt = make_runtime(config_root=config_root)
    org = rt.records.create("org", {"name": "o"})
    rt.records.create("deal", {"name": "d", "owner_org": org["id"]})
    write(config_root, V1 + "  owner_org: {type: lookup, to: team}\n")
    rt2 = make_runtime(config_root=config_root, migrate=False)
    [step] = rt2.plan().steps
    assert step.op == "replace_column" and step.loses_data
    rt2.migrate(allow_data_loss=True)
    team = rt2.records.create("team", {"name": "t"})
    assert rt2.records.query("deal")[0]["owner_org"] is None
    rt2.records.update("deal", 1, {"owner_org": team["id"]})
