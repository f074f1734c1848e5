"""Faults of the contract: the API and its OpenAPI document disagreeing. A route missing from the
document (generated clients and schemathesis never see it), or a value the document allows that the
API refuses, or one it forbids that the API takes. The whole-document fuzzing is in
tests/test_api_contract.py; these are the precise cases, each a regression of one finding."""

from __future__ import annotations

import re

import pytest
from werkzeug.exceptions import HTTPException

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def _document(api) -> dict:
    return api.client.get("/api/v1/openapi.json").json


def _routes(api) -> set[tuple[str, str]]:
    """(path template, method) for every rule under /api/v1 (the API blueprint's and those plugins mount,
    the workflow's and the dashboards' among them), one path per entity where the rule takes an entity."""
    entities = list(api.rt.model.entities)
    out = set()
    for rule in api.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        paths = ([rule.rule.replace("<entity:entity>", name) for name in entities] if "<entity:entity>" in rule.rule
                 else [rule.rule])
        out |= {(path, m) for path in paths for m in rule.methods & HTTP_METHODS}
    return out


def _documented(api, spec: dict) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """The routes (as ``_routes`` names them) the document's paths reach, matched by the app's own URL
    map (a path may name a route's variable, ``{id}``, or one of its values, ``/_pools/lead_pool``),
    and the documented paths no route serves."""
    adapter = api.app.url_map.bind("localhost")
    reached, unknown = set(), []
    for path, item in spec["paths"].items():
        for method in (m.upper() for m in item if m.upper() in HTTP_METHODS):
            try:
                rule, args = adapter.match(re.sub(r"\{[^}]+\}", "1", path), method=method, return_rule=True)
            except HTTPException:
                unknown.append((path, method))
                continue
            entity = args.get("entity")
            name = getattr(entity, "name", entity)
            reached.add((rule.rule.replace("<entity:entity>", name) if name else rule.rule, method))
    return reached, unknown


def test_every_route_of_the_api_is_in_the_document(api):
    spec = _document(api)
    (documented, unknown), routes = _documented(api, spec), _routes(api)
    # Taking a transition is a path only for entities with a workflow, converting one only for
    # entities with a conversion declared; elsewhere these routes answer 404 to every request
    # (asserted below), so there is nothing for the document to describe.
    no_workflow = {name for name, ent in api.rt.model.entities.items()
                   if not (ent.workflow or {}).get("transitions")}
    exempt = {(f"/api/v1/{name}/<int:record_id>/transitions/<name>", "POST") for name in no_workflow}
    no_conversion = set(api.rt.model.entities) - set(api.rt.extensions.get("conversions") or {})
    exempt |= {(path.replace("<entity:entity>", name), method) for name in no_conversion
               for path, method in (("/api/v1/<entity:entity>/<int:record_id>/_convert", "GET"),
                                    ("/api/v1/<entity:entity>/<int:record_id>/_convert", "POST"),
                                    ("/api/v1/<entity:entity>/_convert", "POST"),
                                    ("/api/v1/<entity:entity>/<int:record_id>/_convert/<name>", "GET"),
                                    ("/api/v1/<entity:entity>/<int:record_id>/_convert/<name>", "POST"),
                                    ("/api/v1/<entity:entity>/_convert/<name>", "POST"))}
    missing = sorted(routes - documented - exempt)
    assert missing == [], f"routes without a path in the OpenAPI document: {missing}"
    assert unknown == [], f"documented paths the API does not have: {unknown}"
    for needed in ("/api/v1/_search", "/api/v1/_audit", "/api/v1/_automation_runs", "/api/v1/_automation_runs/{id}",
                   "/api/v1/_automation_runs/{id}/rerun", "/api/v1/_dashboards", "/api/v1/_dashboards/{name}",
                   "/api/v1/_dashboards/{name}/{widget}.svg", "/api/v1/account/_export"):
        assert needed in spec["paths"], needed
    assert "account" in no_workflow and "account" in no_conversion
    made = api.post("/api/v1/account", json={"name": "Acme"}).json
    for method, url in (("post", f"/api/v1/account/{made['id']}/transitions/anything"),
                        ("get", f"/api/v1/account/{made['id']}/_convert"),
                        ("post", f"/api/v1/account/{made['id']}/_convert"), ("post", "/api/v1/account/_convert"),
                        ("get", f"/api/v1/account/{made['id']}/_convert/x"), ("post", "/api/v1/account/_convert/x")):
        r = getattr(api, method)(url, json={}) if method == "post" else api.get(url)
        assert r.status_code == 404 and r.mimetype == "application/problem+json", (method, url, r.status_code)


def test_a_route_missing_from_the_document_is_found(api):
    """The walk itself is honest: a rule added to the blueprint without a path is reported."""
    spec = _document(api)
    del spec["paths"]["/api/v1/_search"]
    assert ("/api/v1/_search", "GET") in _routes(api) - _documented(api, spec)[0]
    spec["paths"]["/api/v1/_nowhere/{id}"] = {"get": {}}
    assert ("/api/v1/_nowhere/{id}", "GET") in _documented(api, spec)[1]


@pytest.mark.parametrize("header", ["17", "abc", '"1-"', "W/1-1", '"1-1" "1-2"', '"１-1"'])
def test_an_if_match_off_the_documented_pattern_is_a_400_naming_the_header(api, header):
    spec = _document(api)
    param = next(p for p in spec["paths"]["/api/v1/account/{id}"]["patch"]["parameters"] if p["name"] == "If-Match")
    assert not re.fullmatch(param["schema"]["pattern"].strip("^$"), header)
    made = api.post("/api/v1/account", json={"name": "Acme"}).json
    r = api.patch(f"/api/v1/account/{made['id']}", json={"name": "Changed"}, headers={"If-Match": header})
    assert r.status_code == 400, r.json
    assert r.mimetype == "application/problem+json" and "If-Match" in r.json["detail"]
    assert api.get(f"/api/v1/account/{made['id']}").json["name"] == "Acme"     # nothing written
    r = api.delete(f"/api/v1/account/{made['id']}", headers={"If-Match": header})
    assert r.status_code == 400 and "If-Match" in r.json["detail"]
    assert api.get(f"/api/v1/account/{made['id']}").status_code == 200


@pytest.mark.parametrize("header", ['"{id}-1"', 'W/"{id}-1"', '"999-1", "{id}-1"', "*"])
def test_an_if_match_on_the_documented_pattern_is_taken(api, header):
    made = api.post("/api/v1/account", json={"name": "Acme"}).json
    r = api.patch(f"/api/v1/account/{made['id']}", json={"name": "Changed"},
                  headers={"If-Match": header.format(id=made["id"])})
    assert r.status_code == 200 and r.json["name"] == "Changed"


def test_ordering_a_true_false_field_is_a_400_naming_it_not_a_500(api):
    """contract/_export?auto_renew[gt]=yes failed in SQLAlchemy (no < on booleans): a 500."""
    spec = _document(api)
    param = next(p for p in spec["paths"]["/api/v1/contract"]["get"]["parameters"] if p["name"] == "auto_renew")
    assert "gt" not in param["schema"]["properties"] and "eq" in param["schema"]["properties"]
    for path in ("/api/v1/contract", "/api/v1/contract/_export"):
        r = api.get(f"{path}?auto_renew[gt]=yes")
        assert r.status_code == 400, r.data[:300]
        assert r.mimetype == "application/problem+json" and r.json["errors"][0]["field"] == "auto_renew"
    assert api.get("/api/v1/contract?auto_renew[eq]=yes").status_code == 200


def test_a_run_id_beyond_64_bits_is_no_run_not_a_500(api):
    """/_automation_runs/9223372036854775808 reached the database, which refuses the number (a 500)."""
    for method, path in (("get", "/api/v1/_automation_runs/{}"), ("post", "/api/v1/_automation_runs/{}/rerun")):
        r = getattr(api, method)(path.format(2**63))
        assert r.status_code == 404 and r.mimetype == "application/problem+json"
        assert getattr(api, method)(path.format(2**63 - 1)).status_code in (404, 409)
    assert api.get("/api/v1/_meta").status_code == 200


@pytest.mark.parametrize("query", ["trigger=", "automation=a%20b", "entity=nope", "status=", "entity="])
def test_a_run_log_filter_the_document_forbids_is_a_400_naming_it(api, query):
    """Filters the document types as names or enums were taken as given (an empty one meant none)."""
    name = query.split("=")[0]
    r = api.get(f"/api/v1/_automation_runs?{query}")
    assert r.status_code == 400 and r.json["errors"][0]["field"] == name
    assert api.get("/api/v1/_automation_runs?entity=account&status=dead&trigger=created").status_code == 200


def test_an_audit_kind_the_document_forbids_is_a_400(api):
    r = api.get("/api/v1/_audit?kind=%15")
    assert r.status_code == 400 and r.json["errors"][0]["field"] == "kind"
    assert api.get("/api/v1/_audit?kind=login").status_code == 200


def test_search_counts_the_length_of_q_as_sent(api):
    """The document allows at most 200 characters with two that are not spaces; the API measured q
    after stripping it, so 201 characters of which 3 are spaces passed."""
    assert api.get("/api/v1/_search", query_string={"q": "ab" + " " * 199}).status_code == 400
    assert api.get("/api/v1/_search", query_string={"q": " ab" + " " * 197}).status_code == 200
    assert api.get("/api/v1/_search", query_string={"q": " a "}).status_code == 400


@pytest.mark.parametrize("query", ["limit=5&limit=abc", "q=ab&q=cd"])
def test_a_parameter_given_twice_is_a_400_naming_it(api, query):
    """The second value was silently dropped (limit=5&limit=abc was a page of 5)."""
    path = "/api/v1/_search" if query.startswith("q") else "/api/v1/account"
    r = api.get(f"{path}?{query}")
    assert r.status_code == 400 and r.json["errors"][0]["field"] == query.split("=")[0]
    assert api.get("/api/v1/account?name[ne]=a&name[ne]=b").status_code == 200   # filters add up


def test_required_fields_are_never_null_in_the_document_and_null_is_refused(api):
    spec = _document(api)["components"]["schemas"]
    for schema in ("OpportunityCreate", "OpportunityUpdate"):
        for name in ("name", "account", "close_date", "stage"):
            assert "anyOf" not in spec[schema]["properties"][name], (schema, name)
    made = api.post("/api/v1/account", json={"name": "Acme"}).json
    r = api.patch(f"/api/v1/account/{made['id']}", json={"name": None})
    assert r.status_code == 422 and r.json["errors"][0]["field"] == "name"


def test_the_document_types_ids_as_64_bit_and_bulk_bodies_as_the_api_reads_them(api):
    spec = _document(api)
    record_id = spec["paths"]["/api/v1/account/{id}"]["get"]["parameters"][0]["schema"]
    assert record_id == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    bulk = spec["components"]["schemas"]["AccountBulk"]
    assert bulk["properties"]["records"]["maxItems"] == 10_000
    assert bulk["then"]["required"] == ["key"]                       # an upsert names its key
    assert api.post("/api/v1/account/_bulk", json={"records": [], "mode": "upsert"}).status_code == 400
    assert api.get(f"/api/v1/account/{2**63}").status_code == 404


def test_a_version_filter_beyond_the_32_bit_column_is_a_400_not_a_500(api):
    """order_line?version[lt]=-94810223141804595 reached PostgreSQL, whose INTEGER column refused the
    number (a 500); SQLite took it. Now the value is checked against the column on both."""
    for value in (2**31, -(2**31) - 1, 10**17):
        r = api.get(f"/api/v1/order_line?version[lt]={value}")
        assert r.status_code == 400 and r.json["errors"][0]["field"] == "version", r.data[:300]
    assert api.get(f"/api/v1/order_line?version[lt]={2**31 - 1}").status_code == 200
