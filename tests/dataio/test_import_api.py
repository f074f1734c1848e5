"""Imports on the API: upload and poll, preview, error file, cancel, revert, saved mappings, rights."""

from __future__ import annotations

import io
import json

from engine.dataio.importing.plugin import imports_of
from engine.security.tokens import create_token
from engine.storage.context import Context

from .import_kit import records

CSV = "客户名称,客户编号,类型\nAcme,N1,正式客户\nBeta,N2,bogus\n".encode("gb18030")


def _upload(api, data=CSV, name="客户.csv", headers=None, path="/api/v1/_imports", **form):
    return api.post(path, data={"file": (io.BytesIO(data), name), **form}, content_type="multipart/form-data",
                    headers=headers)


def _as(api, role, email):
    user = api.rt.records.create("user", {"name": role, "email": email, "role": role}, context=Context(system=True))
    return {"Authorization": f"Bearer {create_token(api.rt.records, user['id'], 't')[1]}"}


def test_upload_poll_errors_and_revert(api):
    r = _upload(api, entity="account")
    assert r.status_code == 202, r.get_json()
    job = r.get_json()["data"]
    assert r.headers["Location"] == f"/api/v1/_imports/{job['id']}"
    assert imports_of(api.rt).worker.drain(60)
    job = api.get(f"/api/v1/_imports/{job['id']}").get_json()["data"]
    assert (job["status"], job["counts"]["created"], job["counts"]["failed"]) == ("done", 1, 1)
    assert job["progress"]["rows_done"] == 2 and job["progress"]["rows_total"] == 2
    assert "is no option of type" in job["first_errors"]["类型"][0]["message"]
    errors = api.get(job["errors_csv"])
    assert errors.status_code == 200 and errors.mimetype == "text/csv"
    lines = errors.get_data(as_text=True).lstrip("\ufeff").splitlines()
    assert lines[0] == "客户名称,客户编号,类型,error" and lines[1].startswith('Beta,N2,bogus,"type (类型): \'bogus\' is no option of type')
    r = api.post(f"/api/v1/_imports/{job['id']}/revert")
    assert r.status_code == 200 and r.get_json()["data"] == {"reverted": 1, "refused": []}
    assert records(api.rt, "account") == []
    assert api.get("/api/v1/_imports").get_json()["data"][0]["status"] == "reverted"


def test_dry_run_and_preview(api):
    r = _upload(api, entity="account", dry_run="true")
    assert imports_of(api.rt).worker.drain(60)
    job = api.get(f"/api/v1/_imports/{r.get_json()['data']['id']}").get_json()["data"]
    assert (job["dry_run"], job["counts"]["created"], job["counts"]["failed"]) == (True, 1, 1)
    assert records(api.rt, "account") == []
    r = _upload(api, path="/api/v1/_imports/preview", entity="account")
    preview = r.get_json()["data"]
    assert (preview["encoding"], preview["delimiter"]) == ("gb18030", ",")
    assert preview["mapping"]["columns"] == {"客户名称": "name", "客户编号": "account_number", "类型": "type"}
    assert preview["rows"][0] == {"row": 2, "values": ["Acme", "N1", "正式客户"]}


def test_bad_requests_name_their_cause(api):
    r = _upload(api, data=b"", entity="account")
    assert r.status_code == 422 and "the file is empty" in r.get_json()["detail"]
    r = _upload(api, data=b"a,b,A\n1,2,3\n", name="x.csv", entity="account")
    assert r.status_code == 422 and r.get_json()["errors"][0]["row"] == 1
    r = _upload(api, entity="nothing")
    assert r.status_code == 404
    r = _upload(api, entity="account", mode="upsert")
    assert r.status_code == 422 and r.get_json()["errors"][0]["field"] == "key"
    r = _upload(api, entity="account", encoding="rot13")
    assert r.status_code == 422 and "unknown encoding 'rot13'" in r.get_json()["detail"]
    r = _upload(api, entity="account", delimiter='"')
    assert r.status_code == 422 and r.get_json()["type"].endswith("import-delimiter")
    assert api.get("/api/v1/_imports/18446744073709551616").status_code == 404
    r = _upload(api, entity="account", colour="red")
    assert r.status_code == 422 and "unknown option(s): colour" in r.get_json()["detail"]
    r = api.post("/api/v1/_imports", data={"entity": "account"}, content_type="multipart/form-data")
    assert r.status_code == 422 and r.get_json()["errors"][0]["field"] == "file"
    r = _upload(api, entity="account", mapping=json.dumps({"columns": {"客户名称": "name", "客户编号": "name"}}))
    assert r.status_code == 422 and "both mapped to 'name'" in r.get_json()["detail"]


def test_rights_and_visibility(api):
    sales = _as(api, "sales", "s@example.com")        # no import right on accounts
    manager = _as(api, "manager", "m@example.com")
    assert _upload(api, entity="account", headers=sales).status_code == 403
    assert api.post("/api/v1/_imports", data={}, headers={"Authorization": "Bearer nope"}).status_code == 401
    anonymous = api.client.post("/api/v1/_imports", data={"entity": "account", "file": (io.BytesIO(CSV), "a.csv")},
                                content_type="multipart/form-data")
    assert anonymous.status_code == 401   # an upload without a token: not a CSRF matter, no session to ride on
    r = _upload(api, entity="account", headers=manager)
    assert r.status_code == 202
    job_id = r.get_json()["data"]["id"]
    assert imports_of(api.rt).worker.drain(60)
    other = _as(api, "manager", "m2@example.com")
    assert api.get(f"/api/v1/_imports/{job_id}", headers=other).status_code == 404
    assert api.get(f"/api/v1/_imports/{job_id}/errors.csv", headers=other).status_code == 404
    assert api.post(f"/api/v1/_imports/{job_id}/revert", headers=other).status_code == 404
    assert api.get("/api/v1/_imports", headers=other).get_json()["data"] == []
    assert api.get(f"/api/v1/_imports/{job_id}", headers=manager).status_code == 200
    assert api.get(f"/api/v1/_imports/{job_id}").status_code == 200   # an admin sees every import
    r = _upload(api, entity="account", headers=manager, automations="false")
    assert r.status_code == 403 and "only an administrator" in r.get_json()["detail"]


def test_revert_refusal_is_a_409_listing_the_records(api):
    r = _upload(api, entity="account")
    assert imports_of(api.rt).worker.drain(60)
    (acme,) = records(api.rt, "account")
    api.rt.records.update("account", acme["id"], {"employees": 3})
    r = api.post(f"/api/v1/_imports/{r.get_json()['data']['id']}/revert")
    assert r.status_code == 409
    assert r.get_json()["data"]["refused"][0]["reason"].startswith("changed since the import")


def test_saved_mappings_and_cancel(api):
    body = {"columns": {"Firma": "name", "Nr": "account_number"}, "constants": {"rating": "hot"}}
    r = api.put("/api/v1/_imports/mappings/account/erp", json=body)
    assert r.status_code == 200
    assert api.get("/api/v1/_imports/mappings/account/erp").get_json()["data"] == body
    assert api.get("/api/v1/_imports/mappings/account/other").status_code == 404
    r = api.put("/api/v1/_imports/mappings/account/bad", json={"columns": {"A": "nope"}})
    assert r.status_code == 422
    r = _upload(api, data=b"Firma,Nr\nAcme,1\n", name="f.csv", entity="account", mapping_name="erp")
    assert imports_of(api.rt).worker.drain(60)
    (acme,) = records(api.rt, "account")
    assert (acme["name"], acme["account_number"], acme["rating"]) == ("Acme", "1", "hot")
    r = api.post(f"/api/v1/_imports/{r.get_json()['data']['id']}/cancel")
    assert r.status_code == 200 and r.get_json()["data"]["status"] == "done"   # too late to cancel


def test_openapi_documents_the_routes(api):
    paths = api.get("/api/v1/openapi.json").get_json()["paths"]
    assert {"/api/v1/_imports", "/api/v1/_imports/{job_id}/revert", "/api/v1/_imports/preview"} <= set(paths)
