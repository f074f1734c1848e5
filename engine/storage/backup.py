"""Backups and restores: SQLite through its online backup API, PostgreSQL through pg_dump / psql.

A backup is written under a temporary, hidden name (``.<name>.<pid>.partial``), checked, given a
manifest (its tables, their row counts, the model version; on PostgreSQL also the dump's size and
SHA-256) and only then renamed to its real name, so a file named like a backup is always a complete
one. The manifest travels inside the file: a ``_crm_backup`` table in a SQLite copy, a trailer after
the custom-format dump on PostgreSQL. Leftovers of a backup that was killed are removed by the next
backup.

A restore checks the backup against its manifest before it touches anything, then replaces the
database in one transaction: on SQLite a checked staging copy is written over the database with the
backup API; on PostgreSQL, in one psql transaction, every table of the schema is dropped, the dump is
replayed (no ``--clean``, so no dependency of a newer table can block it), the row counts are checked
against the manifest, and only then is it committed. ``keep_credentials`` carries the live
passwords, API tokens, sessions and users' active flags over into the restored data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from engine import failpoints

from .database import Database
from .tables import USER_ENTITY

#: The table that holds a SQLite backup's manifest (dropped again by a restore).
MANIFEST_TABLE = "_crm_backup"
#: The last bytes of a PostgreSQL backup: manifest JSON, its length (8 bytes, big-endian), this mark.
MARK = b"CRM-BACKUP-MANIFEST-1"
#: The tables ``keep_credentials`` carries over from the live database (those of them that exist).
CREDENTIAL_TABLES = ("_crm_credential", "_crm_token", "_crm_session")
PARTIAL = ".partial"
STAGING = ".restore"


class BackupError(RuntimeError):
    """A backup or restore could not be made; nothing was changed."""


def backup(db: Database, folder: Path, label: str = "backup") -> Path:
    """Write a complete, checked copy of the database into ``folder``; return its path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if db.is_sqlite:
        target = folder / f"{Path(db.url.database or 'memory').stem}-{stamp}-{label}.sqlite"
    else:
        target = folder / f"{db.url.database}-{stamp}-{label}.dump"
    partial = folder / f".{target.name}.{_owner()}{PARTIAL}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_leftovers(folder)
        manifest = {"format": 1, "label": label, "taken_at": stamp, "database": db.dialect}
        if db.is_sqlite:
            _sqlite_backup(db, partial, manifest)
        else:
            _pg_backup(db, partial, manifest)
        failpoints.hit("backup:before-rename")
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as exc:   # a full disk, an unwritable folder: say so, in one line
        raise BackupError(f"the backup could not be written to {folder}: {exc}") from None
    finally:
        try:
            partial.unlink(missing_ok=True)
        except OSError:
            pass   # no folder to clean: the error above says why
    return target


def remove_leftovers(folder: Path, suffix: str = PARTIAL) -> list[Path]:
    """Delete the partial files (``.<name>.<host>-<pid><suffix>``) that processes of this host left
    when they were killed midway (a folder shared by several hosts keeps the others'); return them."""
    removed = []
    host = _owner().split("-")[0]
    for path in folder.glob(f".*{suffix}*"):     # with SQLite's -journal, -wal and -shm companions
        owner = path.name.rsplit(suffix, 1)[0].rsplit(".", 1)[-1]
        made_on, _, pid = owner.partition("-")
        if made_on == host and pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def verify(db: Database, source: Path) -> dict:
    """The manifest of the backup at ``source`` once the file is checked against it; else BackupError."""
    if not source.is_file():
        raise BackupError(f"backup {source} does not exist")
    if source.name.endswith(PARTIAL):
        raise BackupError(f"{source.name} is an unfinished backup (its process was stopped before it completed)")
    manifest = _sqlite_verify(source) if db.is_sqlite else _pg_verify(source)
    if manifest.get("database") != db.dialect:
        raise BackupError(f"{source.name} is a {manifest.get('database')} backup; this database is {db.dialect}")
    return manifest


def restore(db: Database, source: Path, *, keep_credentials: bool = False) -> dict:
    """Replace the database's content with the backup at ``source`` (checked first; all or nothing).

    With ``keep_credentials`` the live passwords, tokens (and their revocations), sessions and the
    users' active flags replace those in the backup, for the users the backup holds. Returns the
    backup's manifest."""
    manifest = verify(db, source)
    db.dispose()
    if db.is_sqlite:
        _sqlite_restore(db, source, manifest, keep_credentials)
    else:
        _pg_restore(db, source, manifest, keep_credentials)
    db.dispose()
    return manifest


# -- SQLite ---------------------------------------------------------------------------------------

def _sqlite_backup(db: Database, partial: Path, manifest: dict) -> None:
    with db.engine.connect() as conn:
        source = conn.connection.dbapi_connection
        dest = sqlite3.connect(partial)
        try:
            source.backup(dest)
            failpoints.hit("backup:copied")
            if _sqlite_check(dest) != "ok":
                raise BackupError(f"the copy in {partial} is damaged")
            dest.execute(f'DROP TABLE IF EXISTS "{MANIFEST_TABLE}"')
            manifest["tables"] = _sqlite_counts(dest)
            manifest["model_version"], manifest["model_tables"] = _sqlite_model(dest)
            dest.execute(f'CREATE TABLE "{MANIFEST_TABLE}" (manifest TEXT NOT NULL)')
            dest.execute(f'INSERT INTO "{MANIFEST_TABLE}" VALUES (?)', (json.dumps(manifest),))
            dest.commit()
        finally:
            dest.close()


def _sqlite_verify(source: Path) -> dict:
    try:
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{source.name} cannot be opened as a SQLite backup: {exc}") from None
    try:
        if _sqlite_check(conn) != "ok":
            raise BackupError(f"{source.name} is damaged (SQLite integrity check failed)")
        try:
            row = conn.execute(f'SELECT manifest FROM "{MANIFEST_TABLE}"').fetchone()
        except sqlite3.Error:
            row = None
        if row is None:
            raise BackupError(f"{source.name} has no backup manifest: it is not a complete backup of this engine")
        manifest = json.loads(row[0])
        counts = _sqlite_counts(conn)
        counts.pop(MANIFEST_TABLE, None)
    except sqlite3.Error as exc:
        raise BackupError(f"{source.name} cannot be read as a SQLite backup: {exc}") from None
    finally:
        conn.close()
    _compare(source, manifest, counts)
    return manifest


def _sqlite_restore(db: Database, source: Path, manifest: dict, keep_credentials: bool) -> None:
    live = Path(db.url.database)
    remove_leftovers(live.parent, STAGING)
    staging = live.with_name(f".{live.name}.{_owner()}{STAGING}")
    try:
        src, stage = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True), sqlite3.connect(staging)
        try:
            src.backup(stage)
        finally:
            src.close()
        try:
            stage.isolation_level = None
            if keep_credentials:
                stage.execute("ATTACH DATABASE ? AS live", (str(live),))
            stage.execute("BEGIN")
            stage.execute(f'DROP TABLE IF EXISTS "{MANIFEST_TABLE}"')
            if keep_credentials:
                _sqlite_keep_credentials(stage)
            stage.execute("COMMIT")
            if keep_credentials:
                stage.execute("DETACH DATABASE live")
            dest = sqlite3.connect(live, timeout=30)
            try:
                stage.backup(dest)     # one write transaction on the database: all of it, or nothing
            finally:
                dest.close()
        finally:
            stage.close()
    except sqlite3.Error as exc:
        raise BackupError(f"restoring {source.name} failed: {exc}") from None
    finally:
        staging.unlink(missing_ok=True)


def _sqlite_keep_credentials(stage: sqlite3.Connection) -> None:
    """Put the credentials of the attached ``live`` database over those of the staging copy."""
    have = {r[0] for r in stage.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    had = {r[0] for r in stage.execute("SELECT name FROM live.sqlite_master WHERE type = 'table'")}
    if USER_ENTITY not in had:
        raise BackupError("--keep-credentials: the live database holds no users to keep")
    if USER_ENTITY in have:
        stage.execute(f'UPDATE main."{USER_ENTITY}" SET active = (SELECT l.active FROM live."{USER_ENTITY}" l '
                      f'WHERE l.id = main."{USER_ENTITY}".id) '
                      f'WHERE id IN (SELECT id FROM live."{USER_ENTITY}")')
    for table in CREDENTIAL_TABLES:
        if table in have and table in had:
            cols = [r[1] for r in stage.execute(f'PRAGMA main.table_info("{table}")')]
            cols = [c for c in cols if c in {r[1] for r in stage.execute(f'PRAGMA live.table_info("{table}")')}]
            names = ", ".join(f'"{c}"' for c in cols)
            stage.execute(f'DELETE FROM main."{table}"')
            stage.execute(f'INSERT INTO main."{table}" ({names}) SELECT {names} FROM live."{table}" '
                          f'WHERE user_id IN (SELECT id FROM main."{USER_ENTITY}")')


def _sqlite_check(conn: sqlite3.Connection) -> str:
    try:
        return conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return str(exc)


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in names}


def _sqlite_model(conn: sqlite3.Connection) -> tuple[int, list[str]]:
    """(version, table names) of the last model applied to the copy, or (0, [])."""
    try:
        row = conn.execute("SELECT version, snapshot FROM _crm_model ORDER BY version DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return 0, []
    return _model_of(row)


# -- PostgreSQL -----------------------------------------------------------------------------------

def _pg_backup(db: Database, partial: Path, manifest: dict) -> None:
    """pg_dump in the snapshot the row counts were read in, then the manifest as a trailer."""
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
            schema = db.schema or conn.exec_driver_sql("SELECT current_schema()").scalar()
            tables = [r[0] for r in conn.execute(sa.text(
                "SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY tablename"), {"s": schema})]
            manifest["schema"] = schema
            manifest["tables"] = {t: conn.exec_driver_sql(f'SELECT COUNT(*) FROM "{schema}"."{t}"').scalar()
                                  for t in tables}
            manifest["model_version"], manifest["model_tables"] = _model_of(conn.exec_driver_sql(
                f'SELECT version, snapshot FROM "{schema}"._crm_model ORDER BY version DESC LIMIT 1').first()
                if "_crm_model" in tables else None)
            _run_pg(db, "pg_dump", "--format=custom", f"--file={partial}", f"--snapshot={snapshot}",
                    f"--schema={schema}")
    failpoints.hit("backup:copied")
    digest, size = _sha256(partial)
    listed = _pg_data_entries(partial)
    missing = sorted(set(manifest["tables"]) - listed)
    if missing:
        raise BackupError(f"pg_dump wrote no data for {', '.join(missing)}")
    manifest.update(size=size, sha256=digest)
    trailer = json.dumps(manifest).encode()
    with open(partial, "ab") as out:
        out.write(trailer + len(trailer).to_bytes(8, "big") + MARK)
        out.flush()
        os.fsync(out.fileno())


def _pg_verify(source: Path) -> dict:
    with open(source, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end < len(MARK) + 8:
            raise BackupError(f"{source.name} is empty or truncated: not a complete backup")
        f.seek(end - len(MARK) - 8)
        tail = f.read()
        if tail[8:] != MARK:
            raise BackupError(f"{source.name} has no backup manifest: it is truncated, or not a backup of this engine")
        length = int.from_bytes(tail[:8], "big")
        f.seek(end - len(MARK) - 8 - length)
        try:
            manifest = json.loads(f.read(length))
        except ValueError:
            raise BackupError(f"{source.name} has a damaged manifest") from None
    digest, _ = _sha256(source, manifest.get("size", -1))
    if manifest.get("size") != end - len(MARK) - 8 - length or digest != manifest.get("sha256"):
        raise BackupError(f"{source.name} does not match its manifest's checksum: it is damaged")
    _compare(source, manifest, {t: manifest["tables"][t] for t in _pg_data_entries(source) & set(manifest["tables"])})
    return manifest


def _pg_restore(db: Database, source: Path, manifest: dict, keep_credentials: bool) -> None:
    """Drop every table of the schema and replay the dump in one psql transaction; check, then commit."""
    with db.engine.connect() as conn:
        schema = db.schema or conn.exec_driver_sql("SELECT current_schema()").scalar()
        live_cols = {t: [c["name"] for c in sa.inspect(conn).get_columns(t, schema=schema)]
                     for t in (USER_ENTITY, *CREDENTIAL_TABLES) if sa.inspect(conn).has_table(t, schema=schema)}
    if manifest.get("schema") != schema:
        raise BackupError(f"{source.name} is a backup of schema {manifest.get('schema')!r}; "
                          f"this database uses {schema!r}")
    if keep_credentials and USER_ENTITY not in live_cols:
        raise BackupError("--keep-credentials: the live database holds no users to keep")
    q = f'"{schema}"'
    before = ["SET client_min_messages = warning;", "BEGIN;"]
    if keep_credentials:
        before += [f'CREATE TEMP TABLE "keep_{t}" AS SELECT * FROM {q}."{t}";' for t in live_cols]
    before.append(_pg_clear_schema(schema))
    after = [_pg_check_counts(schema, manifest["tables"])]
    if keep_credentials:
        after.append(_pg_keep_credentials(schema, live_cols))
    after.append("COMMIT;")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        psql = _pg_process(db, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", stdin=subprocess.PIPE,
                           stdout=out, stderr=err)
        replay = None
        try:
            psql.stdin.write("\n".join(before).encode() + b"\n")
            psql.stdin.flush()
            replay = _pg_process(db, "pg_restore", "--no-owner", f"--schema={schema}", "--file=-", str(source),
                                 connect=False, stdout=psql.stdin, stderr=err)
            if replay.wait() == 0:
                psql.stdin.write(("\n" + "\n".join(after) + "\n").encode())   # COMMIT only after a full replay
            psql.stdin.close()
        except BrokenPipeError:
            pass   # psql stopped at an error: the transaction is rolled back, its message is in err
        if replay is not None and replay.poll() is None:
            replay.kill()
            replay.wait()
        if psql.wait() != 0 or replay is None or replay.returncode != 0:
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "ERROR" in ln or "error" in ln), lines[-1] if lines else "failed")
            raise BackupError(f"restoring {source.name} failed: {detail.strip()}")


def _pg_clear_schema(schema: str) -> str:
    """SQL that drops every table, view and sequence of ``schema`` (inside the restore's transaction)."""
    lit = schema.replace("'", "''")
    return ("DO $crm$ DECLARE r record; BEGIN\n"
            f"  FOR r IN SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE n.nspname = '{lit}' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') LOOP\n"
            "    EXECUTE format('DROP %s IF EXISTS %I.%I CASCADE', CASE r.relkind WHEN 'v' THEN 'VIEW' "
            "WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, "
            f"'{lit}', r.relname);\n"
            "  END LOOP;\nEND $crm$;")


def _pg_check_counts(schema: str, tables: dict[str, int]) -> str:
    """SQL that aborts the transaction if a restored table does not hold the rows the manifest says."""
    checks = "".join(
        f"  IF (SELECT COUNT(*) FROM \"{schema}\".\"{t}\") <> {int(n)} THEN RAISE EXCEPTION "
        f"'table {t} holds % rows after the restore, the backup''s manifest says {int(n)}', "
        f"(SELECT COUNT(*) FROM \"{schema}\".\"{t}\"); END IF;\n" for t, n in tables.items())
    return f"DO $crm$ BEGIN\n{checks}  NULL;\nEND $crm$;"


def _pg_keep_credentials(schema: str, live_cols: dict[str, list[str]]) -> str:
    """SQL that puts the live credentials (kept in temp tables) over the restored ones."""
    q, user = f'"{schema}"', f'"{schema}"."{USER_ENTITY}"'
    lit = schema.replace("'", "''")
    out = [(f"DO $crm$ BEGIN IF to_regclass('\"{lit}\".\"{USER_ENTITY}\"') IS NOT NULL THEN "
            f"UPDATE {user} u SET active = k.active FROM pg_temp.\"keep_{USER_ENTITY}\" k WHERE k.id = u.id; "
            "END IF; END $crm$;")]
    for table, cols in live_cols.items():
        if table == USER_ENTITY:
            continue
        names, reg = ", ".join(f'"{c}"' for c in cols), f"'\"{lit}\".\"{table}\"'"
        sequence = (f"    PERFORM setval(pg_get_serial_sequence({reg}, 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {q}.\"{table}\"), 0) + 1, false) "
                    f"WHERE pg_get_serial_sequence({reg}, 'id') IS NOT NULL;\n") if "id" in cols else ""
        out.append("DO $crm$ BEGIN\n"
                   f"  IF to_regclass({reg}) IS NOT NULL THEN\n"
                   f"    EXECUTE 'DELETE FROM {q}.\"{table}\"';\n"
                   f"    EXECUTE 'INSERT INTO {q}.\"{table}\" ({names}) SELECT {names} FROM pg_temp.\"keep_{table}\" "
                   f"WHERE user_id IN (SELECT id FROM {user})';\n"
                   f"{sequence}  END IF;\nEND $crm$;")
    return "\n".join(out)


def _pg_data_entries(dump: Path) -> set[str]:
    """The tables whose data the dump's table of contents lists."""
    listed = subprocess.run([_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise BackupError(f"{dump.name} is not a readable dump: {listed.stderr.strip()}")
    names = set()
    for line in listed.stdout.splitlines():
        if not line.startswith(";") and " TABLE DATA " in line:
            names.add(line.split(" TABLE DATA ", 1)[1].split()[1])
    return names


def _run_pg(db: Database, tool: str, *args: str) -> None:
    done = _pg_process(db, tool, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = done.communicate()
    if done.returncode != 0:
        raise BackupError(f"{tool} failed: {err.decode(errors='replace').strip()}")


def _pg_process(db: Database, tool: str, *args: str, connect: bool = True, **popen) -> subprocess.Popen:
    url = db.url
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    conn_args = [f"--host={url.host or 'localhost'}", f"--port={url.port or 5432}",
                 f"--username={url.username or 'postgres'}", f"--dbname={url.database}"] if connect else []
    return subprocess.Popen([_tool(tool), *conn_args, *args], env=env, **popen)


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return exe


# -- shared ---------------------------------------------------------------------------------------

def _compare(source: Path, manifest: dict, found: dict[str, int]) -> None:
    """Refuse a backup whose tables or row counts are not those of its manifest."""
    expected = manifest.get("tables")
    if not isinstance(expected, dict):
        raise BackupError(f"{source.name} has a damaged manifest (no table list)")
    missing = sorted(set(expected) - set(found))
    if missing:
        raise BackupError(f"{source.name} is incomplete: it lacks the table(s) {', '.join(missing[:5])} "
                          "its manifest lists")
    wrong = [t for t in expected if found[t] != expected[t]]
    if wrong:
        raise BackupError(f"{source.name} is incomplete: {wrong[0]} holds {found[wrong[0]]} rows, "
                          f"its manifest says {expected[wrong[0]]}")
    lacking = sorted(set(manifest.get("model_tables", ())) - set(expected))
    if lacking or (manifest.get("model_version") and "_crm_model" not in expected):
        raise BackupError(f"{source.name} is incomplete: it lacks the model's table(s) "
                          f"{', '.join(lacking[:5]) or '_crm_model'}")


def _model_of(row) -> tuple[int, list[str]]:
    """(version, table names) from a ``_crm_model`` row (version, snapshot), or (0, []) for none."""
    if row is None:
        return 0, []
    snapshot = row[1] if isinstance(row[1], dict) else json.loads(row[1] or "{}")
    return row[0], sorted(snapshot.get("tables", {}))


def _sha256(path: Path, limit: int | None = None) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while limit is None or size < limit:
            chunk = f.read(1 << 20 if limit is None else min(1 << 20, limit - size))
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _owner() -> str:
    """``<host>-<pid>`` of this process, for the names of its partial files (host: 8 hex digits)."""
    return f"{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
