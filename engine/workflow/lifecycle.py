"""The workflow's part of every write, attached to the record service through its lifecycle hooks.

``WorkflowWrites(engine)`` is registered in the plugin manager (``name="workflow.writes"``); its
hooks hand each write to the ``WorkflowEngine``: before it is written, the transition guard and the
before-save automations (``before_write``, whose ``Triggered`` is kept in the write's ``state``);
after it is written, in the same transaction, the automation runs and schedules (``after_write``).
They run before any other plugin's write hooks (``tryfirst``), as the workflow always has, so a
plugin sees the record as the before-save automations left it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.plugins import hookimpl

if TYPE_CHECKING:
    from .engine import WorkflowEngine

#: Where a write's ``state`` keeps what ``before_write`` decided.
STATE_KEY = "workflow"


class WorkflowWrites:
    """Hook implementations delegating the record lifecycle to a ``WorkflowEngine``."""

    def __init__(self, engine: WorkflowEngine):
        self.engine = engine

    @hookimpl
    def crm_watches_writes(self, entity: Any) -> bool:
        """Only entities with a workflow, automations or date-relative schedules."""
        return self.engine.plan(entity) is not None

    @hookimpl(tryfirst=True)
    def crm_before_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any, conn: Any,
                         errors: list, state: dict) -> None:
        triggered = self.engine.before_write(conn, entity, event, record, old, context, errors)
        if triggered is not None:
            state[STATE_KEY] = triggered

    @hookimpl(tryfirst=True)
    def crm_after_write(self, event: str, entity: Any, record: dict, old: dict | None, context: Any, conn: Any,
                        state: dict) -> None:
        self.engine.after_write(conn, entity, event, record, old, context, state.get(STATE_KEY))
