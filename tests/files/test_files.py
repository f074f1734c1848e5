"""Files (engine/files): the local store, the checks of an upload (size, type sniffed from the content,
names, the virus-scan hook), attachments through the API with the record's rights, file fields,
the removal of a deleted record's files, and the audit rows."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from engine.files.service import FileRefused, safe_name, sniff
from engine.files.storage import LocalStore, check_key, new_key
from engine.storage.records import Context

SYSTEM = Context(system=True)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
       b"\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

SCANNER = '''
from engine.plugins import hookimpl

EICAR = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"


@hookimpl
def crm_scan_file(name, mime, path):
    with open(path, "rb") as f:
        if EICAR in f.read():
            return "EICAR test signature found"
    return None
'''

FIELD = """
entity: account
fields:
  contract_scan: {type: file, label: Signed contract, max_size: 2000, types: [pdf]}
"""

ROLES = """
role: reader
label: {en: Reader}
entities:
  account: {allow: [read]}
---
role: nobody
label: {en: Nobody}
entities:
  contact: {allow: [read]}
---
role: blind
label: {en: Blind to the contract}
entities:
  account: {allow: [read, update], fields: {contract_scan: none}}
---
role: editor
label: {en: Editor}
entities:
  account: {allow: [read, update]}
"""


# -- the store and the checks -------------------------------------------------------------------

def test_the_local_store_puts_streams_and_deletes_by_random_key(tmp_path):
    store = LocalStore(tmp_path / "files")
    key = new_key()
    assert store.put(key, io.BytesIO(b"x" * 200_000)) == 200_000
    assert store.exists(key) and store.get(key) == b"x" * 200_000
    assert b"".join(store.stream(key)) == b"x" * 200_000
    assert max(len(c) for c in store.stream(key)) <= 64 * 1024   # streamed in chunks
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)   # twice is fine
    with pytest.raises(FileNotFoundError):
        store.stream(key)
    for bad in ("../etc/passwd", "ab/../../x", "/abs", ""):
        with pytest.raises(ValueError):
            check_key(bad)
    assert new_key() != new_key()


def test_names_are_made_safe_and_types_sniffed():
    assert safe_name("../../etc/passwd.txt") == "passwd.txt"
    assert safe_name("C:\\Users\\x\\report.pdf") == "report.pdf"
    assert safe_name("evil\x00\r\nname.pdf") == "evilname.pdf"
    assert safe_name("合同 2026.pdf") == "合同 2026.pdf"
    assert safe_name(".hidden.pdf") == "hidden.pdf"
    for bad in ("", "..", "/", "noextension", "\x00\x01"):
        with pytest.raises(FileRefused) as exc:
            safe_name(bad)
        assert "name" in exc.value.message
    assert sniff(PDF) == "application/pdf" and sniff(PNG) == "image/png"
    assert sniff(b"<!DOCTYPE html><script>alert(1)</script>") == "text/html"
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'></svg>") == "image/svg+xml"
    assert sniff("名字,金额\n".encode()) == "text/plain"


# -- the API ------------------------------------------------------------------------------------

@pytest.fixture
def files_api(make_runtime, write_tree):
    from engine.app import create_app
    from engine.security.tokens import create_token

    rt = make_runtime(site_dir=write_tree("site", {"account_file.yaml": FIELD, "roles.yaml": ROLES}),
                      plugin_dirs=(write_tree("plugins", {"scanner.py": SCANNER}),), files_max_size=5000)
    users = {role: rt.records.create("user", {"name": role.title(), "email": f"{role}@example.com", "role": role},
                                     context=SYSTEM) for role in ("admin", "reader", "nobody", "blind", "sales", "editor")}
    tokens = {role: {"Authorization": f"Bearer {create_token(rt.records, u['id'], 't')[1]}"} for role, u in users.items()}
    account = rt.records.create("account", {"name": "Acme Trading"}, context=SYSTEM)
    return rt, create_app(runtime=rt).test_client(), tokens, users, account


def _upload(client, headers, path, data, name, part="file"):
    return client.post(path, headers=headers, data={part: (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_attach_list_download_and_delete_with_audit(files_api):
    rt, client, tokens, users, account = files_api
    base = f"/api/v1/account/{account['id']}/_attachments"
    r = _upload(client, tokens["admin"], base, PDF, "报价单 Q1.pdf")
    assert r.status_code == 201, r.get_data(as_text=True)
    pdf = r.get_json()
    assert pdf["name"] == "报价单 Q1.pdf" and pdf["content_type"] == "application/pdf" and pdf["size"] == len(PDF)
    png = _upload(client, tokens["admin"], base, PNG, "../logo.png").get_json()
    assert png["name"] == "logo.png"
    listed = client.get(base, headers=tokens["reader"]).get_json()["data"]
    assert [f["name"] for f in listed] == ["logo.png", "报价单 Q1.pdf"]

    r = client.get(f"{base}/{pdf['id']}", headers=tokens["reader"])
    assert r.status_code == 200 and r.data == PDF
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    cd = r.headers["Content-Disposition"]
    assert cd.startswith("attachment;") and "filename*=UTF-8''%E6%8A%A5%E4%BB%B7%E5%8D%95%20Q1.pdf" in cd
    assert r.headers["Content-Type"] == "application/pdf"
    r = client.get(f"{base}/{pdf['id']}?inline=1", headers=tokens["reader"])
    assert r.headers["Content-Disposition"].startswith("inline;")
    r = client.get(f"{base}/{png['id']}?inline=1", headers=tokens["reader"])
    assert r.headers["Content-Disposition"].startswith("inline;") and r.data == PNG

    # a reader may not delete or upload
    assert client.delete(f"{base}/{pdf['id']}", headers=tokens["reader"]).status_code == 403
    assert _upload(client, tokens["reader"], base, PDF, "x.pdf").status_code == 403
    assert client.delete(f"{base}/{pdf['id']}", headers=tokens["admin"]).status_code == 204
    assert client.get(f"{base}/{pdf['id']}", headers=tokens["admin"]).status_code == 404
    audit = rt.records.metadata.tables["_crm_audit"]
    with rt.records.db.read() as conn:
        kinds = [r.kind for r in conn.execute(sa.select(audit).where(audit.c.kind.like("file_%")).order_by(audit.c.id))]
    assert kinds == ["file_uploaded", "file_uploaded", "file_deleted"]


def pdf_key(rt, file_id):
    return rt.extensions["files"].find(file_id)["key"]


def test_who_may_not_read_the_record_gets_no_file(files_api):
    rt, client, tokens, users, account = files_api
    base = f"/api/v1/account/{account['id']}/_attachments"
    pdf = _upload(client, tokens["admin"], base, PDF, "a.pdf").get_json()
    r = client.get(f"{base}/{pdf['id']}", headers=tokens["nobody"])
    assert r.status_code == 403 and not r.data.startswith(b"%PDF")
    assert client.get(base, headers=tokens["nobody"]).status_code == 403
    # a sales rep of no team does not see the account (not a partner): 404, as for the record itself
    r = client.get(f"{base}/{pdf['id']}", headers=tokens["sales"])
    assert r.status_code == 404 and not r.data.startswith(b"%PDF")
    assert client.get(f"/api/v1/account/{account['id']}", headers=tokens["sales"]).status_code == 404
    assert client.get(f"{base}/{pdf['id']}").status_code == 401
    other = rt.records.create("account", {"name": "Other"}, context=SYSTEM)   # the file is not that record's
    assert client.get(f"/api/v1/account/{other['id']}/_attachments/{pdf['id']}", headers=tokens["admin"]).status_code == 404


def test_refused_uploads_name_the_limit(files_api):
    rt, client, tokens, users, account = files_api
    base = f"/api/v1/account/{account['id']}/_attachments"
    r = _upload(client, tokens["admin"], base, b"%PDF-" + b"x" * 6000, "big.pdf")
    assert r.status_code == 413 and "4.9 KB" in r.get_json()["detail"], r.get_json()
    r = _upload(client, tokens["admin"], base, b"MZ\x90\x00binary", "tool.exe")
    assert r.status_code == 415 and ".exe" in r.get_json()["detail"] and ".pdf" in r.get_json()["detail"]
    r = _upload(client, tokens["admin"], base, b"<html><script>alert(1)</script></html>", "page.pdf")
    assert r.status_code == 415 and "text/html" in r.get_json()["detail"]
    r = _upload(client, tokens["admin"], base, b"<svg onload=alert(1)></svg>", "logo.png")
    assert r.status_code == 415
    r = _upload(client, tokens["admin"], base, PDF, "..")
    assert r.status_code == 422 and "name" in r.get_json()["detail"]
    r = _upload(client, tokens["admin"], base, EICAR, "eicar.txt")
    assert r.status_code == 422 and "EICAR test signature found" in r.get_json()["detail"]
    assert client.post(base, headers=tokens["admin"], data={}).status_code == 400
    assert client.get(base, headers=tokens["admin"]).get_json()["data"] == []
    files = rt.extensions["files"]
    assert not list((files.store.root).rglob("*")) or all(p.is_dir() for p in files.store.root.rglob("*"))
    assert not [p for p in files.tmp.iterdir()]   # no temporary file left behind


def test_deleting_a_record_removes_its_files_and_the_sweep_what_a_bulk_delete_left(files_api):
    rt, client, tokens, users, account = files_api
    files = rt.extensions["files"]
    base = f"/api/v1/account/{account['id']}/_attachments"
    one = _upload(client, tokens["admin"], base, PDF, "a.pdf").get_json()
    key = pdf_key(rt, one["id"])
    assert files.store.exists(key)
    rt.records.delete("account", account["id"], context=SYSTEM)
    assert files.find(one["id"]) is None and not files.store.exists(key)

    other = rt.records.create("account", {"name": "Beta"}, context=SYSTEM)
    two = _upload(client, tokens["admin"], f"/api/v1/account/{other['id']}/_attachments", PDF, "b.pdf").get_json()
    key = pdf_key(rt, two["id"])
    table = rt.records.table("account")
    with rt.records.db.write() as conn:   # as a bulk delete would: no write hooks
        conn.execute(table.delete().where(table.c.id == other["id"]))
    assert files.sweep() == 1
    assert files.find(two["id"]) is None and not files.store.exists(key)


def test_a_file_field_takes_an_uploaded_file_and_is_served_with_the_field(files_api):
    rt, client, tokens, users, account = files_api
    path = "/api/v1/account/_files/contract_scan"
    r = _upload(client, tokens["admin"], path, PNG, "scan.png")
    assert r.status_code == 415 and ".pdf" in r.get_json()["detail"]   # the field allows only pdf
    r = _upload(client, tokens["admin"], path, b"%PDF-" + b"x" * 3000, "scan.pdf")
    assert r.status_code == 413 and "2.0 KB" in r.get_json()["detail"]
    f = _upload(client, tokens["admin"], path, PDF, "scan.pdf").get_json()
    r = client.patch(f"/api/v1/account/{account['id']}", headers={**tokens["admin"], "If-Match": "*"},
                     json={"contract_scan": f["id"]})
    assert r.status_code == 200, r.get_data(as_text=True)
    got = client.get(f"/api/v1/account/{account['id']}/_files/contract_scan", headers=tokens["reader"])
    assert got.status_code == 200 and got.data == PDF
    # a role that may not read the field gets no file
    assert client.get(f"/api/v1/account/{account['id']}/_files/contract_scan",
                      headers=tokens["blind"]).status_code == 404
    # someone else's upload, or an attachment's id, cannot be set as the field's value
    other = _upload(client, tokens["admin"], path, PDF, "other.pdf").get_json()
    from engine.storage.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as exc:
        rt.records.update("account", account["id"], {"contract_scan": other["id"]},
                          context=Context(user_id=users["editor"]["id"], access=_access(rt, users["editor"])))
    assert "not a file uploaded for account.contract_scan" in str(exc.value)
    r = client.patch(f"/api/v1/account/{account['id']}", headers={**tokens["admin"], "If-Match": "*"},
                     json={"contract_scan": 999999})
    assert r.status_code == 422 and "contract_scan" in r.get_data(as_text=True)
    # replacing the file removes the old one once the update commits
    new = _upload(client, tokens["admin"], path, PDF, "v2.pdf").get_json()
    old_key = pdf_key(rt, f["id"])
    rt.records.update("account", account["id"], {"contract_scan": new["id"]},
                      context=Context(user_id=users["admin"]["id"]))
    assert rt.extensions["files"].find(f["id"]) is None and not rt.extensions["files"].store.exists(old_key)


def _access(rt, user):
    from engine.security.permissions import access_for

    return access_for(rt.records, user["id"])


def test_the_openapi_document_has_the_file_routes(files_api):
    rt, client, tokens, users, account = files_api
    doc = client.get("/api/v1/openapi.json", headers=tokens["admin"]).get_json()
    assert "/api/v1/account/{record_id}/_attachments" in doc["paths"]     # one path per entity
    assert "/api/v1/lead/_files/{field}" in doc["paths"]
    assert "400" in doc["paths"]["/api/v1/account/{record_id}/_attachments/{file_id}"]["get"]["responses"]
    assert "File" in doc["components"]["schemas"]


def test_a_file_id_off_the_range_is_a_404_and_inline_takes_only_1(files_api):
    rt, client, tokens, users, account = files_api
    base = f"/api/v1/account/{account['id']}/_attachments"
    r = client.get(f"{base}/9223372036854775808", headers=tokens["admin"])
    assert r.status_code == 404 and r.mimetype == "application/problem+json"
    r = client.delete(f"{base}/9223372036854775808", headers=tokens["admin"])
    assert r.status_code == 404
    r = client.get(f"{base}/1?inline=AAA", headers=tokens["admin"])
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "inline"
