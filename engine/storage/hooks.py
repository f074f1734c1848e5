"""The record lifecycle as the record service sees it: the plugin manager's write hooks
(``crm_before_write``, ``crm_after_write``, ``crm_after_commit``, ``engine.plugins.Hooks``), called
only when some plugin implements them.

Everything that acts on writes (the security guards, the workflow and its automations, any plugin)
attaches here; the record service knows none of them by name. A single write always runs the hooks;
a bulk call runs them record by record only for an entity some plugin watches (``watches``), and
otherwise takes its fast path of batched statements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

WRITE_HOOKS = ("crm_before_write", "crm_before_write_chunk", "crm_after_write", "crm_after_commit")


class LifecycleHooks:
    """The lifecycle hooks of a plugin manager (``pm``); nothing to call when it is None."""

    def __init__(self, pm: Any = None):
        self.pm = pm

    def call(self, name: str, **kwargs) -> None:
        if self.pm is not None:
            hook = getattr(self.pm.hook, name)
            if hook.get_hookimpls():
                hook(**kwargs)

    def active(self, name: str) -> bool:
        return self.pm is not None and bool(getattr(self.pm.hook, name).get_hookimpls())

    def watches(self, entity: Any) -> bool:
        """Whether writes of ``entity`` need the write hooks record by record: a plugin says so
        (``crm_watches_writes``), or implements a write hook without saying which entities it
        watches (then it watches them all, as before the hook existed)."""
        if self.pm is None:
            return False
        writers = {impl.plugin_name for name in WRITE_HOOKS for impl in getattr(self.pm.hook, name).get_hookimpls()}
        if not writers:
            return False
        declared = {impl.plugin_name for impl in self.pm.hook.crm_watches_writes.get_hookimpls()}
        return bool(writers - declared) or any(self.pm.hook.crm_watches_writes(entity=entity))

    def for_entity(self, name: str, entity: Any) -> Callable[..., None] | None:
        """The write hook ``name`` as writes of ``entity`` need it, for a bulk call to resolve once
        and call per record: only the implementations of plugins that watch ``entity`` (a plugin
        that does not declare ``crm_watches_writes`` watches all), called in pluggy's order with
        the arguments each takes; None when none is left (a plugin that only watches users costs
        a bulk import of leads nothing)."""
        if self.pm is None:
            return None
        caller = getattr(self.pm.hook, name)
        impls = caller.get_hookimpls()
        if not impls:
            return None
        ignoring = set()
        for impl in self.pm.hook.crm_watches_writes.get_hookimpls():
            if not impl.function(*[{"entity": entity}[a] for a in impl.argnames]):
                ignoring.add(impl.plugin_name)
        kept = [impl for impl in impls if impl.plugin_name not in ignoring]
        if not kept:
            return None
        if any(impl.hookwrapper or impl.wrapper or impl.kwargnames for impl in kept):   # pluggy's own call
            subset = self.pm.subset_hook_caller(name, [i.plugin for i in impls if i.plugin_name in ignoring])
            return lambda **kwargs: subset(**kwargs)
        order = [(impl.function, impl.argnames) for impl in reversed(kept)]   # pluggy calls the last first

        def call(**kwargs) -> None:
            for function, argnames in order:
                function(*[kwargs[a] for a in argnames])
        return call
