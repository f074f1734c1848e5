"""``application/problem+json`` (RFC 9457) answers: the one way an error is sent as JSON over HTTP.

Below both the API (which maps every error family to one of these, ``engine.api.errors``) and the
web guards of this package (a refused CSRF token on an API path), so neither imports the other.
"""

from __future__ import annotations

import json

from flask import Response

PROBLEM = "application/problem+json"
TYPE_BASE = "https://crm-engine.dev/problems/"


def problem(status: int, title: str, detail: str, kind: str, headers: dict | None = None, **extra) -> Response:
    """A problem+json response: ``type`` is ``TYPE_BASE + kind``; ``extra`` adds members (``errors``)."""
    body = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    text = json.dumps(body, ensure_ascii=False, default=str)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:   # a detail echoing a lone surrogate the client sent: send it escaped
            text = json.dumps(body, default=str)
    response = Response(text, status=status, mimetype=PROBLEM)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
