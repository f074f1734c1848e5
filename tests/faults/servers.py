"""Real servers for the fault suite: a free port, and waiting for a started server to say it listens
(an event read from its output, not a sleep)."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
import time

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_output(proc: subprocess.Popen, text: str, seconds: float) -> str:
    """Block until ``proc`` (started with ``stdout=PIPE, text=True``) prints ``text``; fail the test
    with its output if it exits or stays silent for ``seconds``. Returns the output so far."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output, deadline = "", time.monotonic() + seconds
    while text not in output:
        try:
            output += lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no {text!r} from the server in {seconds} s:\n{output}")
        if proc.poll() is not None and lines.empty():
            pytest.fail(f"the server exited with {proc.returncode}:\n{output}")
    return output
