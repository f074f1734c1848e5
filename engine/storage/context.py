"""Who writes, and what they may touch: the ``Context`` every call of the record service carries,
and the checks of its ``access`` (the caller's rights) that reads and writes share.

``access`` is an ``engine.security.permissions.Access`` or None (unrestricted: system, CLI); storage
only calls its methods (``require``, ``write_errors``, ``mask``, ...), it never imports security.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ValidationFailed

if TYPE_CHECKING:
    from engine.metadata.model import Entity


@dataclass(frozen=True)
class Context:
    """Who writes, and how. ``system`` writes (seeding, automations) may set read-only fields."""

    user_id: int | None = None
    system: bool = False
    #: Automations: how deep in a chain of automations this write is, and which ones led to it.
    depth: int = 0
    chain: tuple[str, ...] = ()
    #: The workflow transition this update takes (set by ``RecordService.transition``).
    transition: str | None = None
    #: False for writes that must not start automations (seeding, restores).
    automations: bool = True
    #: The caller's rights (``engine.security.permissions.Access``); None: unrestricted (system, CLI).
    access: Any = None
    #: Duplicate rules (engine/dataio/duplicates): ``check`` (a match refuses the write), ``allow`` (the
    #: writer saves anyway past ``warn`` rules, audited; ``block`` rules still refuse), ``checked`` (the
    #: caller checked the rows itself, e.g. an import per chunk: the write hook does not check again).
    duplicates: str = "check"


def access_for(context: Context, ent: Entity, op: str):
    """The caller's ``Access`` after checking ``op`` on ``ent`` (None: unrestricted)."""
    access = None if context.system else context.access
    if access is not None:
        access.require(ent.name, op)
    return access


def guard_write(context: Context, ent: Entity, op: str, values: dict | None) -> None:
    """``op`` is allowed and every field of ``values`` is writable for the caller (else 403 / 422)."""
    access = access_for(context, ent, op)
    if access is not None and values:
        errors = access.write_errors(ent.name, values)
        if errors:
            raise ValidationFailed(errors, ent.name)


def masked(context: Context, ent: Entity, record: dict) -> dict:
    """``record`` without the fields the caller may not read (a copy), or itself when unrestricted."""
    if context.access is not None and not context.system:
        return context.access.mask(ent.name, [dict(record)])[0]
    return record


def system_for(context: Context) -> Context:
    """The context of a write the engine makes on behalf of ``context``'s writer (a parent's new
    rollup values, clearing an exclusive flag): a system write by the same user, in the same chain
    of automations."""
    return Context(context.user_id, system=True, depth=context.depth, chain=context.chain,
                   automations=context.automations)
