"""Boot the engine: plugins -> field types -> model -> database -> record service.

``Runtime.boot(settings)`` is what the CLI, the web app and the tests call; nothing happens at
import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.fields import FieldTypeRegistry
from engine.metadata import AppModel, load_model
from engine.plugins import make_plugin_manager, plugin_layers
from engine.settings import Settings
from engine.storage.database import Database
from engine.storage.migrate import Applied, apply_migration, plan_migration
from engine.storage.records import RecordService


@dataclass
class Runtime:
    settings: Settings
    pm: Any
    registry: FieldTypeRegistry
    model: AppModel
    db: Database
    records: RecordService
    workflow: Any = None
    dashboards: dict = None

    @classmethod
    def boot(cls, settings: Settings, *, extra_plugins: tuple = ()) -> "Runtime":
        pm = make_plugin_manager(settings.plugin_dirs, entry_point_plugins=settings.entry_point_plugins,
                                 extra=extra_plugins)
        from engine import rules

        from engine.workflow import WorkflowEngine, actions_from_plugins, compile_specs, make_runner
        from engine.workflow.lifecycle import WorkflowWrites

        registry = registry_from(pm)
        functions = rules.registry_from_plugins(pm)
        actions = actions_from_plugins(pm)
        model = load_model_from(pm, settings.layers(plugin_layers(pm)), registry=registry, functions=functions,
                                actions=actions)
        from engine.storage.crypto import check_keys, encrypted_fields, use_keys

        use_keys(settings.encryption_keys, settings.encryption_keys_from)
        db = Database(settings.database_url)
        records = RecordService(model, db, pm)
        if encrypted_fields(model):
            try:   # no key, or one that cannot read the stored values: a clear EncryptionError now
                check_keys(records)
            except Exception:
                db.dispose()
                raise
        records._functions = functions
        specs, _ = compile_specs(model, functions, actions)
        workflow = WorkflowEngine(records, specs, settings)
        workflow.runner = make_runner(settings, workflow.execute)
        pm.register(WorkflowWrites(workflow), name="workflow.writes")
        from engine.dashboards import compile_dashboards

        dashboards, _ = compile_dashboards(model, functions)
        return cls(settings, pm, registry, model, db, records, workflow, dashboards)

    def plan(self):
        return plan_migration(self.db, self.model)

    def migrate(self, *, allow_data_loss: bool = False) -> Applied:
        return apply_migration(self.db, self.model, backup_dir=Path(self.settings.backup_dir),
                               allow_data_loss=allow_data_loss)

    def scheduler(self):
        """The platform scheduler, with the jobs every plugin contributes (engine/jobs.py)."""
        from engine.jobs import JobScheduler

        return JobScheduler.from_runtime(self)

    def close(self) -> None:
        if self.workflow is not None:
            self.workflow.close()
        self.db.dispose()


def load_model_from(pm, layers, *, registry: FieldTypeRegistry | None = None, functions=None,
                    actions=None) -> AppModel:
    """The model of ``layers`` (``[(name, folder)]``) loaded with what the plugins of ``pm`` contribute:
    field types, formula functions, document kinds (``crm_document_kinds``) and model checks
    (``crm_model_checks``); ``actions`` are the automation action types (the built-in ones when
    omitted). What ``Runtime.boot``, ``crm validate`` and the tests load a model with."""
    from engine import rules

    registry = registry if registry is not None else registry_from(pm)
    functions = functions if functions is not None else rules.registry_from_plugins(pm)
    kinds = [kind for found in pm.hook.crm_document_kinds() for kind in found or ()]
    checks = [check for found in pm.hook.crm_model_checks() for check in found or ()]
    return load_model(layers, registry, functions, actions, kinds=kinds, checks=checks)


def registry_from(pm) -> FieldTypeRegistry:
    registry = FieldTypeRegistry()
    for types in pm.hook.crm_field_types():
        for ftype in types or ():
            registry.register(ftype)
    return registry
