"""Follow-up signals: when each followed record was last and will next be followed up by an
activity, and when its owner last touched it, kept by the engine in the transaction of every write
that can change them (docs/metadata.md#follow-up-signals).

* ``spec.py``: the ``follow_up`` document kind compiled into frozen ``FollowUp`` objects
  (``compile_follow_ups(model, functions) -> (specs, problems)``); ``kinds.py`` reports the
  problems at their file:line.
* ``signals.py``: ``refresh(svc, conn, spec, target, ids)``, the aggregate queries that recompute
  records and write what changed as bookkeeping.
* ``writes.py``: ``FollowUpWrites``, the write hooks (registered per runtime by ``plugin.py``) that
  stamp owner changes and note the records a write touches, recomputed just before the commit.
* ``commands.py``: ``crm follow-up backfill`` (``backfill(runtime, entity=None, batch=1000)``).
"""
