"""The API against its own OpenAPI document: a validator, a generated client and schemathesis."""

from __future__ import annotations

import importlib
import json
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
        schema = f"contract_{tmp.name.replace('-', '_')}"
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
        changed = update.sync(client=client, id=made.id, body=models.OpportunityUpdate(stage="proposal"))
        assert changed.stage == "proposal" and changed.version == 2
        page = listing.sync(client=client, sort="-amount", limit=10)
        assert made.id in [item.id for item in page.data]
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "crm_client" or m.startswith("crm_client.")]:
            del sys.modules[name]


CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,missing_required_header,unsupported_method,allow_header_conformance,"
          "use_after_free,ensure_resource_availability,ignored_auth")
# Left out on purpose: positive_data_acceptance (a schema-valid body may name a lookup target that does
# not exist, which is refused with 422 by design) and negative_data_rejection (the record service accepts
# lenient forms such as "12" for an integer, which forms and CSV imports rely on).


def test_schemathesis_finds_no_server_error_and_no_response_off_the_spec(live, tmp_path):
    """Every operation of the base CRM, property-based, through schemathesis's own runner."""
    runner = Path(sys.executable).with_name("st")
    done = subprocess.run(
        [str(runner), "run", f"{live['base']}/api/v1/openapi.json", "-H", f"Authorization: Bearer {live['token']}",
         "--checks", CHECKS, "--max-examples", "6", "--workers", "2", "--no-color",
         "--generation-deterministic", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    summary = done.stdout[done.stdout.rfind("SUMMARY"):]
    assert done.returncode == 0, summary or done.stdout[-5000:] + done.stderr[-2000:]
    assert "Tested: " in summary
