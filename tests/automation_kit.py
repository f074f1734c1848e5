"""Test parts for automations: a webhook receiver, an SMTP sink, and rq workers run as `crm worker`."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sqlalchemy as sa

REDIS_URL = os.environ.get("CRM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TERMINAL = ("done", "dead", "stopped")


def redis_available() -> bool:
    try:
        from redis import Redis

        return bool(Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001 - no Redis: the rq variant is skipped with this reason
        return False


class Receiver:
    """A local HTTP server that records webhook deliveries; ``/fail`` answers 500 while ``failing``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.failing = True
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": self.headers, "body": body,
                                          "at": time.time()})
                status = 500 if self.path == "/fail" and receiver.failing else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class SmtpSink:
    """A minimal SMTP server (HELO/EHLO, MAIL, RCPT, DATA, QUIT) keeping every message it receives."""

    def __init__(self):
        self.messages: list[dict] = []
        sink = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.say("220 sink ready")
                envelope = {"from": None, "to": [], "data": b""}
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    command = line.decode().strip()
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("HELO", "EHLO"):
                        self.say("250 sink")
                    elif verb == "MAIL":
                        envelope["from"] = command.split(":", 1)[1].strip()
                        self.say("250 ok")
                    elif verb == "RCPT":
                        envelope["to"].append(command.split(":", 1)[1].strip().strip("<>"))
                        self.say("250 ok")
                    elif verb == "DATA":
                        self.say("354 go on")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if chunk in (b".\r\n", b".\n", b""):
                                break
                            data += chunk
                        envelope["data"] = data
                        sink.messages.append(dict(envelope))
                        envelope = {"from": None, "to": [], "data": b""}
                        self.say("250 queued")
                    elif verb == "QUIT":
                        self.say("221 bye")
                        return
                    else:
                        self.say("250 ok")

            def say(self, text):
                self.wfile.write(text.encode() + b"\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Harness:
    """One runtime with its runner (in-process or rq), and what the automations talk to."""

    def __init__(self, rt, kind: str, env: dict, receiver: Receiver, smtp: SmtpSink):
        self.rt, self.kind, self.env, self.receiver, self.smtp = rt, kind, env, receiver, smtp
        self.workers: list[subprocess.Popen] = []

    # -- rq workers, as `crm worker` processes -------------------------------------------------
    def worker_env(self) -> dict:
        s = self.rt.settings
        env = {**os.environ, **self.env,
               "DATABASE_URL": s.database_url, "REDIS_URL": s.redis_url or "", "CRM_QUEUE": s.queue_name,
               "CRM_SITE_DIR": str(s.site_dir), "CRM_PLUGIN_DIRS": os.pathsep.join(map(str, s.plugin_dirs)),
               "CRM_JOB_BACKOFF": str(s.job_backoff), "CRM_MAIL_URL": s.mail_url, "CRM_VAR_DIR": str(s.var_dir),
               "CRM_BACKUP_DIR": str(s.backup_dir)}
        return env

    def start_worker(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "worker"], env=self.worker_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.kind == "rq":
            from redis import Redis
            from rq import Queue

            redis = Redis.from_url(REDIS_URL)
            Queue(self.rt.settings.queue_name, connection=redis).delete(delete_jobs=True)
            for key in redis.scan_iter(f"rq:*{self.rt.settings.queue_name}*"):
                redis.delete(key)

    # -- waiting -------------------------------------------------------------------------------
    def runs(self, **where) -> list[dict]:
        runs = self.rt.workflow.runs
        stmt = sa.select(runs).order_by(runs.c.id)
        for name, value in where.items():
            stmt = stmt.where(runs.c[name] == value)
        with self.rt.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def settle(self, timeout: float = 60.0, **where) -> list[dict]:
        """Wait until every run (matching ``where``) has finished: done, dead or stopped."""
        deadline = time.monotonic() + timeout
        while True:
            runner = self.rt.workflow.runner
            if hasattr(runner, "drain"):
                runner.drain(timeout=max(0.1, deadline - time.monotonic()))
            runs = self.runs(**where)
            if runs and all(r["status"] in TERMINAL for r in runs):
                return runs
            if time.monotonic() > deadline:
                errors = b"".join(p.stderr.read1() if p.poll() is not None and p.stderr else b"" for p in self.workers)
                raise AssertionError(f"runs did not finish in {timeout} s: "
                                     f"{[(r['automation'], r['status'], r['error']) for r in runs]} {errors[-2000:]!r}")
            time.sleep(0.05)


def payload(request: dict) -> dict:
    return json.loads(request["body"])
