"""Faults of backups and restores: the way back from a migration that added an entity, a backup
killed midway (fail points: the process dies as after ``kill -9``), damaged or foreign files given to
``crm restore``, and credentials revoked after the backup was taken. Every ``crm`` failure must be one
clear line and a non-zero exit, never a traceback, and a refused restore must change nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import main
from engine.failpoints import KILLED

DEAL = """
entity: deal
fields:
  name:   {type: text, max_length: 80, required: true}
  amount: {type: currency}
"""
TICKET = """
entity: ticket
fields:
  subject:  {type: text, max_length: 80, required: true}
  assignee: {type: lookup, to: user}
  deal:     {type: lookup, to: deal}
"""


@pytest.fixture
def env(settings, config_root, monkeypatch) -> dict:
    """The environment of a ``crm`` command on this test's database and config root."""
    values = {"DATABASE_URL": settings.database_url, "CRM_CONFIG_ROOT": str(config_root),
              "CRM_BACKUP_DIR": str(settings.backup_dir), "CRM_PLUGIN_DIRS": "", "CRM_FAILPOINTS": ""}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture
def base(config_root, make_runtime, env):
    """The model with `deal`, migrated, with a user and a few deals."""
    (config_root / "base" / "deal.yaml").write_text(DEAL.lstrip(), encoding="utf-8")
    rt = make_runtime(config_root=config_root)
    rt.records.create("user", {"name": "Ann", "email": "ann@example.com"})
    rt.records.bulk("deal", [{"name": f"Deal {i}", "amount": f"{i}.50"} for i in range(20)])
    return rt


def crm(*args: str):
    """Run ``crm ARGS`` in process; a failure must be a message and an exit code, never an exception."""
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def state(rt) -> dict:
    """Every table of the database with its rows (the restore's yardstick)."""
    out = {}
    with rt.db.read() as conn:
        inspector = sa.inspect(conn)
        for name in sorted(inspector.get_table_names()):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            out[name] = sorted(tuple(str(v) for v in row) for row in conn.execute(sa.select(table)))
    return out


def files(folder: Path) -> list[str]:
    """The files named like backups (hidden partial files are not)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_restoring_the_backup_of_a_migration_that_added_an_entity_brings_the_database_back(base, config_root, env,
                                                                                           make_runtime):
    before = state(base)
    (config_root / "base" / "ticket.yaml").write_text(TICKET.lstrip(), encoding="utf-8")
    migrated = crm("migrate")
    assert migrated.exit_code == 0, migrated.output
    with base.db.read() as conn:
        saved = conn.execute(sa.text("SELECT backup FROM _crm_model ORDER BY version DESC LIMIT 1")).scalar()
        assert sa.inspect(conn).has_table("ticket")
    assert saved and "before-v2" in saved
    user = base.records.query("user", limit=1)[0]
    make_runtime(config_root=config_root, migrate=False).records.create("ticket", {"subject": "after the migration", "assignee": user["id"], "deal": 1})

    restored = crm("restore", saved, "--yes")
    assert restored.exit_code == 0, restored.output
    assert "Restored" in restored.output
    assert state(base) == before                                     # exactly as before the migration
    again = crm("migrate")                                            # and the way forward still works
    assert again.exit_code == 0, again.output
    with base.db.read() as conn:
        assert sa.inspect(conn).has_table("ticket")
        assert conn.execute(sa.text("SELECT COUNT(*) FROM deal")).scalar() == 20


@pytest.mark.parametrize("point", ["backup:copied", "backup:before-rename"])
def test_a_migration_killed_during_its_backup_leaves_no_backup_and_its_leftover_is_refused(base, config_root, env,
                                                                                           settings, point):
    before = state(base)
    folder = Path(settings.backup_dir)
    complete = files(folder)
    (config_root / "base" / "ticket.yaml").write_text(TICKET.lstrip(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "migrate"], env={**env, "CRM_FAILPOINTS": point},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == KILLED, done.stderr
    assert files(folder) == complete                                  # nothing named like a backup
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0

    refused = crm("restore", str(leftovers[0]), "--yes")
    assert refused.exit_code == 1 and "unfinished backup" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    if point == "backup:copied":
        # Copied but not checked and given its manifest: under a backup's name (what the engine used
        # to leave behind) it is refused too.
        disguised = folder / leftovers[0].name[1:].rsplit(".", 2)[0]
        leftovers[0].rename(disguised)
        refused = crm("restore", str(disguised), "--yes")
        assert refused.exit_code == 1 and "Not restored, the database was not changed" in refused.output
        assert "no backup manifest" in refused.output
        disguised.rename(leftovers[0])
    assert state(base) == before

    assert crm("backup").exit_code == 0                               # the next backup removes the leftover
    assert not leftovers[0].exists()
    assert crm("migrate").exit_code == 0


def test_a_truncated_or_empty_backup_is_refused_and_nothing_is_replaced(base, env, settings):
    made = crm("backup")
    assert made.exit_code == 0, made.output
    good = Path(made.output.strip())
    before = state(base)
    data = good.read_bytes()
    empty = good.with_name(good.name.replace("manual", "empty"))
    empty.write_bytes(b"")
    truncated = good.with_name(good.name.replace("manual", "truncated"))
    truncated.write_bytes(data[: len(data) // 2])
    flipped = good.with_name(good.name.replace("manual", "flipped"))
    flipped.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    for bad in (empty, truncated, flipped):
        refused = crm("restore", str(bad), "--yes")
        assert refused.exit_code == 1, (bad.name, refused.output)
        assert refused.output.startswith("Not restored, the database was not changed") and bad.name in refused.output
        assert state(base) == before
    if base.db.is_sqlite:                      # a SQLite file with no tables (the old leftover) is no backup
        import sqlite3

        blank = good.with_name(good.name.replace("manual", "blank"))
        sqlite3.connect(blank).close()
        refused = crm("restore", str(blank), "--yes")
        assert refused.exit_code == 1 and "no backup manifest" in refused.output
        assert state(base) == before
    assert crm("restore", str(good), "--yes").exit_code == 0
    assert state(base) == before


def test_a_backup_that_lacks_a_table_of_its_model_is_refused(base, env):
    """Even with a manifest that agrees with the file, a backup without one of its model's tables is no
    backup of that model."""
    import json
    import sqlite3

    from engine.storage.backup import MANIFEST_TABLE, MARK

    made = crm("backup")
    good = Path(made.output.strip())
    before = state(base)
    bad = good.with_name(good.name.replace("manual", "lacking"))
    if base.db.is_sqlite:
        bad.write_bytes(good.read_bytes())
        conn = sqlite3.connect(bad)
        manifest = json.loads(conn.execute(f"SELECT manifest FROM {MANIFEST_TABLE}").fetchone()[0])
        del manifest["tables"]["deal"]
        conn.execute("DROP TABLE deal")
        conn.execute(f"UPDATE {MANIFEST_TABLE} SET manifest = ?", (json.dumps(manifest),))
        conn.commit()
        conn.close()
    else:
        data = good.read_bytes()
        length = int.from_bytes(data[-len(MARK) - 8:-len(MARK)], "big")
        manifest = json.loads(data[-len(MARK) - 8 - length:-len(MARK) - 8])
        del manifest["tables"]["deal"]
        trailer = json.dumps(manifest).encode()
        bad.write_bytes(data[:manifest["size"]] + trailer + len(trailer).to_bytes(8, "big") + MARK)
    refused = crm("restore", str(bad), "--yes")
    assert refused.exit_code == 1 and "lacks the model's table(s) deal" in refused.output, refused.output
    assert state(base) == before


def test_keep_credentials_keeps_a_token_revoked_after_the_backup_revoked(base, env):
    """And a user disabled after it disabled, a session ended after it ended."""
    from engine.security.tokens import authenticate, create_token, revoke_token
    from engine.security.web import end_sessions, open_session
    from engine.storage.records import Context

    user = base.records.query("user", limit=1)[0]
    bob = base.records.create("user", {"name": "Bob", "email": "bob@example.com"})
    _, kept = create_token(base.records, user["id"], "kept")
    _, bobs = create_token(base.records, bob["id"], "bob's")
    open_session(base.records, user["id"])                            # a browser signed in ...

    def sessions() -> int:
        table = base.records.metadata.tables["_crm_session"]
        with base.db.read() as conn:
            return conn.execute(sa.select(sa.func.count()).where(table.c.user_id == user["id"])).scalar()
    revoked_id, revoked = create_token(base.records, user["id"], "revoked later")
    made = crm("backup")
    assert made.exit_code == 0, made.output
    assert revoke_token(base.records, revoked_id)
    end_sessions(base.records, user["id"])                            # ... and signed out after the backup
    base.records.update("user", bob["id"], {"active": False}, context=Context(system=True))   # disabled after it
    _, newer = create_token(base.records, user["id"], "made after the backup")
    base.records.create("deal", {"name": "after the backup"})

    restored = crm("restore", made.output.strip(), "--keep-credentials", "--yes")
    assert restored.exit_code == 0, restored.output
    assert authenticate(base.records, revoked) is None               # still revoked
    assert authenticate(base.records, kept) is not None
    assert authenticate(base.records, newer) is not None
    assert authenticate(base.records, bobs) is None                   # still disabled
    assert base.records.get("user", bob["id"])["active"] is False
    assert sessions() == 0                                            # still signed out
    assert not base.records.query("deal", where={"name": "after the backup"})   # the data is the backup's
    _, another = create_token(base.records, user["id"], "after the restore")  # ids continue past the kept ones
    assert authenticate(base.records, another) is not None

    plain = crm("restore", made.output.strip(), "--yes")              # without the flag: the backup's tokens
    assert plain.exit_code == 0
    assert authenticate(base.records, revoked) is not None
    assert authenticate(base.records, newer) is None
    assert authenticate(base.records, bobs) is not None
    assert sessions() == 1


def test_a_migration_whose_backup_cannot_be_written_changes_nothing_and_says_so(base, config_root, env,
                                                                              monkeypatch, tmp_path):
    before = state(base)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    monkeypatch.setenv("CRM_BACKUP_DIR", str(blocker))
    (config_root / "base" / "ticket.yaml").write_text(TICKET.lstrip(), encoding="utf-8")
    refused = crm("migrate")
    assert refused.exit_code == 1
    assert "No backup could be taken, so nothing was changed" in refused.output and str(blocker) in refused.output
    assert state(base) == before
    made = crm("backup")
    assert made.exit_code == 1 and made.output.startswith("No backup was written")
