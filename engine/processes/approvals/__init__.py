"""Approval processes (审批流): a record submitted for approval goes through ordered steps of
approvers, locked meanwhile, and ends approved, rejected or recalled. Declared in metadata (the
``approval`` document kind, docs/metadata.md#approvals).

* ``spec.py``: the declaration (``Approval``, ``Step``, ``compile_approvals``) and its check
  (``kinds.py``, file:line);
* ``service.py``: ``ApprovalService`` (``runtime.extensions["approvals"]``): ``submit``, ``approve``,
  ``reject``, ``recall``, ``history`` (a record's approvals), ``inbox`` (what waits for a user),
  ``lock_of`` (whether a record is locked for a user); ``ApprovalError`` names why an action is refused;
* ``lock.py``: the write hook that keeps a pending record locked (API, UI, bulk, imports);
* ``api.py``, ``ui.py``: the routes ``/api/v1/_approvals`` and ``/api/v1/{entity}/{id}/_approval...``,
  the inbox, the record panel and the read-only notice; ``plugin.py`` mounts them.

Its state is in the tables ``_crm_approval`` (one row per submission: process, status, current step,
version) and ``_crm_approval_step`` (one row per approver of each step reached, and per skipped step:
decision, comment, when), declared by ``kinds.py`` through the ``crm_tables`` hook.
"""
