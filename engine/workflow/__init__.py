"""Workflows (state machines on a picklist field) and automations (trigger -> condition -> actions).

See docs/automation.md. The ``workflow`` default plugin (``plugin.py``) compiles the model's
declarations at startup (``compile_specs``), attaches a ``WorkflowEngine`` to the record service and
gives it a runner (in-process, or rq when ``REDIS_URL`` is set), and mounts the transitions and the
run log on the API (``api.py``) and the UI (``ui.py``); ``crm worker`` runs rq workers and
``crm scheduler`` the time triggers.
"""

from .actions import ActionError, ActionRun, ActionType, actions_from_plugins, default_actions
from .engine import STATUSES, WorkflowEngine
from .runner import InProcessRunner, RqRunner, make_runner
from .scheduler import Scheduler
from .spec import Automation, Specs, Transition, Workflow, compile_specs

__all__ = [
    "STATUSES", "ActionError", "ActionRun", "ActionType", "Automation", "InProcessRunner", "RqRunner",
    "Scheduler", "Specs", "Transition", "Workflow", "WorkflowEngine", "actions_from_plugins", "compile_specs",
    "default_actions", "make_runner",
]
