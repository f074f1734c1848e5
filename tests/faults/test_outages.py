"""Outages: a database that cannot be reached is a 503 to retry (problem+json with Retry-After on the
API, a JSON status on /health), never a 500, and the server answers again once it is back."""

from __future__ import annotations

import pytest

from engine.app import create_app
from engine.runtime import Runtime

from .servers import free_port

DOWN = "postgresql+psycopg://crm@127.0.0.1:{port}/crm"   # a closed port: nothing listens there


@pytest.fixture
def app_without_database(settings):
    rt = Runtime.boot(settings.with_(database_url=DOWN.format(port=free_port())))
    yield create_app(runtime=rt).test_client()
    rt.close()


@pytest.mark.parametrize("method, path, body", [
    ("get", "/api/v1/account", None),
    ("get", "/api/v1/account/1", None),
    ("post", "/api/v1/account", {"name": "Lost?"}),
    ("get", "/api/v1/_search?q=acme", None),
])
def test_an_api_call_without_its_database_is_a_503_to_retry(app_without_database, method, path, body):
    answer = getattr(app_without_database, method)(path, json=body, headers={"Authorization": "Bearer crm_any"})
    assert answer.status_code == 503
    assert answer.mimetype == "application/problem+json"
    assert answer.get_json()["type"].endswith("/database-unavailable")
    assert answer.headers["Retry-After"].isdigit()


def test_health_says_the_database_is_unavailable(app_without_database):
    answer = app_without_database.get("/health")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "database unavailable"


def test_the_same_server_answers_again_once_the_database_is_there(crm):
    client = create_app(runtime=crm).test_client()
    assert client.get("/health").status_code == 200
    crm.db.engine.dispose()   # every pooled connection gone, as after a database restart
    assert client.get("/health").status_code == 200
