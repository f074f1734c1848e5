"""What the metadata says about merging an entity's records: the optional entity key
``merge: {undo_within: 24h}`` (checked by engine/metadata/schemas/entity.schema.json), and the
limits every merge keeps."""

from __future__ import annotations

from datetime import timedelta

#: Records in one merge (the survivor included): a merge is a decision about a few duplicates, made
#: by a person looking at them side by side, not a batch job.
MAX_RECORDS = 5
#: How long a merge can be undone when the entity does not say.
DEFAULT_UNDO = "24h"
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def undo_within(ent) -> timedelta:
    """The time after a merge into a record of ``ent`` during which it can be undone (0: never)."""
    text = str((ent.props.get("merge") or {}).get("undo_within") or DEFAULT_UNDO)
    return timedelta(**{_UNITS[text[-1]]: int(text[:-1])})


def mergeable(ent) -> bool:
    """Users are not merged (their sign-in, tokens and owned records are not references to move)."""
    return ent.name != "user"
