"""The workflow's default plugin for the command line and the scheduler (``workflow.commands``).

* ``crm_cli_commands``: ``crm worker`` (rq workers for automation jobs) and ``crm automations``
  (the run log: ``runs``, ``rerun``), added to the ``crm`` group like any plugin's commands.
* ``crm_scheduled_jobs``: the time triggers, one job of the platform scheduler (engine/jobs.py):
  date-relative and cron automations that are due, and runs whose hand-off or worker was lost.
  Before its first pass it plans the dates of records saved before an automation existed.

Commands get the booted runtime from the ``crm`` group's context object (``@click.pass_obj``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from engine.plugins import ScheduledJob, hookimpl

#: The scheduler ticks (``crm scheduler --interval``, 30 s by default); the time triggers run on each.
EVERY = 0.0


def engine_of(runtime: Any):
    """The runtime's workflow engine (None when the workflow is not there): the one place that finds it."""
    return getattr(runtime, "workflow", None)


# -- scheduled job ---------------------------------------------------------------------------------

@hookimpl
def crm_scheduled_jobs(runtime):
    if engine_of(runtime) is None:
        return []
    return [ScheduledJob("workflow.time_triggers", _tick, every=EVERY, prepare=_replan, finish=_drain)]


def _scheduler(runtime):
    from .scheduler import Scheduler

    return Scheduler(engine_of(runtime))


def _tick(runtime, now) -> dict[str, int]:
    return _scheduler(runtime).tick(now)


def _replan(runtime, now) -> dict[str, int]:
    return _scheduler(runtime).replan(now)


def _drain(runtime, timeout: float) -> None:
    runner = engine_of(runtime).runner
    if runner is not None and hasattr(runner, "drain"):
        runner.drain(timeout=timeout)


# -- commands --------------------------------------------------------------------------------------

@hookimpl
def crm_cli_commands():
    return [worker, automations]


@click.command()
@click.option("--burst", is_flag=True, help="Run the jobs waiting now, then stop.")
def worker(burst: bool) -> None:
    """Run an rq worker for automation jobs (needs REDIS_URL; start as many as you need)."""
    from engine.settings import Settings

    from .worker import work

    settings = Settings.from_env()
    if not settings.redis_url:
        click.echo("crm worker needs REDIS_URL; without it, jobs run inside the server process.", err=True)
        sys.exit(2)
    work(settings, burst=burst)


@click.group()
def automations() -> None:
    """The automation run log: list runs, run dead ones again."""


@automations.command("runs")
@click.option("--status", type=click.Choice(["queued", "running", "retrying", "done", "dead", "stopped"]))
@click.option("--automation", default=None)
@click.option("--limit", default=20, show_default=True)
@click.pass_obj
def automations_runs(crm, status: str | None, automation: str | None, limit: int) -> None:
    """The latest runs, newest first."""
    import sqlalchemy as sa

    rt = crm.runtime()
    runs = engine_of(rt).runs
    stmt = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(runs.c.status == status)
    if automation:
        stmt = stmt.where(runs.c.automation == automation)
    with rt.db.read() as conn:
        rows = conn.execute(stmt).all()
    for row in rows:
        error = f"  {row.error}" if row.error else ""
        click.echo(f"{row.id:>7}  {row.status:<8} {row.automation}  {row.entity} {row.record_id}  "
                   f"[{row.trigger}] attempts {row.attempts}/{row.max_attempts}{error}")
    if not rows:
        click.echo("No runs.")


@automations.command("rerun")
@click.argument("run_ids", nargs=-1, type=int)
@click.option("--dead", is_flag=True, help="Every dead run.")
@click.pass_obj
def automations_rerun(crm, run_ids: tuple[int, ...], dead: bool) -> None:
    """Queue dead runs again; they continue from their first action not done."""
    if not run_ids and not dead:
        raise click.UsageError("name run ids or pass --dead")
    rt = crm.runtime()
    ids = engine_of(rt).rerun(list(run_ids), dead=dead)
    if ids:
        _drain(rt, 600)
    click.echo(f"Queued again: {', '.join(map(str, ids)) or 'none'}")
