"""The web UI's Chinese catalog covers every interface string.

Interface strings are the ``_("...")`` calls in ``engine/ui/**.py`` and ``engine/ui/templates/**.html``,
and in the screens of the default plugins that draw in the UI (``engine/workflow``, ``engine/dashboards``, ``engine/processes``, ``engine/documents``, ``engine/dataio``, ``engine/files``, ``engine/agenda``)
(found with Babel's extraction, configured in ``babel.cfg``), plus the strings only known at run time
and passed through ``_()`` when a page is drawn: module names (``_(module|capitalize)``), the
``SYSTEM_LABELS`` of ``engine/ui/present.py`` and the operator labels of ``engine/ui/filters.py``.
Every one must have a non-empty, non-fuzzy translation in
``engine/ui/translations/zh/LC_MESSAGES/messages.po``, with the same ``%(name)s`` placeholders.

After adding or changing ``_()`` strings, refresh the catalog from the repository root with::

    .venv/bin/python -m tests.test_ui_i18n

It writes ``engine/ui/translations/messages.pot`` exactly as
``.venv/bin/pybabel extract -F babel.cfg -o engine/ui/translations/messages.pot engine/ui engine/workflow
engine/dashboards engine/processes engine/documents engine/dataio engine/files engine/agenda`` does, then
merges it into the zh ``messages.po`` like ``pybabel update`` (new strings come in untranslated or
fuzzy, so this test names them until they are translated), except that the run-time strings and the
calls pybabel cannot see (``_()`` inside an f-string on Python < 3.12) are kept as live entries. A
plain ``pybabel update`` would mark those obsolete (``#~``), and this test would fail on them.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

from engine.plugins import make_plugin_manager
from engine.runtime import load_model_from
from engine.security.profile import NOTIFICATION_KINDS
from engine.security.web import MESSAGES as LOGIN_MESSAGES
from engine.settings import ROOT, SYSTEM_LAYER
from engine.ui.filters import OPERATORS
from engine.ui.i18n import CATALOGS, load_catalogs
from engine.ui.present import SYSTEM_LABELS

UI_DIR = ROOT / "engine" / "ui"
#: The UI and the default plugins whose screens draw in it (their strings are in the UI's catalogs).
UI_DIRS = (UI_DIR, ROOT / "engine" / "workflow", ROOT / "engine" / "dashboards", ROOT / "engine" / "processes",
           ROOT / "engine" / "documents", ROOT / "engine" / "dataio", ROOT / "engine" / "files",
           ROOT / "engine" / "agenda")
BABEL_CFG = ROOT / "babel.cfg"
POT = CATALOGS / "messages.pot"
ZH_PO = CATALOGS / "zh" / "LC_MESSAGES" / "messages.po"
INDUSTRIES = ROOT / "configs" / "industries"
#: Names the views call the translation function by (``translate as _`` in the engine/ui modules).
GETTEXT_NAMES = {"_", "translate", "gettext"}
#: The module of an entity without one, as the navigation shows it (``ent.module or "other"`` in engine/ui/views.py).
FALLBACK_MODULE = "other"
RUNTIME_COMMENT = "run-time string"
UNSEEN_COMMENT = "a _() call pybabel extract does not see (in an f-string); kept by tests/test_ui_i18n.py"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdrifx]")
#: The placeholders of the engine's messages (``Msg("{field} ...", field=...)``, engine/messages.py).
BRACE = re.compile(r"\{(\w*)[^{}]*\}")
ENGINE_DIR = ROOT / "engine"


# -- what must be translated --------------------------------------------------------------------

def extracted() -> dict[str | tuple[str, ...], list[str]]:
    """{msgid: ["file:line", ...]} of what ``pybabel extract -F babel.cfg ... engine/ui`` finds."""
    with BABEL_CFG.open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle, filename=str(BABEL_CFG))
    found: dict[str, list[str]] = {}
    for folder in UI_DIRS:
        for filename, lineno, message, _comments, _context in extract_from_dir(str(folder), method_map, options_map):
            # ngettext gives a tuple: kept under its tuple, which test_no_plural_messages rejects
            found.setdefault(message, []).append(f"{_where(folder, filename)}:{lineno}")
    return found


def unseen_calls() -> dict[str, list[str]]:
    """``_("literal")`` calls in engine/ui/**.py that Babel's Python extractor misses.

    Python 3.11 tokenizes an f-string as one string, so ``f"{_('Give the view a name.')}"`` is
    invisible to ``pybabel extract``; the syntax tree sees it. ``translate("...")`` (the function's
    own name) is not a default pybabel keyword either."""
    seen = set(extracted())
    found: dict[str, list[str]] = {}
    for path in sorted(p for folder in UI_DIRS for p in folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in GETTEXT_NAMES
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                text = node.args[0].value
                if text not in seen:
                    found.setdefault(text, []).append(f"{_where(path.parent, path.name)}:{node.lineno}")
    return found


def _where(folder, filename) -> str:
    """A file's place as the catalog names it: relative to engine/ui (``../workflow/ui.py`` beyond it)."""
    relative = (folder / filename).relative_to(UI_DIR.parent)
    return str(relative.relative_to("ui")) if relative.parts[0] == "ui" else f"../{relative}"


def model_modules() -> set[str]:
    """The ``module`` of every entity of the base CRM and of each industry layer on top of it."""
    base = [("system", SYSTEM_LAYER), ("base", INDUSTRIES / "base")]
    stacks = [base] + [base + [(f"industry:{d.name}", d)] for d in sorted(INDUSTRIES.iterdir())
                       if d.is_dir() and d.name != "base"]
    modules = set()
    for layers in stacks:
        modules |= {ent.module for ent in load_model_from(make_plugin_manager(entry_point_plugins=False), layers).entities.values() if ent.module}
    return modules


def runtime_strings(modules: set[str] | None = None) -> dict[str, str]:
    """{msgid: where it comes from} of the strings ``_()`` gets only when a page is drawn."""
    found: dict[str, str] = {}
    for module in sorted((model_modules() if modules is None else modules) | {FALLBACK_MODULE}):
        found.setdefault(module.capitalize(), f"module {module!r} (_(module|capitalize))")   # Jinja's capitalize
    for name, label in SYSTEM_LABELS.items():
        found.setdefault(label, f"engine/ui/present.py SYSTEM_LABELS[{name!r}]")
    for op, (label, _formula) in OPERATORS.items():
        found.setdefault(label, f"engine/ui/filters.py OPERATORS[{op!r}]")
    for message in LOGIN_MESSAGES:
        found.setdefault(message, "engine/security/web.py MESSAGES (login.html shows _(error))")
    for kind, (label, _defaults) in NOTIFICATION_KINDS.items():
        found.setdefault(label, f"engine/security/profile.py NOTIFICATION_KINDS[{kind!r}]")
    for msgid, where in engine_messages().items():
        found.setdefault(msgid, f"Msg() in {', '.join(where)}")
    return found


def engine_messages() -> dict[str, list[str]]:
    """{msgid: ["file:line", ...]} of every ``Msg("literal", ...)`` in the engine: the messages the
    record service, the field types, security and the capabilities give people (translated at the
    edge: engine.ui.i18n.say, the API's error mapping)."""
    found: dict[str, list[str]] = {}
    for path in sorted(ENGINE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Msg"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found.setdefault(node.args[0].value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def read_zh() -> Catalog:
    with ZH_PO.open("rb") as handle:
        return read_po(handle)


# -- the tests ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zh() -> Catalog:
    return read_zh()


@pytest.fixture(scope="module")
def runtime() -> dict[str, str]:
    return runtime_strings()


def _missing(catalog: Catalog, wanted: dict[str, object]) -> list[str]:
    problems = []
    for msgid, where in wanted.items():
        message = catalog.get(msgid)
        if message is None:
            problems.append(f"{msgid!r} ({where}): not in messages.po")
        elif not message.string:
            problems.append(f"{msgid!r} ({where}): no translation")
        elif message.fuzzy:
            problems.append(f"{msgid!r} ({where}): fuzzy (check it, then remove the fuzzy flag)")
    return problems


def test_no_plural_messages():
    plurals = {k: v for k, v in extracted().items() if not isinstance(k, str)}
    assert not plurals, ("engine.ui.i18n.load_catalogs reads single strings only (plural entries are skipped): "
                         f"use _() with %(n)s instead of ngettext: {plurals}")


def test_every_extracted_string_is_translated(zh):
    wanted = {k: v for k, v in extracted().items() if isinstance(k, str)}
    assert len(wanted) > 50, "the extraction found almost nothing: is babel.cfg right?"
    problems = _missing(zh, {k: ", ".join(v) for k, v in wanted.items()})
    assert not problems, "UI strings without a Chinese translation (run `.venv/bin/python -m tests.test_ui_i18n`, " \
                         "then translate them in messages.po):\n" + "\n".join(problems)


def test_calls_pybabel_cannot_see_are_translated(zh):
    problems = _missing(zh, {k: ", ".join(v) for k, v in unseen_calls().items()})
    assert not problems, "\n".join(problems)


def test_every_runtime_string_is_translated(zh, runtime):
    assert {"Sales", "Service", "Marketing", "Admin"} <= set(runtime)
    assert set(SYSTEM_LABELS.values()) <= set(runtime)
    assert {label for label, _f in OPERATORS.values()} <= set(runtime)
    problems = _missing(zh, runtime)
    assert not problems, "Run-time UI strings without a Chinese translation:\n" + "\n".join(problems)


def test_the_checks_catch_a_new_untranslated_string(zh):
    assert _missing(zh, {"A string nobody translated": "here"}) == [
        "'A string nobody translated' (here): not in messages.po"]
    assert "Yes" in extracted()                               # present.py: _("Yes")
    assert "Give the view a name." in {**extracted(), **unseen_calls()}   # views.py, inside an f-string
    assert "Catalog" in runtime_strings({"catalog"}) and "Other" in runtime_strings(set())


def test_placeholders_are_kept(zh):
    problems = []
    for message in zh:
        if not message.id or not message.string:
            continue
        source, target = message.id, message.string
        if Counter(PLACEHOLDER.findall(source)) != Counter(PLACEHOLDER.findall(target)):
            problems.append(f"{source!r} -> {target!r}: placeholders differ")
            continue
        # Views format with `%` and Jinja's newstyle gettext always does `rv % variables`: a stray % breaks both.
        values = {name: "x" for name in PLACEHOLDER.findall(source)}
        try:
            target % values
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{source!r} -> {target!r}: {exc}")
    assert not problems, "\n".join(problems)


def brace_problem(source: str, target: str) -> str | None:
    """Why the translation ``target`` of an engine message ``source`` would not format as it does:
    a placeholder dropped, renamed or added, or a stray brace."""
    if Counter(BRACE.findall(source)) != Counter(BRACE.findall(target)):
        return "{placeholders} differ"
    values = {name: "x" for name in BRACE.findall(source)}
    try:
        target.format(**values)
    except (ValueError, KeyError, IndexError) as exc:
        return f"does not format: {exc!r}"
    return None


def test_engine_message_placeholders_are_kept(zh):
    messages = engine_messages()
    assert {"is required", "your role does not allow {operation} on {entity}"} <= set(messages)
    problems = []
    for msgid in messages:
        message = zh.get(msgid)
        if message is not None and message.string:
            why = brace_problem(msgid, message.string)
            if why:
                problems.append(f"{msgid!r} -> {message.string!r}: {why}")
    assert not problems, "\n".join(problems)


def test_the_placeholder_check_catches_a_dropped_or_renamed_one():
    source = "{value} is not one of: {options}"
    assert brace_problem(source, "{value} 不是以下之一：{options}") is None
    assert brace_problem(source, "不是以下之一：{options}")                 # dropped
    assert brace_problem(source, "{值} 不是以下之一：{options}")             # renamed
    assert brace_problem(source, "{value} 不是以下之一：{options} {")       # a stray brace


def test_engine_messages_come_out_in_chinese(crm):
    from engine.messages import Msg, localize

    served = load_catalogs()["zh"]
    say = lambda text: localize(text, lambda m: served.get(m, m))   # noqa: E731
    assert say(Msg("is required")) == served["is required"]
    assert "sales" in say(Msg("only {roles} may {transition}", roles="sales", transition="win"))
    assert say("is required") == served["is required"]                       # a fixed text, looked up whole
    assert say("no such text anywhere") == "no such text anywhere"


def test_catalog_header(zh):
    assert str(zh.locale) == "zh_Hans"
    assert zh.num_plurals == 1
    assert "nplurals=1" in zh.plural_forms


def test_load_catalogs_serves_the_translations(zh, runtime):
    served = load_catalogs().get("zh")
    assert served, "engine.ui.i18n.load_catalogs() found no zh catalog"
    wanted = {k for k in extracted() if isinstance(k, str)} | set(unseen_calls()) | set(runtime)
    translated = {m: zh[m].string for m in wanted if m in zh and zh[m].string and not zh[m].fuzzy}
    assert len(translated) > 50
    wrong = sorted(m for m, text in translated.items() if served.get(m) != text)
    assert not wrong, f"not served as in messages.po: {wrong}"
    assert served["Save"] == "保存" and served["Sign out"] == "退出登录"


def test_a_page_renders_in_chinese(crm):
    from engine.app import create_app

    client = create_app(runtime=crm).test_client()
    page = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert "登录" in page and "密码" in page and "Sign in" not in page
    page = client.get("/login", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Sign in" in page and "登录" not in page


# -- refreshing the catalog ---------------------------------------------------------------------

def refresh() -> tuple[int, list[str]]:
    """Write messages.pot (as pybabel extract) and merge it into the zh messages.po (as pybabel
    update, keeping run-time strings live). Returns (number of entries, msgids needing work)."""
    import os

    from babel.messages.frontend import CommandLineInterface

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        CommandLineInterface().run(["pybabel", "-q", "extract", "-F", "babel.cfg", "-o",
                                    str(POT.relative_to(ROOT)), *(str(d.relative_to(ROOT)) for d in UI_DIRS)])
    finally:
        os.chdir(here)
    with POT.open("rb") as handle:
        template = read_po(handle)
    for msgid, where in unseen_calls().items():
        template.add(msgid, locations=[(f"engine/ui/{w.rsplit(':', 1)[0]}", int(w.rsplit(':', 1)[1])) for w in where],
                     auto_comments=[UNSEEN_COMMENT], flags=["python-format"] if PLACEHOLDER.search(msgid) else [])
    for msgid, where in runtime_strings().items():
        if msgid not in template:
            template.add(msgid, auto_comments=[RUNTIME_COMMENT, where])
    catalog = read_zh()
    catalog.update(template)
    with ZH_PO.open("wb") as handle:
        write_po(handle, catalog, width=100)
    todo = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
    return len([m for m in catalog if m.id]), todo


if __name__ == "__main__":
    count, todo = refresh()
    print(f"{ZH_PO.relative_to(ROOT)}: {count} strings, {len(todo)} to translate")
    for msgid in todo:
        print(f"  {msgid!r}")
    sys.exit(1 if todo else 0)
