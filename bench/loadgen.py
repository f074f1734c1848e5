"""A small HTTP load generator (asyncio, one connection per request as gunicorn's sync workers
close them): requests/s and latency percentiles for one request shape, for a fixed time."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from typing import Callable


async def _one(host: str, port: int, raw: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    writer.close()
    return time.perf_counter() - start, status


async def _run(host, port, make: Callable[[int], bytes], seconds: float, concurrency: int):
    latencies, statuses = [], {}
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker():
        while time.perf_counter() < deadline:
            latency, status = await _one(host, port, make(next(counter)))
            latencies.append(latency)
            statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - start


def request(method: str, path: str, headers: dict, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def load(host: str, port: int, make: Callable[[int], bytes], *, seconds: float = 5, concurrency: int = 8) -> dict:
    latencies, statuses, elapsed = asyncio.run(_run(host, port, make, seconds, concurrency))
    latencies.sort()
    return {"rps": len(latencies) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1], "statuses": statuses}
