"""Icons come from the heroicons package as inline SVG; every icon an entity of a shipped industry
declares is one the set draws (not the fallback square)."""

from pathlib import Path

import yaml

from engine.ui.icons import icon, known

pytest_plugins = ("tests.ui_kit",)   # the fixtures site and admin

ROOT = Path(__file__).resolve().parents[1]


def test_icon_is_inline_svg_hidden_from_screen_readers():
    svg = str(icon("building", size=16))
    assert svg.startswith("<svg") and 'aria-hidden="true"' in svg and 'width="16"' in svg


def test_unknown_icon_draws_the_fallback_instead_of_failing():
    assert not known("no-such-icon")
    assert str(icon("no-such-icon")) == str(icon("squares-2x2"))


def test_every_declared_entity_icon_is_in_the_set():
    declared = {}
    for f in (ROOT / "configs").rglob("*.yaml"):
        docs = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        doc = docs[0] if len(docs) == 1 else None
        if isinstance(doc, dict) and doc.get("entity") and doc.get("icon"):
            declared[f"{f.relative_to(ROOT)}"] = doc["icon"]
    assert declared
    assert {f: name for f, name in declared.items() if not known(name)} == {}


def test_htmx_is_served_by_the_app_and_sends_the_csrf_token(site, admin):
    r = admin.get("/ui/static/vendor/htmx-2.0.11.min.js")
    assert r.status_code == 200 and b"htmx" in r.data[:2000]
    home = admin.get("/").get_data(as_text=True)
    assert "vendor/htmx-2.0.11.min.js" in home and f'"X-CSRF-Token": "{admin.csrf}"' in home
