"""Serving the application with gunicorn: its configuration and a worker whose own answers are
problem+json like the application's.

gunicorn reads the request line and headers before the application sees the request, and answers
what it refuses there itself, with an HTML page: 414 for a request line over
``limit_request_line``, 431 for headers over ``limit_request_fields`` or
``limit_request_field_size``, 400 for a malformed request. ``ProblemWorker`` is gunicorn's sync
worker (the measured choice here) whose error answers carry the same status and reason as an
``application/problem+json`` body, so a client reads every error of this server one way.

Use it as the configuration module::

    gunicorn -c python:engine.serving "engine.app:create_app()"
"""

from __future__ import annotations

import socket
from typing import Any

from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.sync import SyncWorker

from engine.api.errors import problem

#: gunicorn settings this module gives when used with ``-c python:engine.serving``.
worker_class = "engine.serving.ProblemWorker"
limit_request_line = 4094          # gunicorn's defaults, written out: docs/api.md names them
limit_request_fields = 100
limit_request_field_size = 8190


class ProblemWorker(SyncWorker):
    """gunicorn's sync worker; what it answers itself is problem+json, not an HTML page."""

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        super().handle_error(req, _ProblemSocket(client, exc, self.cfg), addr, exc)


class _ProblemSocket:
    """The client socket as gunicorn's error writer sees it: the status line it writes is kept, the
    HTML page it writes is replaced by a problem+json body."""

    def __init__(self, sock: socket.socket, exc: BaseException, cfg: Any):
        self._sock, self._exc, self._cfg = sock, exc, cfg

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
        _, code, reason = (status_line.split(" ", 2) + ["", ""])[:3]
        self._sock.sendall(answer(int(code) if code.isdigit() else 500, reason or "Error", self._exc, self._cfg))


def answer(status: int, reason: str, exc: BaseException, cfg: Any) -> bytes:
    """The whole HTTP answer for a request gunicorn refused with ``status`` and ``reason``."""
    field = None
    if isinstance(exc, LimitRequestLine):
        field, detail = "request-line", ("the request line (method, path and query) is longer than this server "
                                         f"accepts ({cfg.limit_request_line} bytes)")
    elif isinstance(exc, LimitRequestHeaders):
        field, detail = "headers", ("the request headers are more or larger than this server accepts "
                                    f"({cfg.limit_request_fields} fields of {cfg.limit_request_field_size} bytes)")
    else:
        detail = str(exc) if status < 500 else "the server failed; the error is logged"
    extra = {"errors": [{"field": field, "code": "too-large", "message": detail}]} if field else {}
    body = problem(status, reason, detail, reason.lower().replace(" ", "-"), **extra).get_data()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


__all__ = ["ProblemWorker", "answer"]
