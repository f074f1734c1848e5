"""Reading a JSON request body: the one place that decides what JSON the API accepts.

Beyond being valid JSON, a body must be nested at most ``MAX_DEPTH`` levels (deeper documents
exhaust the recursion of the layers below), hold only valid Unicode text (a lone UTF-16 surrogate
such as ``"\\ud800"`` is legal JSON but no text a database can store), and no ``NaN`` or
``Infinity`` (not JSON at all, though Python's reader takes them). Anything else is a 400
problem+json naming where in the body the problem is (``records[3].name``).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import ApiError

MAX_DEPTH = 64


def read_json(data: bytes) -> Any:
    """The body ``data`` as Python values, or an ``ApiError`` (400) naming what is wrong and where."""
    try:
        value = json.loads(data or b"null", parse_constant=_no_constant)
    except RecursionError:
        raise _bad(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {exc}") from None
    _check(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check(root: Any) -> None:
    """Depth and text of every value, walked without recursion (the body may be hostile)."""
    stack: list[tuple[Any, str, int]] = [(root, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise _bad(f"the body is nested deeper than {MAX_DEPTH} levels (at {path or 'the top'})", path)
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{_printable(key)}" if path else _printable(key)
                _check_text(key, where)
                stack.append((item, where, depth + 1))
        else:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, path: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(f"{path or 'the body'}: contains a lone surrogate (not valid Unicode text)", path) from None


def _printable(key: str) -> str:
    """A key as it can be shown in an answer (a lone surrogate as its escape, ``\\ud800``)."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8") if not key.isascii() else key


def _bad(detail: str, path: str = "") -> ApiError:
    return ApiError(400, "Malformed JSON", detail, kind="malformed-json",
                    errors=[{"field": path or None, "code": "json", "message": detail}])


__all__ = ["MAX_DEPTH", "read_json"]
