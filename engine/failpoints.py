"""Fail points: named places where a test can make the server die, to prove what survives a crash.

A test-only switch. ``CRM_FAILPOINTS`` holds comma-separated names (``after_commit:idempotent-write``);
when the code reaches ``hit(name)`` for an armed name, the process ends at once with exit status 137
(``os._exit``, as after ``kill -9``: no cleanup, no answer, no ``finally``). The variable is read
once per process, at the first ``hit``; unset (as in every deployment) a fail point costs one set
lookup. The points and where they are: docs/operations.md.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

#: The exit status of a process killed by SIGKILL, as a shell reports it.
KILLED = 137


def hit(name: str) -> None:
    """Die here (exit status 137, nothing flushed) if the fail point ``name`` is armed."""
    if name in _armed():
        sys.stderr.write(f"fail point {name}: exiting with {KILLED}\n")
        sys.stderr.flush()
        os._exit(KILLED)


@lru_cache(maxsize=1)
def _armed() -> frozenset[str]:
    return frozenset(n.strip() for n in os.environ.get("CRM_FAILPOINTS", "").split(",") if n.strip())


__all__ = ["KILLED", "hit"]
