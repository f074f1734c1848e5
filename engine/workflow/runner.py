"""Job runners: where automation runs execute after the write that started them commits.

One interface, ``submit(run_ids, delay)``, two implementations:

* ``InProcessRunner`` (the default, no Redis needed): a background thread of this process runs the
  jobs in order of their due time, off the request thread.
* ``RqRunner`` (when ``REDIS_URL`` is set): jobs go to an rq queue; ``crm worker`` runs them.

Either way the job is ``WorkflowEngine.execute(run_id)``, which claims the run in the database, so
a run handed over twice (a retry racing the sweep) still runs once.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

log = logging.getLogger("crm.jobs")


class InProcessRunner:
    def __init__(self, execute: Callable[[int], object]):
        self.execute = execute
        self._heap: list[tuple[float, int, int]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._busy = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, run_ids: list[int], delay: float = 0.0) -> None:
        due = time.monotonic() + max(0.0, delay)
        with self._cond:
            if self._closed:
                return
            for rid in run_ids:
                heapq.heappush(self._heap, (due, next(self._order), rid))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="crm-jobs", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                if self._closed:
                    return
                _, _, rid = heapq.heappop(self._heap)
                self._busy += 1
            try:
                self.execute(rid)
            except Exception:  # noqa: BLE001 - execute records failures itself; this is a bug, logged
                log.exception("automation run %s crashed the runner", rid)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def drain(self, timeout: float = 30.0, *, include_delayed: bool = True) -> bool:
        """Wait until no job is waiting or running (tests and benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or (self._heap and (include_delayed or self._heap[0][0] <= time.monotonic())):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


class RqRunner:
    """Jobs on an rq queue in Redis; delayed jobs (retries) wait in rq's scheduler (run by ``crm worker``),
    scheduled at the next whole second after they are due, and a job that still arrives early (a
    worker's clock ahead of this one) waits again in ``WorkflowEngine.execute`` instead of being dropped."""

    JOB = "engine.workflow.worker.run_job"
    #: Seconds a hand-off may wait for Redis to connect or answer: a hung Redis must not hang the
    #: write that committed the runs (they stay in the outbox and the scheduler hands them over).
    #: Set here rather than left to redis-py, whose default has changed between the versions we accept.
    TIMEOUT = 5.0

    def __init__(self, redis_url: str, queue_name: str = "crm"):
        from redis import Redis
        from rq import Queue

        self.redis = Redis.from_url(redis_url, socket_connect_timeout=self.TIMEOUT, socket_timeout=self.TIMEOUT)
        self.queue = Queue(queue_name, connection=self.redis)

    def submit(self, run_ids: list[int], delay: float = 0.0) -> None:
        if delay > 0:
            at = _whole_second_after(datetime.now(timezone.utc) + timedelta(seconds=delay))
            for rid in run_ids:
                self.queue.enqueue_at(at, self.JOB, rid, result_ttl=0, failure_ttl=86400)
            return
        jobs = [self.queue.prepare_data(self.JOB, args=(rid,), result_ttl=0, failure_ttl=86400) for rid in run_ids]
        with self.redis.pipeline() as pipe:
            self.queue.enqueue_many(jobs, pipeline=pipe)
            pipe.execute()

    def close(self) -> None:
        self.redis.close()


def _whole_second_after(moment: datetime) -> datetime:
    """``moment`` rounded up to a whole second: rq scores scheduled jobs in whole seconds (it drops the
    fraction), so a job scheduled for 12:00:00.7 would run at 12:00:00, before it is due."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def make_runner(settings, execute: Callable[[int], object]):
    if settings.redis_url:
        return RqRunner(settings.redis_url, settings.queue_name)
    return InProcessRunner(execute)
