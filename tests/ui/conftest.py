"""Browser tests: a live server of the app, Debian's Chromium driven through Playwright, screenshots.

Fixtures (see tests/ui/test_ui_smoke.py for a use of each):

- ``live_server`` (per test): the app served over HTTP on a free 127.0.0.1 port in a background
  thread, over the test's own database (SQLite file, or a PostgreSQL schema when DATABASE_URL says
  so), migrated and seeded with deterministic demo data (``UNIT`` = 10: ratio x 10 records per
  entity), with two users of known passwords: ``.admin`` (role admin) and ``.sales`` (role sales).
  Also ``.url``, ``.runtime``, ``.app``, ``.counts`` (records seeded per entity).
- ``browser`` (per xdist worker process): headless Chromium from ``/usr/bin/chromium`` (or
  ``CRM_CHROMIUM``). When it is missing (or playwright is), UI tests are skipped with a reason that
  names what is missing, or fail when ``CRM_REQUIRE_BROWSER=1`` (CI sets it).
  ``tests/ui/install_browser.sh`` (run by ``make test``) installs it.
- ``page``: a fresh context and page (1280x800, en-US); with ``live_server`` in the test, relative
  URLs work (``page.goto("/login")``). ``make_page(**context_options)`` makes more (another user,
  ``locale="zh-CN"``, ...). Every page is screenshotted when the test ends, to
  ``var/screenshots/<module>.<test>.png``; ``shot(page, "name")`` saves one on demand, to
  ``var/screenshots/<module>.<test>-name.png``.
- ``login(page, server, email, password)`` signs in through the ``/login`` form and waits for ``/``;
  ``login(page, server, server.admin)`` takes a user's own e-mail and password.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000    # Playwright's default (30 s) makes a broken page slow to report
UNIT = 10              # demo records: each entity seeds ratio x UNIT (`crm up` seeds with 50)
ADMIN_PASSWORD = "admin-pass-1"
SALES_PASSWORD = "sales-pass-1"
INSTALL_HINT = ("run `bash tests/ui/install_browser.sh` (as root), or "
                "`sudo apt-get install -y --no-install-recommends chromium fonts-noto-cjk`")


def browser_required() -> bool:
    return os.environ.get("CRM_REQUIRE_BROWSER", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str):
    """Fail (CRM_REQUIRE_BROWSER set, as in CI) or skip with ``reason``."""
    if browser_required():
        pytest.fail(f"CRM_REQUIRE_BROWSER is set and {reason}", pytrace=False)
    pytest.skip(reason)


# -- the live server ---------------------------------------------------------------------------

@dataclass(frozen=True)
class User:
    id: int
    email: str
    password: str
    role: str
    name: str


@dataclass
class LiveServer:
    url: str             # "http://127.0.0.1:PORT", no trailing slash
    runtime: Any         # engine.runtime.Runtime, migrated and seeded
    app: Any             # the Flask app being served
    admin: User
    sales: User
    counts: dict         # demo records seeded per entity

    @property
    def rt(self):
        return self.runtime


def _add_user(rt, email: str, name: str, role: str, password: str, team: str | None = None) -> User:
    """Create a user who can log in, as `crm user create` does."""
    from engine.security.passwords import set_password
    from engine.storage.records import Context

    made = rt.records.create("user", {"name": name, "email": email, "role": role, "team": team},
                             context=Context(system=True))
    set_password(rt.records, made["id"], password)
    return User(made["id"], email, password, role, name)


@pytest.fixture
def live_server(make_runtime):
    """The app over HTTP on a free port, on this test's own migrated and seeded database."""
    from werkzeug.serving import make_server

    from engine.app import create_app
    from engine.demo import seed

    rt = make_runtime()
    counts = seed(rt.records, UNIT)
    seeded = rt.records.query("user", order_by=("id",), limit=100)
    team = next((u["team"] for u in seeded if u.get("role") == "sales" and u.get("team")), None) or "north"
    admin = _add_user(rt, "admin@example.com", "Ada Admin", "admin", ADMIN_PASSWORD)
    sales = _add_user(rt, "sales@example.com", "Sam Sales", "sales", SALES_PASSWORD, team=team)
    app = create_app(runtime=rt)
    server = make_server("127.0.0.1", 0, app, threaded=True)   # port 0: the OS picks a free one
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},   # quick shutdown
                              name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", rt, app, admin, sales, counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    # make_runtime closes the runtime and tests/conftest.py drops the database afterwards


# -- the browser --------------------------------------------------------------------------------

def _cjk_font_present() -> bool:
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list"], check=False, capture_output=True, text=True, timeout=20).stdout
            return "noto sans cjk" in out.lower()
        except (OSError, subprocess.SubprocessError):
            pass
    return any(Path("/usr/share/fonts/opentype/noto").glob("NotoSansCJK*"))


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for this worker process (xdist: one per worker), closed at the end."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("the `playwright` Python package is not installed (`make install` installs the "
                     "test extras)")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"Chromium is not installed ({CHROMIUM} is missing): {INSTALL_HINT}")
    if not _cjk_font_present():
        warnings.warn(f"the Noto Sans CJK font is missing: Chinese renders as boxes in screenshots; "
                      f"{INSTALL_HINT}", stacklevel=1)
    pw = sync_playwright().start()
    try:
        launched = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Error as exc:
        pw.stop()
        _unavailable(f"Chromium ({CHROMIUM}) did not start: {str(exc).strip().splitlines()[0]}")
    try:
        yield launched
    finally:
        launched.close()
        pw.stop()


# -- pages and screenshots ------------------------------------------------------------------------

_shot_names: dict[int, str] = {}   # id(page) -> file stem of its test's screenshots


def _test_stem(node) -> str:
    """``<module>.<test name>``, safe as a file name: unique across modules and xdist workers."""
    module = Path(str(node.fspath)).stem
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{module}.{node.name}").strip("_")


def shot(page, name: str | None = None) -> Path:
    """Save a full-page PNG of ``page`` to var/screenshots/<module>.<test>[-<name>].png; return its path."""
    stem = _shot_names.get(id(page), "page")
    suffix = f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}" if name else ""
    path = SCREENSHOTS / f"{stem}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def make_page(browser, request):
    """``make_page(**context_options)`` -> a page in a fresh context; screenshotted and closed when
    the test ends (the first as <test>.png, later ones as <test>-2.png, ...)."""
    base_url = request.getfixturevalue("live_server").url if "live_server" in request.fixturenames else None
    stem = _test_stem(request.node)
    made: list = []

    def make(**options):
        options = {"viewport": VIEWPORT, "locale": "en-US", **options}
        if base_url and "base_url" not in options:
            options["base_url"] = base_url
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        made.append((context, page))
        _shot_names[id(page)] = stem if len(made) == 1 else f"{stem}-{len(made)}"
        return page

    yield make
    from playwright.sync_api import Error as PlaywrightError

    for context, page in made:
        try:
            if not page.is_closed():
                shot(page)
        except (PlaywrightError, OSError) as exc:   # a crashed page must not hide the test's own outcome
            warnings.warn(f"no final screenshot of {stem}: {exc}", stacklevel=1)
        finally:
            _shot_names.pop(id(page), None)
            context.close()


@pytest.fixture
def page(make_page):
    """A fresh browser context and page (1280x800); screenshotted and closed when the test ends."""
    return make_page()


def login(page, server: LiveServer, email: str | User, password: str | None = None):
    """Sign in through the form at /login and wait for the redirect to /; return the response of /.

    ``email`` may be a :class:`User` (``server.admin``), whose password is then used."""
    if isinstance(email, User):
        email, password = email.email, (password if password is not None else email.password)
    home = f"{server.url}/"
    page.goto(f"{server.url}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password or "")
    with page.expect_response(lambda r: r.url == home and r.request.resource_type == "document") as landed:
        page.click("form[action='/login'] [type=submit]")
    page.wait_for_url(home)
    return landed.value
