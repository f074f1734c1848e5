"""The API against its own OpenAPI document: a validator, a generated client and schemathesis."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from werkzeug.serving import make_server

from engine.app import create_app
from engine.runtime import Runtime
from engine.security.tokens import create_token
from engine.storage.records import Context

from .conftest import BASE_URL, ON_POSTGRES


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The base CRM app with an admin token, served over HTTP for the whole module."""
    import sqlalchemy as sa

    from engine.settings import Settings

    tmp = tmp_path_factory.mktemp("contract")
    url, schema = f"sqlite:///{tmp / 'crm.db'}", None
    if ON_POSTGRES:
        # unique per process: two xdist workers (or two runs) must never share, and so drop, a schema
        schema = f"contract_{os.getpid()}_{tmp.name.replace('-', '_')}".lower()
        admin = sa.create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = f"{BASE_URL}{'&' if '?' in BASE_URL else '?'}options=-csearch_path%3D{schema}"
    rt = Runtime.boot(Settings(database_url=url, backup_dir=tmp / "backups", var_dir=tmp, plugin_dirs=(),
                               entry_point_plugins=False, secret_key="test"))
    rt.migrate()
    user = rt.records.create("user", {"name": "Api", "email": "api@example.com", "role": "admin"},
                             context=Context(system=True))
    _, token = create_token(rt.records, user["id"], "contract")
    app = create_app(runtime=rt)
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # the fuzzer's thousands of requests
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"app": app, "rt": rt, "token": token, "base": f"http://127.0.0.1:{server.server_port}"}
    server.shutdown()
    rt.close()
    if schema:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def test_the_spec_is_valid_openapi_3_1(live):
    spec = live["app"].test_client().get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    validate(spec)
    assert {"/api/v1/opportunity", "/api/v1/opportunity/{id}", "/api/v1/opportunity/_bulk",
            "/api/v1/opportunity/{id}/history", "/api/v1/_meta"} <= set(spec["paths"])


def test_the_docs_page_is_served_from_local_assets(live):
    client = live["app"].test_client()
    page = client.get("/api/docs/")
    assert page.status_code == 200 and b"swagger-ui" in page.data
    assert b"//cdn" not in page.data and b"unpkg" not in page.data
    assert client.get("/api/docs/swagger-ui-bundle.js").status_code == 200


def test_a_client_generated_from_the_spec_works(live, tmp_path):
    spec_file = tmp_path / "openapi.json"
    spec_file.write_text(json.dumps(live["app"].test_client().get("/api/v1/openapi.json").json))
    (tmp_path / "config.yaml").write_text("project_name_override: crm_client\npackage_name_override: crm_client\n"
                                         "post_hooks: []\n")
    tool = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run([str(tool), "generate", "--path", str(spec_file), "--output-path", str(tmp_path / "crm_client"),
                           "--meta", "none", "--config", str(tmp_path / "config.yaml")], capture_output=True, text=True)
    assert (tmp_path / "crm_client" / "client.py").exists(), done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        crm_client = importlib.import_module("crm_client")
        account_api = importlib.import_module("crm_client.api.account.create_account")
        create = importlib.import_module("crm_client.api.opportunity.create_opportunity")
        get = importlib.import_module("crm_client.api.opportunity.get_opportunity")
        update = importlib.import_module("crm_client.api.opportunity.update_opportunity")
        listing = importlib.import_module("crm_client.api.opportunity.list_opportunity")
        models = importlib.import_module("crm_client.models")
        client = crm_client.AuthenticatedClient(base_url=live["base"], token=live["token"])
        account = account_api.sync(client=client, body=models.AccountCreate(name="Generated Inc"))
        import datetime
        made = create.sync(client=client, body=models.OpportunityCreate(
            name="Generated deal", account=account.id, close_date=datetime.date(2027, 6, 30), amount="1500.00"))
        assert made.id and made.amount == "1500.00" and made.stage == "prospecting"
        fetched = get.sync(client=client, id=made.id)
        assert fetched.name == "Generated deal" and fetched.close_date == datetime.date(2027, 6, 30)
        changed = update.sync(client=client, id=made.id,
                              body=models.OpportunityUpdate(stage=models.OpportunityUpdateStage.PROPOSAL))
        assert changed.stage == "proposal" and changed.version == 2
        page = listing.sync(client=client, sort="-amount", limit=10)
        assert made.id in [item.id for item in page.data]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "crm_client" or m.startswith("crm_client.")]:
            del sys.modules[name]


#: Every check schemathesis has, on every operation of the document, with these settings (each one a
#: fact of the API the document cannot state, not a check left out):
#: - positive_data_acceptance also expects 412 and 422: a schema-valid If-Match may name another version
#:   (412), and a schema-valid body may name a lookup target that does not exist, break a validation
#:   rule, a workflow guard or a unique field, or reuse an Idempotency-Key with another body (422).
#: - on list_* and export_*, positive data may also be refused with 400 or 414: where= is a formula
#:   (docs/formulas.md) that no JSON Schema can type, a filter value may lie outside a number field's
#:   min/max, and the HTTP server refuses a request line over 64 KiB (414, before the API).
#: - negative_data_rejection also counts 412, 413 and 414 as refusals: If-Match is checked before the
#:   body, a bulk call over 10,000 records is 413, an over-long query is 414.
#: - the coverage phase is off for list_*/export_* (hundreds of deepObject filter parameters make it
#:   run for minutes: the fuzzing phase covers them) and for update_*/delete_*/transition_*: its
#:   header generator (schemathesis 4.32) sees the If-Match pattern, which needs quotes, as
#:   unsatisfiable and then sends "If-Match: 0" as valid data; fuzzing honours the pattern.
ST_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "412", "422"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "414", "415", "422", "428"]

[[operations]]
include-operation-id-regex = "^(list|export)_"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409", "414"]
phases.coverage.enabled = false

[[operations]]
include-operation-id-regex = "^(update|delete|transition)_"
phases.coverage.enabled = false
"""


def test_schemathesis_finds_no_server_error_and_no_response_off_the_spec(live, tmp_path):
    """Every operation of the base CRM, property-based, through schemathesis's own runner, with every
    check. About 4 minutes on either database on 2 cores (5 examples per operation)."""
    runner = Path(sys.executable).with_name("st")
    config = tmp_path / "schemathesis.toml"
    config.write_text(ST_CONFIG)
    done = subprocess.run(
        [str(runner), "--config-file", str(config), "run", f"{live['base']}/api/v1/openapi.json",
         "-H", f"Authorization: Bearer {live['token']}", "--checks", "all", "--max-examples", "5", "--workers", "2",
         "--no-color", "--generation-deterministic", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=1200)
    summary = done.stdout[done.stdout.rfind("SUMMARY"):]
    assert done.returncode == 0, done.stdout[done.stdout.find("FAILURES"):][:8000] + done.stderr[-2000:]
    assert "Tested: " in summary and "Configuration:" in done.stdout
