"""Hook specifications and the plugin manager.

Plugins are Python modules or packages found by entry point (group ``crm_engine``) or in a local
plugins folder, registered through pluggy. The engine's own field types are registered by the
core plugin (``engine.core_plugin``) through the same hooks, so there is one way to extend.

Hooks are called with keyword arguments; an implementation may accept any subset of them, so
adding an argument to a hook never breaks an existing plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "crm_engine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- what plugins contribute, besides plain values -------------------------------------------

@dataclass(frozen=True)
class DocumentKind:
    """A kind of metadata document (``dashboard: sales``): the key that names it, its JSON Schema,
    and the check run on every document of the kind once the model is built: ``check(model=,
    documents=, problems=, functions=, plugins=)`` adds ``problems.add(location, message)``."""

    name: str
    schema: Path
    check: Callable[..., None] | None = None


@dataclass(frozen=True)
class NavEntry:
    """An entry of the web UI's navigation: a label (``{lang: text}``), the URL it links to (a path,
    e.g. from ``url_for``; not an endpoint name), an icon (not drawn by the current templates);
    entries of one ``group`` (its English name, which the UI translates) share a drop-down menu."""

    key: str
    label: Mapping[str, str]
    url: str
    icon: str = ""
    order: int = 100
    group: str = ""


@dataclass(frozen=True)
class Panel:
    """A block of a page (the home page, a record page): a title and its HTML, already escaped."""

    key: str
    title: str
    html: str
    order: int = 100


@dataclass(frozen=True)
class TimelineEntry:
    """One event on a record page's timeline: when (an aware datetime), a kind (``approval``,
    ``conversion``...; its icon), a text already in the user's language, an optional link."""

    at: Any
    kind: str
    text: str
    url: str = ""
    by: str = ""


@dataclass(frozen=True)
class RecordAction:
    """A button on a record page: a label, the URL it posts to (or opens), and its style (Bootstrap's:
    ``secondary``, ``outline-primary``...). A post sends the CSRF token and the record's ``version``;
    the button carries ``data-<kind>="<key>"`` (``kind`` also its class) for scripts and tests."""

    key: str
    label: str
    url: str
    method: str = "post"
    style: str = "secondary"
    order: int = 100
    kind: str = "action"
    value: str = ""   # a transition's target state: the record page's path makes that state clickable
    #: On a list (``crm_list_actions``): False for an action that needs no selected records (Import),
    #: drawn beside New instead of in the bar that appears once records are selected.
    selection: bool = True


@dataclass(frozen=True)
class ScheduledJob:
    """Work the scheduler runs on every tick: ``run(runtime, now)``; ``every`` seconds at most.
    ``prepare(runtime, now)`` runs once before the first pass (catch-up); ``finish(runtime, timeout)``
    after a one-off pass (``crm scheduler --once``) waits for the work ``run`` handed off."""

    name: str
    run: Callable[..., Any]
    every: float = 30.0
    prepare: Callable[..., Any] | None = None
    finish: Callable[..., Any] | None = None


class Hooks:
    """Every extension point of the engine, by family. Each has a test and an entry in docs/plugins.md.

    Every hook is called with keyword arguments only; an implementation may accept any subset."""

    # -- registries (once per boot, before the metadata is loaded) --------------------------------
    @hookspec
    def crm_field_types(self) -> list:
        """Return field-type objects (subclasses of ``engine.fields.FieldType``) to register."""

    @hookspec
    def crm_formula_functions(self) -> list:
        """Return formula functions (``engine.rules.Function`` objects) to register in the formula language."""

    @hookspec
    def crm_actions(self) -> list:
        """Return automation action types (``engine.workflow.ActionType`` objects) to register."""

    @hookspec
    def crm_action_functions(self) -> dict:
        """Return ``{name: function}`` for the ``call`` action: ``function(act, **args)``."""

    @hookspec
    def crm_automation_triggers(self) -> list:
        """Return names of automation triggers this plugin fires (beyond create, update, delete, schedule)."""

    # -- metadata ---------------------------------------------------------------------------------
    @hookspec
    def crm_metadata_dirs(self) -> list:
        """Return folders of YAML/JSON metadata to load as this plugin's layer."""

    @hookspec
    def crm_document_kinds(self) -> list:
        """Return ``DocumentKind`` objects: metadata document kinds with their schema and check."""

    @hookspec
    def crm_tables(self, metadata: Any) -> None:
        """Add this plugin's own tables (``sa.Table(name, metadata, ...)``, names ``_crm_<plugin>_...``) to
        ``metadata``; the migrations create and change them like the engine's."""

    @hookspec
    def crm_model_checks(self) -> list:
        """Return checks run on the built model: ``check(model=, declared=, roles=, problems=, functions=, plugins=)``
        (``declared``: entities and ``roles``: roles as written, to report at file:line; any subset of the keywords)."""

    # -- runtime ----------------------------------------------------------------------------------
    @hookspec
    def crm_startup(self, runtime: Any) -> None:
        """After the runtime has booted: build what this plugin keeps (``runtime.extensions[name]``)."""

    @hookspec
    def crm_shutdown(self, runtime: Any) -> None:
        """When the runtime closes: release what ``crm_startup`` built."""

    @hookspec
    def crm_scheduled_jobs(self, runtime: Any) -> list:
        """Return ``ScheduledJob`` objects the scheduler runs on its ticks."""

    @hookspec
    def crm_cli_commands(self) -> list:
        """Return click commands (or groups) to add to the ``crm`` command (``@click.pass_obj``: ``obj.runtime()``)."""

    # -- web: routes and the document of the API ---------------------------------------------------
    @hookspec
    def crm_blueprints(self, runtime: Any) -> list:
        """Return Flask blueprints to mount: API routes (under ``/api/v1``) and UI screens."""

    @hookspec
    def crm_openapi(self, runtime: Any) -> dict:
        """Return an OpenAPI fragment (``paths``, ``components``, ``tags``) merged into the document."""

    @hookspec
    def crm_template_dirs(self) -> list:
        """Return folders of Jinja templates for the web UI: ``ui/widgets/<widget>.html`` draws the
        input of a field type whose ``widget`` is that name; a template with the path of one of the
        engine's replaces it."""

    # -- web: what the screens show ----------------------------------------------------------------
    @hookspec
    def crm_nav_entries(self, runtime: Any, access: Any) -> list:
        """Return ``NavEntry`` objects for the navigation of the signed-in user (``access``)."""

    @hookspec
    def crm_home_panels(self, runtime: Any, access: Any) -> list:
        """Return ``Panel`` objects for the home page of the signed-in user."""

    @hookspec
    def crm_record_actions(self, runtime: Any, entity: Any, record: dict, access: Any) -> list:
        """Return ``RecordAction`` objects: buttons on the page of ``record``."""

    @hookspec
    def crm_record_lock(self, runtime: Any, entity: Any, record: dict, access: Any) -> str | None:
        """Return why ``record`` is read-only for this user now (a text shown to them), or None."""

    @hookspec
    def crm_list_actions(self, runtime: Any, entity: Any, access: Any) -> list:
        """Return ``RecordAction`` objects: buttons on the list of ``entity`` acting on the selected records."""

    @hookspec
    def crm_record_panels(self, runtime: Any, entity: Any, record: dict, access: Any) -> list:
        """Return ``Panel`` objects shown on the page of ``record``."""

    @hookspec
    def crm_record_timeline(self, runtime: Any, entity: Any, record: dict, access: Any) -> list:
        """Return ``TimelineEntry`` objects: what happened to ``record`` (approvals, conversions...)
        that ``access``'s user may read, merged into the record page's timeline."""

    @hookspec(firstresult=True)
    def crm_send_mail(self, runtime: Any, to: list, subject: str, body: str, key: str) -> bool | None:
        """Send one plain-text message (the record page's e-mail composer) through the engine's mail
        settings; ``key`` makes its Message-ID. Return True when sent, None when not yours."""

    # -- documents --------------------------------------------------------------------------------
    @hookspec(firstresult=True)
    def crm_attachments(self, entity: Any, record: dict, name: str, lang: str) -> tuple | None:
        """Return ``(filename, content_type, bytes)``: the file ``name`` made from ``record`` (e.g. a
        document's PDF) for the ``send_email`` action's ``attach:``, or None when ``name`` is not yours."""

    # -- files ------------------------------------------------------------------------------------
    @hookspec
    def crm_scan_file(self, name: str, mime: str, path: str) -> str | None:
        """Scan an upload before it is stored (a virus scanner): ``path`` is a temporary copy of its
        bytes, ``name`` its (safe) name, ``mime`` the sniffed type. Return None to let it in, or the
        reason it is refused (shown to the user); any refusal blocks the upload."""

    # -- record lifecycle (called by the record service, inside or after its transaction) ----------
    @hookspec
    def crm_watches_writes(self, entity: Any) -> bool:
        """Return True when this plugin's write hooks act on writes of ``entity`` (bulk then runs them per record)."""

    @hookspec
    def crm_before_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any,
                         conn: Any, errors: list, state: dict) -> None:
        """Before a create, update or delete is written; may change ``record``, add to ``errors`` or raise ``ValidationFailed``."""

    @hookspec
    def crm_before_write_chunk(self, entity: Any, items: list, context: Any, conn: Any) -> None:
        """Before a chunk of a bulk write is checked record by record: ``items`` are dicts with
        ``event``, ``record``, ``old``, ``errors`` and ``state`` (the ``state`` the record's
        ``crm_before_write`` and ``crm_after_write`` get). A plugin checks the whole chunk at once
        (one query, not one per record), adds to an item's ``errors`` to refuse that record (its
        other checks are then skipped, as when ``crm_before_write`` raises) and may mark the
        ``state`` so its ``crm_before_write`` does not check the record again."""

    @hookspec
    def crm_after_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any,
                        conn: Any, state: dict) -> None:
        """After a create, update or delete is written, in the same transaction."""

    @hookspec
    def crm_after_commit(self, event: str, entity: Any, record: dict, old: dict | None, context: Any) -> None:
        """After the transaction of a create, update or delete has committed."""


#: The platform's own features, registered first, through the same hooks as any plugin (the way
#: Datasette's own features are plugins): ``{name: module}``. Named by string so that this module,
#: at the bottom of the layers, imports none of them.
DEFAULT_PLUGINS: dict[str, str] = {
    "core": "engine.core_plugin",
    "core.security": "engine.security.guards",
    "workflow": "engine.workflow.plugin",
    "workflow.kinds": "engine.workflow.kinds",         # its metadata: loads even when "workflow" is off
    "dashboards": "engine.dashboards.plugin",
    "dashboards.kinds": "engine.dashboards.kinds",
    "follow_up": "engine.processes.follow_up.plugin",
    "follow_up.kinds": "engine.processes.follow_up.kinds",
    "conversions": "engine.processes.conversions.plugin",
    "conversions.kinds": "engine.processes.conversions.kinds",
    "pools": "engine.processes.pools.plugin",
    "pools.kinds": "engine.processes.pools.kinds",
    "approvals": "engine.processes.approvals.plugin",
    "approvals.kinds": "engine.processes.approvals.kinds",
    "documents": "engine.documents.plugin",
    "documents.kinds": "engine.documents.kinds",
    "imports": "engine.dataio.importing.plugin",
    "imports.ui": "engine.dataio.importing.ui_plugin",   # the import wizard (screens, list button, history)
    "duplicates": "engine.dataio.duplicates.plugin",
    "duplicates.kinds": "engine.dataio.duplicates.kinds",
    "merge": "engine.dataio.merge.plugin",
    "quality": "engine.dataio.quality.plugin",
    "files": "engine.files.plugin",
    "agenda": "engine.agenda.plugin",
    "agenda.kinds": "engine.agenda.kinds",
    "record_page.kinds": "engine.ui.record_page.kinds",
}


def make_plugin_manager(plugin_dirs: tuple[Path, ...] = (), *, entry_point_plugins: bool = True,
                        extra: tuple[object, ...] = (), disabled: tuple[str, ...] = ()) -> pluggy.PluginManager:
    """A manager with the default plugins, entry-point plugins, folder plugins and ``extra`` objects,
    less the plugins named in ``disabled`` (``CRM_DISABLED_PLUGINS``; a name no plugin has is an error)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(Hooks)
    for name, module in DEFAULT_PLUGINS.items():
        pm.register(importlib.import_module(module), name=name)
    if entry_point_plugins:
        for ep in entry_points(group=PROJECT):
            if pm.get_plugin(ep.name) is None:
                pm.register(ep.load(), name=ep.name)
    for folder in plugin_dirs:
        for name, module in _folder_plugins(Path(folder)):
            if pm.get_plugin(name) is None:
                pm.register(module, name=name)
    for obj in extra:
        pm.register(obj)
    for name in disabled:
        if pm.get_plugin(name) is None:
            known = ", ".join(sorted(n for n, _ in pm.list_name_plugin() if n))
            raise ValueError(f"CRM_DISABLED_PLUGINS names {name!r}, which is no plugin here (plugins: {known})")
        pm.unregister(name=name)
    return pm


def _folder_plugins(folder: Path):
    """Modules ``folder/x.py`` and packages ``folder/x/__init__.py`` (or ``folder/x/x/``)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        if path.suffix == ".py":
            yield path.stem, _import(path.stem, path)
        elif (path / "__init__.py").is_file():
            yield path.name, _import(path.name, path / "__init__.py")
        elif (path / path.name / "__init__.py").is_file():  # an installable package's source tree
            yield path.name, _import(path.name, path / path.name / "__init__.py")


def _import(name: str, file: Path):
    qualified = f"crm_plugins.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, file,
                                                  submodule_search_locations=[str(file.parent)] if file.name == "__init__.py" else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:   # as importlib does: a module that failed to load is not kept half-made
        del sys.modules[qualified]
        raise
    return module


def plugin_layers(pm: pluggy.PluginManager) -> list[tuple[str, Path]]:
    """Metadata layers contributed by plugins, in registration order."""
    layers = []
    for impl in pm.hook.crm_metadata_dirs.get_hookimpls():
        for folder in impl.function() or ():
            layers.append((f"plugin:{impl.plugin_name}", Path(folder)))
    return layers


def has_impls(pm: pluggy.PluginManager, hook: str) -> bool:
    return bool(getattr(pm.hook, hook).get_hookimpls())
