"""The background worker of imports: a thread of this process runs queued jobs one at a time.

Imports cannot use the automation runner (a capability may not import another: ``.importlinter``),
so they have this small worker of their own with the same shape (``submit``, ``drain``, ``close``).
A job is claimed in the database before it runs (``ImportService.claim``), so a job handed over
twice (the scheduler's resume pass racing a submit) still runs once; a job whose process died is
taken again by the scheduler's pass once its heartbeat is stale, and resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import queue
import threading

log = logging.getLogger("crm.imports")


class ImportWorker:
    def __init__(self, service):
        self.service = service
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._busy = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, job_id: int) -> None:
        with self._cond:
            if self._closed:
                return
            self._busy += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="crm-imports", daemon=True)
                self._thread.start()
        self._queue.put(job_id)

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self.service.run(job_id)
            except Exception:  # noqa: BLE001 - run records failures itself; this is a bug, logged
                log.exception("import %s crashed the worker", job_id)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until no job is queued or running (tests); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=10)
