"""``crm worker``: rq workers running automation jobs, each with the engine booted once.

rq calls ``run_job(run_id)`` by name; the runtime it uses is booted when the worker starts (or on
the first job), from the same environment as the web server (DATABASE_URL, REDIS_URL, ...).
"""

from __future__ import annotations

import logging

from engine.settings import Settings

from .commands import engine_of

_runtime = None
log = logging.getLogger("crm.worker")


def runtime():
    global _runtime
    if _runtime is None:
        from engine.runtime import Runtime

        _runtime = Runtime.boot(Settings.from_env())
    return _runtime


def run_job(run_id: int) -> str | None:
    return engine_of(runtime()).execute(run_id)


def work(settings: Settings, *, burst: bool = False) -> bool:
    """Run an rq worker on the automation queue until stopped (or, with ``burst``, until it is empty).

    A ``SimpleWorker`` runs jobs in this process (about 5x the jobs/s of rq's forking worker, see
    MEASURED.md); the job's own claim and lease in the database keep a crashed job retryable."""
    global _runtime
    from redis import Redis
    from rq import Queue, SimpleWorker

    from engine.runtime import Runtime

    if not settings.redis_url:
        raise SystemExit("crm worker needs REDIS_URL (without it, jobs run inside the server process)")
    if _runtime is None:
        _runtime = Runtime.boot(settings)
    redis = Redis.from_url(settings.redis_url)
    worker = SimpleWorker([Queue(settings.queue_name, connection=redis)], connection=redis)
    return worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
