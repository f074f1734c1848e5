"""Import jobs: dry run, error rows re-imported, revert and its refusal, rights and rules, crash and resume."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest

from engine.dataio.importing.plugin import imports_of
from engine.dataio.importing.revert import RevertRefused, error_rows_csv, revert
from engine.dataio.importing.service import ImportError_, Options
from engine.security.permissions import access_for
from engine.storage.context import Context
from engine.storage.errors import PermissionDenied

from .import_kit import records, run_import, site, write_csv  # noqa: F401 - site is a fixture

VISITS = [["subject", "amount", "code"], ["ok 1", "10", "C1"], ["negative", "-5", "C2"], ["ok 2", "abc", "C3"],
          ["", "1", "C4"], ["ok 3", "7", "C5"]]


def _count(rt, entity):
    return len(records(rt, entity))


def test_dry_run_counts_and_errors_and_writes_nothing(site, tmp_path):
    path = write_csv(tmp_path / "v.csv", VISITS)
    job = run_import(site, path, "visit", dry_run=True, unresolved="create")
    assert (job["status"], job["dry_run"], job["created"], job["failed"]) == ("done", True, 2, 3)
    assert _count(site, "visit") == 0
    errors = imports_of(site).first_errors(job["id"])
    assert errors["amount"][0] == {"row": 3, "field": "amount", "message": "The amount cannot be negative"}
    assert errors["amount"][1]["row"] == 4 and "'abc' is not a number" in errors["amount"][1]["message"]
    assert errors["subject"][0]["row"] == 5
    with pytest.raises(RevertRefused, match="a dry run wrote nothing"):
        revert(imports_of(site), job["id"], Context())


def test_error_rows_file_fixed_and_imported_again(site, tmp_path):
    path = write_csv(tmp_path / "v.csv", VISITS)
    job = run_import(site, path, "visit")
    assert (job["created"], job["failed"]) == (2, 3)
    text = "".join(error_rows_csv(imports_of(site), job["id"]))
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0] == ["subject", "amount", "code", "error"]
    assert [r[:3] for r in rows[1:]] == [["negative", "-5", "C2"], ["ok 2", "abc", "C3"], ["", "1", "C4"]]
    assert rows[1][3] == "amount (amount): The amount cannot be negative"
    assert rows[3][3].startswith("subject (subject): ")
    fixed = [rows[0], ["negative", "5", "C2", rows[1][3]], ["ok 2", "3", "C3", ""], ["four", "1", "C4", ""]]
    again = write_csv(tmp_path / "fixed.csv", fixed)
    job = run_import(site, again, "visit")
    assert (job["created"], job["failed"]) == (3, 0)
    assert sorted(v["code"] for v in records(site, "visit")) == ["C1", "C2", "C3", "C4", "C5"]


def test_revert_deletes_created_and_restores_updated(crm, tmp_path):
    crm.records.bulk("account", [{"name": "Acme", "account_number": "N1", "employees": 5},
                                 {"name": "Beta", "account_number": "N2", "employees": 6}])
    path = write_csv(tmp_path / "a.csv", [["account_number", "name", "employees"], ["N1", "Acme AG", "50"],
                                          ["N3", "Gamma", "7"]])
    job = run_import(crm, path, "account", mode="upsert", key="account_number")
    assert (job["created"], job["updated"]) == (1, 1)
    assert {r["account_number"]: r["name"] for r in records(crm, "account")} == {
        "N1": "Acme AG", "N2": "Beta", "N3": "Gamma"}
    result = revert(imports_of(crm), job["id"], Context())
    assert result == {"reverted": 2, "refused": []}
    after = {r["account_number"]: (r["name"], r["employees"]) for r in records(crm, "account")}
    assert after == {"N1": ("Acme", 5), "N2": ("Beta", 6)}
    assert imports_of(crm).get(job["id"])["status"] == "reverted"
    with pytest.raises(RevertRefused, match="already reverted"):
        revert(imports_of(crm), job["id"], Context())


def test_revert_is_refused_for_records_changed_since(crm, tmp_path):
    crm.records.create("account", {"name": "Acme", "account_number": "N1"})
    path = write_csv(tmp_path / "a.csv", [["account_number", "name"], ["N1", "Acme AG"], ["N2", "Beta"],
                                          ["N3", "Gamma"]])
    job = run_import(crm, path, "account", mode="upsert", key="account_number")
    by_number = {r["account_number"]: r for r in records(crm, "account")}
    crm.records.update("account", by_number["N1"]["id"], {"employees": 9})
    crm.records.update("account", by_number["N2"]["id"], {"name": "Beta 2"})
    result = revert(imports_of(crm), job["id"], Context())
    assert result["reverted"] == 1
    refused = {r["row"]: r["reason"] for r in result["refused"]}
    assert refused == {2: "changed since the import (the import left version 2, it is now 3)",
                       3: "changed since the import (the import left version 1, it is now 2)"}
    assert sorted(r["account_number"] for r in records(crm, "account")) == ["N1", "N2"]
    assert imports_of(crm).get(job["id"])["status"] == "done"   # may be reverted again later


def _user(rt, role, email):
    return rt.records.create("user", {"name": role, "email": email, "role": role}, context=Context(system=True))


def test_permissions_apply_to_imports(crm, tmp_path):
    sales = _user(crm, "sales", "s@example.com")   # sales may create accounts but has no import right
    manager = _user(crm, "manager", "m@example.com")
    path = write_csv(tmp_path / "a.csv", [["name"], ["Acme"]])
    with pytest.raises(PermissionDenied, match="does not allow import on account"):
        run_import(crm, path, "account", user_id=sales["id"], access=access_for(crm.records, sales["id"]))
    job = run_import(crm, path, "account", user_id=manager["id"], access=access_for(crm.records, manager["id"]))
    assert job["created"] == 1
    (acme,) = records(crm, "account")
    assert (acme["created_by"], acme["owner_id"]) == (manager["id"], manager["id"])
    with pytest.raises(ImportError_, match="only an administrator may import without automations"):
        run_import(crm, path, "account", user_id=manager["id"], access=access_for(crm.records, manager["id"]),
                   automations=False)


def test_field_rights_apply_to_the_mapping(crm, tmp_path):
    manager = _user(crm, "manager", "m@example.com")
    path = write_csv(tmp_path / "u.csv", [["name", "email", "role"], ["X", "x@example.com", "admin"]])
    with pytest.raises(PermissionDenied):
        run_import(crm, path, "user", user_id=manager["id"], access=access_for(crm.records, manager["id"]))


def test_skipping_automations_is_audited(crm, tmp_path):
    from engine.security.audit import query_audit

    path = write_csv(tmp_path / "a.csv", [["name"], ["Acme"]])
    job = run_import(crm, path, "account", automations=False)
    assert job["created"] == 1
    (entry,) = query_audit(crm.records, kind="admin_bypass")
    assert entry["detail"] == {"import": job["id"], "skipped": "automations"}


def test_background_job_progress_and_cancel(crm, tmp_path, monkeypatch):
    from engine.dataio.importing import service as service_module

    monkeypatch.setattr(service_module, "CHUNK", 10)
    path = write_csv(tmp_path / "a.csv", [["name"], *[[f"A{i}"] for i in range(35)]])
    service = imports_of(crm)
    job_id = service.start(path, "account", Options(), user_id=None)
    assert service.worker.drain(60)
    job = service.get(job_id)
    assert (job["status"], job["created"], job["checkpoint"]) == ("done", 35, 35)
    assert service_module.progress_of(job)["rows_total"] == 35
    cancelled = service.start(path, "account", Options(), user_id=None, run=False)
    assert service.cancel(cancelled)["status"] == "cancelled"
    assert service.run(cancelled)["created"] == 0


def test_crash_mid_import_then_resume_without_duplicates_or_loss(crm, tmp_path):
    """``crm import`` is killed (exit 137) right after its first chunk commits; ``crm import resume``
    goes on from the checkpoint."""
    path = write_csv(tmp_path / "a.csv", [["name", "account_number"], *[[f"A{i}", f"N{i}"] for i in range(35)]])
    s = crm.settings
    env = {**os.environ, "DATABASE_URL": s.database_url, "CRM_VAR_DIR": str(s.var_dir), "CRM_PLUGIN_DIRS": "",
           "CRM_IMPORT_CHUNK": "10", "CRM_FAILPOINTS": "import:after-chunk"}
    cli = [sys.executable, "-m", "engine.cli", "import"]
    run = subprocess.run([*cli, str(path), "--entity", "account"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 137, run.stderr
    assert _count(crm, "account") == 10
    (job,) = imports_of(crm).list()
    assert (job["status"], job["checkpoint"]) == ("running", 10)
    env.pop("CRM_FAILPOINTS")
    run = subprocess.run([*cli, "resume", str(job["id"])], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "created 35" in run.stdout   # counts add up over both runs
    numbers = [r["account_number"] for r in records(crm, "account")]
    assert sorted(numbers) == sorted(f"N{i}" for i in range(35))   # each once: no duplicate, no loss
    assert imports_of(crm).get(job["id"])["status"] == "done"


def test_cancel_while_running_stops_after_the_current_chunk(crm, tmp_path, monkeypatch):
    from engine.dataio.importing import service as service_module

    monkeypatch.setattr(service_module, "CHUNK", 10)
    path = write_csv(tmp_path / "a.csv", [["name"], *[[f"A{i}"] for i in range(35)]])
    service = imports_of(crm)
    job_id = service.start(path, "account", Options(), user_id=None, run=False)
    job = service.run(job_id, progress=lambda done: service.cancel(job_id))
    assert (job["status"], job["created"], job["checkpoint"]) == ("cancelled", 10, 10)
    assert _count(crm, "account") == 10
    assert revert(service, job_id, Context())["reverted"] == 10   # a cancelled import can be undone too


def test_update_by_record_id(crm, tmp_path):
    acme = crm.records.create("account", {"name": "Acme"})
    path = write_csv(tmp_path / "a.csv", [["ID", "Employees"], [str(acme["id"]), "12"], ["999999", "1"], ["x", "1"]])
    job = run_import(crm, path, "account", mode="update")
    assert (job["updated"], job["failed"]) == (1, 2)
    assert crm.records.get("account", acme["id"])["employees"] == 12
    errors = imports_of(crm).first_errors(job["id"])["ID"]
    assert "there is no account 999999" in errors[0]["message"] and "'x' is not a record id" in errors[1]["message"]


def test_a_dry_run_sees_unique_values_across_chunks(site, tmp_path, monkeypatch):
    """Two rows in different chunks with the same unique value: the dry run fails the second, as the
    real import does (its first chunk is committed when the second is written)."""
    from engine.dataio.importing import service as service_module

    monkeypatch.setattr(service_module, "CHUNK", 2)
    rows = [["subject", "amount", "code"], ["a", "1", "U1"], ["b", "2", "U2"], ["c", "3", "u1 "], ["d", "4", "U3"],
            ["e", "5", "U2"]]
    path = write_csv(tmp_path / "u.csv", rows)
    dry = run_import(site, path, "visit", dry_run=True)
    real = run_import(site, path, "visit")
    assert (dry["created"], dry["failed"]) == (real["created"], real["failed"]), (dry, real)
    assert dry["failed"] >= 1 and _count(site, "visit") == real["created"]
    errors = imports_of(site).first_errors(dry["id"])["code"]
    assert errors[-1]["row"] == 6 and "U2" in errors[-1]["message"] and "row 3 of this file" in errors[-1]["message"]
