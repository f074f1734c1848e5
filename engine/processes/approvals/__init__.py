"""Approval processes (审批流): a record submitted for approval goes through ordered steps of
approvers, locked meanwhile, and ends approved or rejected. Declared in metadata (the
``approval`` document kind, docs/metadata.md#approvals)."""
