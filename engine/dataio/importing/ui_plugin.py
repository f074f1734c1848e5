"""The import wizard as a default plugin (``"imports.ui"`` in ``engine.plugins.DEFAULT_PLUGINS``):
its screens (ui.py, ui_jobs.py), an "Import" button on the list of each entity the user may import
into, and an "Imports" entry (the history) in the navigation's Data menu. Without the ``imports``
plugin (``CRM_DISABLED_PLUGINS=imports``) it shows nothing and its screens answer 404."""

from __future__ import annotations

from engine.plugins import NavEntry, RecordAction, hookimpl

from .plugin import imports_of

GROUP = "Data"


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import ui

    return [ui.blueprint()]


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from flask import url_for

    if imports_of(runtime) is None or not any(access.can(e, "import") for e in runtime.model.entities):
        return []
    return [NavEntry(key="imports", label={"en": "Imports", "zh": "导入记录"}, group=GROUP, order=20,
                     url=url_for("imports_ui.history"))]


@hookimpl
def crm_list_actions(runtime, entity, access) -> list:
    from flask import url_for

    from engine.ui.i18n import translate as _

    if imports_of(runtime) is None or not access.can(entity.name, "import") \
            or not (access.can(entity.name, "create") or access.can(entity.name, "update")):
        return []
    return [RecordAction(key="import", label=_("Import"), kind="import", style="outline-secondary", order=90,
                         url=url_for("imports_ui.begin", entity=entity.name), selection=False)]
