"""``agenda`` as a default plugin (``"agenda"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's ``agenda`` document is compiled into ``runtime.extensions["agenda"]``; the
plugin contributes the home page's panels, the task list and calendar screens with their navigation
entries, the recently viewed records (an after-request hook of the UI) and the reminders job of the
platform scheduler. Without it (``CRM_DISABLED_PLUGINS=agenda``) none of these exist.
"""

from __future__ import annotations

from engine.plugins import NavEntry, ScheduledJob, hookimpl

NAME = "agenda"
EVERY = 60.0   # reminders are planned to the minute


def agenda_of(runtime):
    return runtime.extensions.get(NAME)


@hookimpl
def crm_startup(runtime) -> None:
    from .spec import compile_agenda

    runtime.extensions[NAME], _ = compile_agenda(runtime.model)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)


@hookimpl
def crm_scheduled_jobs(runtime) -> list:
    ag = agenda_of(runtime)
    if ag is None or not ag.reminders:
        return []
    return [ScheduledJob("agenda.reminders", _remind, every=EVERY)]


def _remind(runtime, now) -> dict:
    from .reminders import send_reminders

    return send_reminders(runtime, agenda_of(runtime), now)


@hookimpl
def crm_blueprints(runtime) -> list:
    from . import ui

    return [ui.blueprint()]


@hookimpl
def crm_nav_entries(runtime, access) -> list:
    from flask import url_for

    ag = agenda_of(runtime)
    if ag is None or not access.can(ag.activities, "read"):
        return []
    return [NavEntry("agenda.tasks", {"en": "Tasks", "zh": "任务"}, url_for("agenda_ui.tasks"), icon="check-circle",
                     order=10),
            NavEntry("agenda.calendar", {"en": "Calendar", "zh": "日历"}, url_for("agenda_ui.calendar"),
                     icon="calendar", order=20)]


@hookimpl
def crm_home_panels(runtime, access) -> list:
    from .ui import home_panels

    return home_panels(runtime, access)
