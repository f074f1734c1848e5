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
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "crm_engine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Hooks:
    """Every extension point of the engine. Each has a test and an entry in docs/plugins.md."""

    # -- registries -------------------------------------------------------------------------
    @hookspec
    def crm_field_types(self) -> list:
        """Return field-type objects (subclasses of ``engine.fields.FieldType``) to register."""

    @hookspec
    def crm_metadata_dirs(self) -> list:
        """Return folders of YAML/JSON metadata to load as this plugin's layer."""

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
    def crm_template_dirs(self) -> list:
        """Return folders of Jinja templates for the web UI: ``ui/widgets/<widget>.html`` draws the
        input of a field type whose ``widget`` is that name; a template with the path of one of the
        engine's replaces it."""

    # -- record lifecycle (called by the record service, inside or after its transaction) ------
    @hookspec
    def crm_before_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any) -> None:
        """Before a create, update or delete is written; may change ``record`` or raise ``ValidationFailed``."""

    @hookspec
    def crm_after_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any) -> None:
        """After a create, update or delete is written, in the same transaction."""

    @hookspec
    def crm_after_commit(self, event: str, entity: Any, record: dict, old: dict | None, context: Any) -> None:
        """After the transaction of a create, update or delete has committed."""


def make_plugin_manager(plugin_dirs: tuple[Path, ...] = (), *, entry_point_plugins: bool = True,
                        extra: tuple[object, ...] = ()) -> pluggy.PluginManager:
    """A manager with the core plugin, entry-point plugins, folder plugins and ``extra`` objects."""
    from engine import core_plugin

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(Hooks)
    pm.register(core_plugin, name="core")
    from engine.security import guards
    pm.register(guards, name="core.security")
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
    spec.loader.exec_module(module)
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
