"""Identity and its defences: 401/403, sessions and CSRF, throttling, disabled users, the audit log,
encryption at rest and key rotation, role and encryption metadata errors, backup and restore."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from engine.metadata import MetadataError
from engine.security.passwords import set_password
from engine.security.tokens import create_token
from engine.storage.records import Context

SYSTEM = Context(system=True)


def _user(rt, email, role, password=None, **values):
    user = rt.records.create("user", {"name": email.split("@")[0], "email": email, "role": role, **values},
                             context=SYSTEM)
    if password:
        set_password(rt.records, user["id"], password)
    return user


def _csrf(page: bytes) -> str:
    return re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()


def test_no_token_is_401_and_a_token_without_the_permission_is_403(api):
    assert api.client.get("/api/v1/account").status_code == 401
    assert api.client.post("/api/v1/account", json={"name": "x"}).status_code == 401
    standard = _user(api.rt, "std@example.com", "standard")
    _, token = create_token(api.rt.records, standard["id"], "t")
    auth = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/api/v1/account", headers=auth).status_code == 200
    r = api.client.post("/api/v1/account", json={"name": "x"}, headers=auth)
    assert r.status_code == 403 and r.mimetype == "application/problem+json" and "create on account" in r.json["detail"]
    assert api.client.get("/api/v1/_audit", headers=auth).status_code == 403
    denials = api.get("/api/v1/_audit?kind=permission_denied").json["data"]
    assert {d["entity"] for d in denials} >= {"account", "_audit"} and denials[0]["user_id"] == standard["id"]


def test_a_user_with_an_undeclared_role_may_do_nothing(api):
    nobody = _user(api.rt, "nobody@example.com", "astronaut")
    _, token = create_token(api.rt.records, nobody["id"], "t")
    assert api.client.get("/api/v1/account", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_a_disabled_users_tokens_and_session_stop_working(api):
    sam = _user(api.rt, "sam@example.com", "sales", "correct horse")
    _, token = create_token(api.rt.records, sam["id"], "t")
    auth = {"Authorization": f"Bearer {token}"}
    client = api.app.test_client()
    client.post("/login", data={"email": "sam@example.com", "password": "correct horse",
                                "csrf_token": _csrf(client.get("/login").data)})
    assert api.client.get("/api/v1/lead", headers=auth).status_code == 200
    assert client.get("/api/v1/lead").status_code == 200
    assert api.patch(f"/api/v1/user/{sam['id']}", json={"active": False}).status_code == 200
    assert api.client.get("/api/v1/lead", headers=auth).status_code == 401
    assert client.get("/api/v1/lead").status_code == 401
    change = api.get("/api/v1/_audit?kind=user_change").json["data"][0]
    assert change["record_id"] == sam["id"] and change["detail"]["changed"]["active"] == [True, False]


def test_session_login_csrf_and_logout(api):
    _user(api.rt, "ann@example.com", "sales", "s3cret pass")
    client = api.app.test_client()
    page = client.get("/login")
    assert page.status_code == 200 and b'name="csrf_token"' in page.data
    assert client.post("/login", data={"email": "ann@example.com", "password": "s3cret pass"}).status_code == 403
    before = client.get_cookie("session")
    r = client.post("/login", data={"email": "ann@example.com", "password": "s3cret pass", "csrf_token": _csrf(page.data)})
    assert r.status_code == 302
    cookie = client.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.value != (before.value if before else None)
    assert client.get("/api/v1/lead").status_code == 200                       # the API takes the session
    lead = {"last_name": "Doe", "company": "Initech"}
    r = client.post("/api/v1/lead", json=lead)
    assert r.status_code == 403 and "CSRF" in r.json["detail"]                 # unsafe without the header
    token = _csrf(client.get("/login").data)
    assert client.post("/api/v1/lead", json=lead, headers={"X-CSRF-Token": token}).status_code == 201
    assert client.post("/logout").status_code == 403                           # a form post needs the token too
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/api/v1/lead").status_code == 401
    kinds = [a["kind"] for a in api.get("/api/v1/_audit").json["data"]]
    assert "login" in kinds and "logout" in kinds


def test_pages_and_api_answers_carry_protective_headers(api):
    for r in (api.client.get("/login"), api.get("/api/v1/account"), api.client.get("/ui/account")):
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "same-origin"


def test_login_is_throttled_after_repeated_failures(api):
    _user(api.rt, "bob@example.com", "sales", "right password")
    client = api.app.test_client()
    token = _csrf(client.get("/login").data)
    for _ in range(5):
        r = client.post("/login", data={"email": "bob@example.com", "password": "wrong", "csrf_token": token})
        assert r.status_code == 401 and b"Wrong e-mail or password" in r.data
    r = client.post("/login", data={"email": "bob@example.com", "password": "right password", "csrf_token": token})
    assert r.status_code == 429 and b"Too many failed logins" in r.data
    other = client.post("/login", data={"email": "ann@example.com", "password": "x", "csrf_token": token})
    assert other.status_code == 401                                            # per account: others still may try
    kinds = [a["kind"] for a in api.get("/api/v1/_audit?limit=20").json["data"]]
    assert kinds.count("login_failed") == 6 and "login_throttled" in kinds


def test_the_login_page_escapes_what_it_echoes(api):
    client = api.app.test_client()
    token = _csrf(client.get("/login").data)
    r = client.post("/login", data={"email": '"><script>alert(1)</script>', "password": "x", "csrf_token": token})
    assert b"<script>alert(1)" not in r.data and b"&lt;script&gt;" in r.data


def test_admin_writes_and_exports_are_audited(api):
    assert api.post("/api/v1/account", json={"name": "Acme"}).status_code == 201
    export = api.get("/api/v1/account/_export")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert export.get_data(as_text=True).splitlines()[1].split(",")[7] == "Acme"
    log = api.get("/api/v1/_audit").json["data"]
    assert {"admin_bypass", "export", "migration"} <= {a["kind"] for a in log}
    assert api.get("/api/v1/_audit?kind=export&limit=1").json["data"][0]["entity"] == "account"
    assert api.get("/api/v1/_audit?since=2000-01-01T00:00:00").status_code == 400


def test_encrypted_values_are_ciphertext_in_the_database_and_rotate(api, monkeypatch):
    from engine.storage import crypto

    acc = api.post("/api/v1/account", json={"name": "Acme", "tax_id": "DE-123456789"}).json
    assert acc["tax_id"] == "DE-123456789"
    table = api.rt.records.table("account")
    raw = sa.select(sa.type_coerce(table.c.tax_id, sa.Text())).where(table.c.id == acc["id"])
    with api.rt.db.read() as conn:
        stored = conn.execute(raw).scalar()
    assert stored.startswith("v1:test:") and "123456789" not in stored
    assert api.get(f"/api/v1/account/{acc['id']}").json["tax_id"] == "DE-123456789"
    assert api.get("/api/v1/account?tax_id=DE-123456789").status_code == 400
    assert api.get("/api/v1/account?sort=tax_id").status_code == 400
    assert api.get("/api/v1/account?where=tax_id = 'x'").status_code == 400
    from tests.conftest import TEST_KEY

    new_line = crypto.new_key_line("k2")
    monkeypatch.setenv(crypto.ENV, f"{new_line},{TEST_KEY}")                       # a new key in front
    assert api.get(f"/api/v1/account/{acc['id']}").json["tax_id"] == "DE-123456789"   # old key still read
    assert crypto.rotate(api.rt.records) == 1 and crypto.rotate(api.rt.records) == 0
    with api.rt.db.read() as conn:
        assert conn.execute(raw).scalar().startswith("v1:k2:")
    monkeypatch.setenv(crypto.ENV, new_line)                                       # the old key retired
    assert api.rt.records.get("account", acc["id"])["tax_id"] == "DE-123456789"


def test_without_a_key_a_model_with_encrypted_fields_does_not_boot(settings, monkeypatch):
    from engine.runtime import Runtime
    from engine.storage.crypto import EncryptionError

    monkeypatch.delenv("CRM_ENCRYPTION_KEYS")
    with pytest.raises(EncryptionError, match="CRM_ENCRYPTION_KEYS is not set"):
        Runtime.boot(settings)


@pytest.mark.parametrize("files, message", [
    ({"roles.yaml": "role: x\nentities:\n  spaceship: {allow: [read]}\n"}, "roles.yaml:3 [entities/spaceship]: role x: there is no entity 'spaceship'"),
    ({"roles.yaml": "role: x\nentities:\n  account:\n    allow: [read]\n    fields: {colour: none}\n"},
     "roles.yaml:5 [entities/account/fields/colour]: role x: account has no field 'colour'"),
    ({"roles.yaml": "role: x\nentities:\n  account: {allow: [read], share: \"account.name = 'x'\"}\n"},
     "role x: share on account"),
    ({"roles.yaml": "role: x\nentities:\n  account: {allow: [fly]}\n"}, "roles.yaml:3 [entities/account/allow/0]"),
    ({"roles.yaml": "role: x\n---\nrole: x\n"}, "role 'x' is declared twice in layer"),
    ({"account.yaml": "entity: account\nfields:\n  vat: {type: text, encrypted: true, unique: true}\n"},
     "account.yaml:3 [fields/vat/unique]: account.vat: an encrypted field cannot be unique"),
    ({"account.yaml": "entity: account\nfields:\n  vat: {type: text, encrypted: true}\n"
                      "validations:\n  - {name: v, error_when: \"LEN(vat) > 3\", message: m}\n"},
     "account.vat is encrypted; expressions cannot read it"),
    ({"account.yaml": "entity: account\nfields:\n  vat: {type: date, encrypted: true}\n"},
     "property 'encrypted' does not apply to a date field"),
])
def test_role_and_encryption_metadata_errors_name_file_and_line(make_runtime, write_tree, files, message):
    with pytest.raises(MetadataError) as err:
        make_runtime(migrate=False, site_dir=write_tree("site", files))
    assert message in str(err.value), str(err.value)


def test_a_backup_restored_after_the_database_is_destroyed_brings_every_record_and_its_history_back(crm):
    from engine.demo import seed
    from engine.storage.backup import backup, restore

    seed(crm.records, 3)
    acc = crm.records.query("account", limit=1)[0]
    crm.records.update("account", acc["id"], {"rating": "cold" if acc["rating"] != "cold" else "hot"}, context=SYSTEM)

    def everything():
        out = {}
        with crm.db.read() as conn:
            for name in [*crm.model.entities, "_crm_history", "_crm_credential", "_crm_token"]:
                table = crm.records.metadata.tables[name]
                out[name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*table.primary_key.columns))]
        return out

    before = everything()
    assert before["_crm_history"] and sum(len(v) for v in before.values()) > 50
    saved = backup(crm.db, crm.settings.backup_dir, "test")
    with crm.db.write() as conn:                                   # destroy it
        if crm.db.is_sqlite:
            for name in reversed(crm.records.metadata.sorted_tables):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name.name}"'))
        else:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    with crm.db.read() as conn:
        assert not sa.inspect(conn).has_table("account")
    restore(crm.db, saved)
    assert everything() == before
    assert crm.records.history_of("account", acc["id"])[0]["field"] == "rating"


def test_crm_user_create_list_disable(settings, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from engine.cli import main

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CRM_PLUGIN_DIRS", "")
    monkeypatch.setenv("CRM_BACKUP_DIR", str(tmp_path / "b"))
    runner = CliRunner()
    assert runner.invoke(main, ["migrate"]).exit_code == 0
    made = runner.invoke(main, ["user", "create", "--email", "Kim@Example.com", "--name", "Kim", "--role", "sales"])
    assert made.exit_code == 0 and "Password (shown once):" in made.output
    typed = runner.invoke(main, ["user", "create", "--email", "lee@example.com", "--name", "Lee", "--password", "typed-pw"])
    assert typed.exit_code == 0 and "typed-pw" not in typed.output
    bad = runner.invoke(main, ["user", "create", "--email", "x@example.com", "--name", "X", "--role", "pilot"])
    assert bad.exit_code == 1 and "There is no role 'pilot'" in bad.output
    listed = runner.invoke(main, ["user", "list"]).output
    assert "kim@example.com" in listed and "sales" in listed and "active" in listed
    assert runner.invoke(main, ["user", "disable", "kim@example.com"]).exit_code == 0
    assert "disabled" in runner.invoke(main, ["user", "list"]).output
    assert "Re-encrypted 0 value(s)" in runner.invoke(main, ["keys", "rotate"]).output
