"""Helpers of the server-side UI tests (tests/test_ui_*.py): a seeded site with users of known
passwords and signed-in Flask test clients that send the session's CSRF token with every POST.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from engine.security.passwords import set_password
from engine.storage.records import Context

SYSTEM = Context(system=True)
UNIT = 5                       # demo records: ratio x UNIT per entity
PASSWORD = "correct horse 1"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no csrf_token input"
    return found.group(1)


class Browser:
    """A Flask test client signed in as one user (or anonymous until ``login``)."""

    def __init__(self, app):
        self.client = app.test_client()
        self.csrf = ""

    def login(self, email: str, password: str = PASSWORD) -> "Browser":
        self.csrf = csrf_of(self.client.get("/login").get_data(as_text=True))
        r = self.client.post("/login", data={"email": email, "password": password, "csrf_token": self.csrf})
        assert r.status_code == 302, r.get_data(as_text=True)[-500:]
        self.csrf = csrf_of(self.client.get("/").get_data(as_text=True))   # login makes a new token
        return self

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, data: Any = None, *, csrf: bool = True, **kw):
        data = dict(data or {}) if not isinstance(data, list) else data
        if csrf:
            if isinstance(data, list):
                data = [*data, ("csrf_token", self.csrf)]
            else:
                data.setdefault("csrf_token", self.csrf)
        if isinstance(data, list):
            from werkzeug.datastructures import MultiDict
            data = MultiDict(data)
        return self.client.post(url, data=data, **kw)

    def post_json(self, url: str, body: Any, *, csrf: bool = True):
        return self.client.post(url, json=body, headers={"X-CSRF-Token": self.csrf} if csrf else {})

    def lang(self, code: str) -> None:
        r = self.post("/ui/lang", {"lang": code, "next": "/"})
        assert r.status_code == 302


@dataclass
class Site:
    rt: Any
    app: Any
    admin: dict
    sales: dict
    counts: dict
    team: str = "north"
    users: dict = None   # role -> a user of that role (admin and sales; shared_site: every role)

    @property
    def records(self):
        return self.rt.records

    def user(self, email: str, role: str, team: str | None = None, name: str | None = None) -> dict:
        made = self.records.create("user", {"name": name or email.split("@")[0].title(), "email": email,
                                            "role": role, "team": team}, context=SYSTEM)
        set_password(self.records, made["id"], PASSWORD)
        return made

    def browser(self, user: dict | None = None) -> Browser:
        b = Browser(self.app)
        return b.login(user["email"]) if user else b


def make_site(rt, *, seeded: bool = True) -> Site:
    from engine.app import create_app
    from engine.demo import seed

    counts = seed(rt.records, UNIT) if seeded else {}
    seeded_users = rt.records.query("user", order_by=("id",), limit=100)
    team = next((u["team"] for u in seeded_users if u.get("role") == "sales" and u.get("team")), None) or "north"
    site = Site(rt, create_app(runtime=rt), {}, {}, counts, team)
    site.admin = site.user("admin@example.com", "admin", name="Ada Admin")
    site.sales = site.user("sales@example.com", "sales", team=team, name="Sam Sales")
    site.users = {"admin": site.admin, "sales": site.sales}
    return site


@pytest.fixture
def site(crm) -> Site:
    """A seeded site of its own for a test that writes."""
    return make_site(crm)


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory, worker_id):
    """One seeded site for a whole module of tests that only read (on SQLite, or in a PostgreSQL
    schema of its own when DATABASE_URL says so, as ``tests/conftest.py`` does per test)."""
    import os

    import sqlalchemy as sa

    from engine.runtime import Runtime
    from engine.settings import Settings

    from .conftest import BASE_URL, ON_POSTGRES

    tmp = tmp_path_factory.mktemp("ui_site")
    admin_engine, schema = None, None
    if ON_POSTGRES:
        schema = f"ui_{worker_id}_{os.getpid()}_{tmp.name}".replace("-", "_").lower()
        admin_engine = sa.create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in BASE_URL else "?"
        url = f"{BASE_URL}{sep}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{tmp / 'crm.db'}"
    rt = Runtime.boot(Settings(database_url=url, backup_dir=tmp / "backups", var_dir=tmp, plugin_dirs=(),
                               entry_point_plugins=False, secret_key="test"))
    try:
        rt.migrate()
        site = make_site(rt)
        for role in sorted(rt.model.roles):
            if role not in site.users:
                site.users[role] = site.user(f"{role}.walker@example.com", role, team=site.team)
        yield site
    finally:
        rt.close()
        if admin_engine is not None:
            with admin_engine.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin_engine.dispose()


@pytest.fixture
def admin(site) -> Browser:
    return site.browser(site.admin)


def base_entities() -> list[str]:
    """Names of the base CRM's entities (system layer + base), read without a database."""
    from engine.plugins import make_plugin_manager
    from engine.runtime import load_model_from
    from engine.settings import ROOT, SYSTEM_LAYER

    model = load_model_from(make_plugin_manager(entry_point_plugins=False),
                            [("system", SYSTEM_LAYER), ("base", ROOT / "configs" / "industries" / "base")])
    return sorted(model.entities)


# -- reading pages -------------------------------------------------------------------------------

def esc(value) -> str:
    """``value`` as the templates escape it (Jinja's autoescape: ' is &#39;)."""
    from markupsafe import escape

    return str(escape(str(value)))


def text(response) -> str:
    return response.get_data(as_text=True)


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def input_value(page: str, name: str) -> str | None:
    """The value of the (first) input named ``name`` (unescaped), or None."""
    m = re.search(r'<input[^>]*\bname="%s"[^>]*>' % re.escape(name), page)
    if not m:
        return None
    v = re.search(r'\bvalue="([^"]*)"', m.group(0))
    return html.unescape(v.group(1)) if v else ""


def textarea_value(page: str, name: str) -> str | None:
    m = re.search(r'<textarea[^>]*\bname="%s"[^>]*>(.*?)</textarea>' % re.escape(name), page, re.S)
    if not m:
        return None
    value = html.unescape(m.group(1))
    return value[1:] if value.startswith("\n") else value   # as the HTML parser reads it


def selected_option(page: str, name: str) -> str | None:
    m = re.search(r'<select[^>]*\bname="%s"[^>]*>(.*?)</select>' % re.escape(name), page, re.S)
    if not m:
        return None
    s = re.search(r'<option value="([^"]*)"\s+selected', m.group(1))
    return html.unescape(s.group(1)) if s else ""


def row_ids(page: str) -> list[int]:
    """Ids of the list table's rows, in order."""
    body = page.split('id="records"', 1)[1]
    return [int(i) for i in re.findall(r'<tr data-id="(\d+)"', body)]


class _FormParser:
    """The fields a browser would submit from the first ``<form>`` matching a predicate."""

    def __init__(self, page: str, match):
        from html.parser import HTMLParser

        fields: list[tuple[str, str]] = []
        state = {"in": False, "depth": 0, "select": None, "multiple": False, "textarea": None, "buf": [],
                 "options": [], "done": False}

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if state["done"]:
                    return
                if tag == "form" and not state["in"] and match(a):
                    state["in"] = True
                    return
                if not state["in"]:
                    return
                if tag == "input":
                    name, kind = a.get("name"), (a.get("type") or "text").lower()
                    if not name or "disabled" in a or kind in ("submit", "button", "image", "reset", "file"):
                        return
                    if kind in ("checkbox", "radio"):
                        if "checked" in a:
                            fields.append((name, a.get("value", "on")))
                    else:
                        fields.append((name, a.get("value") or ""))
                elif tag == "select":
                    state["select"] = None if "disabled" in a else a.get("name")
                    state["multiple"] = "multiple" in a
                    state["options"] = []
                elif tag == "option" and state["select"]:
                    state["options"].append((a.get("value", ""), "selected" in a))
                elif tag == "textarea":
                    state["textarea"] = None if "disabled" in a else a.get("name")
                    state["buf"] = []

            def handle_endtag(self, tag):
                if not state["in"] or state["done"]:
                    return
                if tag == "form":
                    state["done"] = True
                elif tag == "select" and state["select"]:
                    chosen = [v for v, s in state["options"] if s]
                    if not chosen and not state["multiple"] and state["options"]:
                        chosen = [state["options"][0][0]]
                    fields.extend((state["select"], v) for v in chosen)
                    state["select"] = None
                elif tag == "textarea" and state["textarea"]:
                    value = "".join(state["buf"])
                    value = value[1:] if value.startswith("\n") else value   # the parser drops one leading newline
                    # and a browser sends a textarea's line breaks as CRLF
                    fields.append((state["textarea"], value.replace("\r\n", "\n").replace("\n", "\r\n")))
                    state["textarea"] = None

            def handle_data(self, data):
                if state["textarea"]:
                    state["buf"].append(data)

        p = P(convert_charrefs=True)
        p.feed(page)
        self.found = state["in"]
        self.fields = fields


def form_fields(page: str, match=lambda attrs: "record-form" in (attrs.get("class") or "")) -> list[tuple[str, str]]:
    """(name, value) pairs the matching form would submit as rendered (the record form by default)."""
    parsed = _FormParser(page, match)
    assert parsed.found, "no such form on the page"
    return parsed.fields
