"""The platform scheduler: runs the ``ScheduledJob`` objects plugins contribute (``crm_scheduled_jobs``).

One scheduler serves every capability: ``crm scheduler`` runs it as a service (deployments run
exactly one), ``crm up`` runs it in a thread of the demo server, ``crm scheduler --once`` runs one
pass. The workflow's time triggers (timed automations, the outbox pick-up, retries) are one of its
jobs, contributed by the workflow's default plugin like any other.

* ``prepare(now)``: once before the first pass, each job's ``prepare`` (catch-up planning).
* ``tick(now)``: one pass on demand: every job runs (``--once``, tests).
* ``run_pending()``: the service's pass: the jobs whose period (``every`` seconds) has passed
  since their last run, on a monotonic clock; ``run_forever(interval)`` calls it every
  ``interval`` seconds, so a job runs at most once per ``every`` and at most once per tick.

A job that raises is logged with its name; the other jobs of the pass and the loop go on. A job's
``run`` may return a mapping of counts; a pass returns them merged (numbers of the same name added).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.plugins import ScheduledJob

log = logging.getLogger("crm.scheduler")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _merged(results: Iterable[Any]) -> dict[str, Any]:
    """The mappings jobs returned, as one: numbers of the same name added, anything else the last."""
    merged: dict[str, Any] = {}
    for result in results:
        if isinstance(result, Mapping):
            for key, value in result.items():
                both_numbers = isinstance(value, (int, float)) and isinstance(merged.get(key), (int, float))
                merged[key] = merged[key] + value if both_numbers else value
    return merged


class JobScheduler:
    def __init__(self, runtime: Any, jobs: Iterable[ScheduledJob], *,
                 clock: Callable[[], datetime] = utcnow, timer: Callable[[], float] = time.monotonic):
        self.runtime = runtime
        self.jobs = list(jobs)
        self.clock = clock          # the time the jobs are told (``now``)
        self.timer = timer          # the clock periods are measured on
        self.failed: list[str] = []   # names of the jobs that raised in the last pass
        self._last: dict[str, float] = {}

    @classmethod
    def from_runtime(cls, runtime: Any, **kwargs) -> JobScheduler:
        jobs = [job for contributed in runtime.pm.hook.crm_scheduled_jobs(runtime=runtime)
                for job in contributed or ()]
        return cls(runtime, jobs, **kwargs)

    def job(self, name: str) -> ScheduledJob | None:
        return next((job for job in self.jobs if job.name == name), None)

    # -- passes --------------------------------------------------------------------------------------
    def prepare(self, now: datetime | None = None) -> dict[str, Any]:
        """Run every job's ``prepare(runtime, now)`` (before the first pass); their results, merged."""
        now = now or self.clock()
        self.failed = []
        return _merged(self._call(job, job.prepare, now) for job in self.jobs if job.prepare is not None)

    #: The workflow's name for its preparation (planning the dates of records saved before an automation).
    replan = prepare

    def tick(self, now: datetime | None = None) -> dict[str, Any]:
        """One pass on demand: every job runs, whatever its period."""
        return self._run(self.jobs, now, self.timer())

    def run_pending(self, now: datetime | None = None, *, at: float | None = None) -> dict[str, Any]:
        """The jobs whose period has passed at ``at`` (default: the timer) since their last run."""
        at = self.timer() if at is None else at
        due = [job for job in self.jobs if job.name not in self._last or at - self._last[job.name] >= job.every]
        return self._run(due, now, at)

    def finish(self, timeout: float = 600.0) -> None:
        """After a pass on demand: wait (each up to ``timeout`` s) for the work jobs handed off."""
        for job in self.jobs:
            if job.finish is not None:
                self._call(job, job.finish, timeout)

    def _run(self, jobs: list[ScheduledJob], now: datetime | None, at: float) -> dict[str, Any]:
        now = now or self.clock()
        self.failed = []
        results = []
        for job in jobs:
            self._last[job.name] = at   # a failing job too waits for its period before its next run
            results.append(self._call(job, job.run, now))
        return _merged(results)

    def _call(self, job: ScheduledJob, function: Callable[..., Any], argument: Any) -> Any:
        try:
            return function(self.runtime, argument)
        except Exception:
            log.exception("scheduled job %r failed; the other jobs go on", job.name)
            self.failed.append(job.name)
            return None

    # -- the service -------------------------------------------------------------------------------
    def run_forever(self, interval: float = 30.0, *, stop: Callable[[], bool] | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> None:
        """Prepare, then run the pending jobs every ``interval`` seconds until ``stop()`` is true."""
        self.prepare()
        while stop is None or not stop():
            started = self.timer()
            counts = self.run_pending(at=started)
            if any(counts.values()):
                log.info("tick: %s", counts)
            sleep(max(0.0, interval - (self.timer() - started)))
