"""``crm_scheduled_jobs``: one platform scheduler runs every job plugins contribute. A job runs on a
tick; one that raises is logged with its name and the others (and the loop) go on; a job runs at
most once per ``every`` seconds; the workflow's time triggers are one such job."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from engine.jobs import JobScheduler
from engine.plugins import ScheduledJob, hookimpl
from engine.runtime import Runtime

NOW = datetime(2030, 1, 1, 8, 0, tzinfo=timezone.utc)


class Jobs:
    """A plugin contributing three jobs: one that counts, a slow one (every minute), one that fails."""

    def __init__(self):
        self.calls: list[tuple[str, datetime]] = []
        self.prepared = 0

    @hookimpl
    def crm_scheduled_jobs(self, runtime):
        assert isinstance(runtime, Runtime)
        return [ScheduledJob("test.count", self.count, every=0, prepare=self.prepare),
                ScheduledJob("test.slow", self.slow, every=60),
                ScheduledJob("test.broken", self.broken, every=0)]

    def count(self, runtime, now):
        self.calls.append(("count", now))
        return {"counted": 1}

    def slow(self, runtime, now):
        self.calls.append(("slow", now))
        return {"counted": 10}

    def broken(self, runtime, now):
        raise RuntimeError("the mail server is gone")

    def prepare(self, runtime, now):
        self.prepared += 1
        return {"ready": 1}

    def ran(self, name: str) -> int:
        return sum(1 for job, _ in self.calls if job == name)


@pytest.fixture
def jobs(settings):
    plugin = Jobs()
    rt = Runtime.boot(settings, extra_plugins=(plugin,))
    rt.migrate()
    plugin.rt = rt
    yield plugin
    rt.close()


class FakeTime:
    """A monotonic timer the loop's sleep moves forward."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_the_runtime_scheduler_runs_every_contributed_job_on_a_tick(jobs, caplog):
    sched = jobs.rt.scheduler()
    assert isinstance(sched, JobScheduler)
    names = {job.name for job in sched.jobs}   # the workflow's time triggers and the pools' recycling, the agenda's reminders are jobs too
    assert names == {"test.count", "test.slow", "test.broken", "workflow.time_triggers", "pools.recycle",
                     "imports.resume", "duplicates.backfill", "agenda.reminders", "files_sweep"}
    with caplog.at_level(logging.ERROR, logger="crm.scheduler"):
        counts = sched.tick(NOW)
    assert jobs.calls == [("count", NOW), ("slow", NOW)]
    assert counts["counted"] == 11                            # the counts of every job, merged
    assert counts["scheduled"] == 0 and counts["cron"] == 0   # ... the workflow's included
    assert sched.failed == ["test.broken"]
    [record] = [r for r in caplog.records if "test.broken" in r.getMessage()]
    assert record.exc_info and "the mail server is gone" in str(record.exc_info[1])
    assert sched.prepare(NOW)["ready"] == 1 and jobs.prepared == 1


def test_a_job_runs_at_most_once_per_period(jobs):
    sched = JobScheduler.from_runtime(jobs.rt)
    for at in (0, 30, 59.9, 60, 61, 119.9, 120, 180):
        sched.run_pending(NOW, at=at)
    assert jobs.ran("slow") == 4        # at 0, 60, 120, 180
    assert jobs.ran("count") == 8       # every 0: on each tick


def test_the_loop_prepares_once_runs_the_jobs_due_on_each_tick_and_survives_a_failing_job(jobs, caplog):
    clock = FakeTime()
    sched = JobScheduler.from_runtime(jobs.rt, timer=clock, clock=lambda: NOW)
    passes = iter(range(7))
    with caplog.at_level(logging.ERROR, logger="crm.scheduler"):
        sched.run_forever(20, stop=lambda: next(passes, None) is None, sleep=clock.sleep)
    assert jobs.prepared == 1
    assert jobs.ran("count") == 7       # ticks at 0, 20, ... 120 s
    assert jobs.ran("slow") == 3        # at 0, 60 and 120 s
    assert sum("test.broken" in r.getMessage() for r in caplog.records) == 7   # logged, never stopped the loop
