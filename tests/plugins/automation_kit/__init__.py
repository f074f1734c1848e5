"""A test plugin for automations: an action type (``shout``) and functions for the ``call`` action."""

import os
import time
from pathlib import Path

from engine.plugins import hookimpl
from engine.workflow import ActionType


class Shout(ActionType):
    """Before save: upper-case a text field of the record."""

    name = "shout"
    before_save = True
    schema = {"required": ["field"], "properties": {"field": {"type": "string"}}}

    def prepare(self, props, ent, c, where):
        if props["field"] not in ent.fields:
            c.problem((*where, "field"), f"{ent.name} has no field {props['field']!r}")
        return {}

    def changes(self, act):
        value = act.record.get(act.step.props["field"])
        return {act.step.props["field"]: value.upper()} if isinstance(value, str) else {}


def stamp(act, subject):
    """Create an activity about the record, in the job's transaction."""
    made = act.svc.create("activity", {"subject": subject, "type": "task",
                                       "related_to": f"{act.ent.name}:{act.record['id']}"},
                          context=act.writer, conn=act.conn)
    return made["id"]


def slow_once(act, seconds):
    """The first call anywhere waits (long enough for a test to kill the worker); later calls return."""
    marker = Path(os.environ["CRM_TEST_MARKER"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(float(seconds))
    return "ok"


def touch(act):
    """Update the record itself: an automation calling this on `updated` triggers itself."""
    act.svc.update(act.ent.name, act.record["id"], {"description": (act.record.get("description") or "") + "+"},
                   context=act.writer, conn=act.conn)


@hookimpl
def crm_actions():
    return [Shout()]


@hookimpl
def crm_action_functions():
    return {"stamp": stamp, "slow_once": slow_once, "touch": touch}
