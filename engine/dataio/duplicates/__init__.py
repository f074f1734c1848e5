"""Duplicate rules (``duplicate_rule`` documents), their checks on every user write, the key table
they keep and the duplicate scan. See engine/dataio/__init__.py and docs/data.md#duplicate-rules.

``quality_groups`` is what the data-quality page shows of them."""

from __future__ import annotations


def quality_groups(runtime, entity: str, context, limit: int = 20) -> list[dict] | None:
    """Up to ``limit`` groups of likely duplicates of ``entity`` within the caller's scope, each
    ``{"rule": name, "ids": [...]}``; None when the entity has no duplicate rule (no panel)."""
    from .plugin import service_of
    from .scan import duplicate_groups

    service = service_of(runtime)
    if service is None or not service.rules_of(entity):
        return None
    access = None if context.system else context.access
    return [{"rule": g.rule, "ids": g.ids} for g in duplicate_groups(runtime, entity, access)[:limit]]
