"""Pools of unowned records (公海): records of an entity without an owner that users claim within
limits, return with a reason, and that come back by themselves when their owner does not follow
them up. Declared in metadata (the ``pool`` document kind, docs/metadata.md#pools).

* ``spec.py``: the declaration (``Pool``, ``compile_pools``) and its check (``kinds.py``, file:line);
* ``service.py``: ``PoolService`` (``runtime.extensions["pools"]``): ``claim``, ``assign``,
  ``give_back``, ``set_limit``, ``quota``, ``page`` (the pool's records); ``PoolError`` names why
  an action is refused;
* ``recycle.py``: ``recycle(service, now)``, the scheduler's job ``pools.recycle``;
* ``api.py``, ``ui.py``, ``commands.py``: the routes under ``/api/v1/_pools``, the screens and the
  Return button, ``crm pools``; ``plugin.py`` mounts them.

Its state is in the engine's tables ``_crm_pool_hold`` (who holds which record, due and warning
times), ``_crm_pool_event`` (claims, assignments, returns, recycles) and ``_crm_pool_limit``
(per-user limits), declared by ``kinds.py`` through the ``crm_tables`` hook.
"""
