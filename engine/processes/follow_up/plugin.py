"""``follow_up`` as a default plugin (``"follow_up"`` in ``engine.plugins.DEFAULT_PLUGINS``).

At startup the model's ``follow_up`` declarations are compiled into ``runtime.extensions["follow_up"]``
(a ``FollowUpWrites``) and that object is registered in the plugin manager as ``"follow_up.writes"``:
its write hooks keep the signals in the transaction of every activity write and of every owner
change. It also adds the ``crm follow-up backfill`` command. Turned off (``CRM_DISABLED_PLUGINS=
follow_up``), nothing keeps the signals; the declarations still load (``follow_up.kinds``).
"""

from __future__ import annotations

from engine.plugins import hookimpl

from .commands import crm_cli_commands  # noqa: F401

NAME = "follow_up"
WRITES = "follow_up.writes"


@hookimpl
def crm_startup(runtime) -> None:
    from .spec import compile_follow_ups
    from .writes import FollowUpWrites

    specs, _ = compile_follow_ups(runtime.model, runtime.records.functions)
    if not specs:
        return
    writes = runtime.extensions[NAME] = FollowUpWrites(runtime.records, specs)
    runtime.pm.register(writes, name=WRITES)


@hookimpl
def crm_shutdown(runtime) -> None:
    runtime.extensions.pop(NAME, None)
    if runtime.pm.get_plugin(WRITES) is not None:
        runtime.pm.unregister(name=WRITES)
