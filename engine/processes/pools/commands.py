"""The pools on the command line (``crm pools``): list them with their holds, set a user's own limits,
run one recycling pass (``--now`` to plan against another time)."""

from __future__ import annotations

from datetime import datetime, timezone

import click

from engine.plugins import hookimpl


@hookimpl
def crm_cli_commands():
    return [pools]


def _service(crm):
    from .plugin import pools_of

    service = pools_of(crm.runtime())
    if service is None:
        raise click.ClickException("the pools plugin is turned off (CRM_DISABLED_PLUGINS)")
    return service


@click.group()
def pools() -> None:
    """Pools of unowned records (公海): limits and recycling."""


@pools.command("list")
@click.pass_obj
def pools_list(crm) -> None:
    """Each pool: its entity, its limits and how many records are held from it."""
    import sqlalchemy as sa

    service = _service(crm)
    h = service.holds
    with service.db.read() as conn:
        held = dict(conn.execute(sa.select(h.c.pool, sa.func.count()).group_by(h.c.pool)).all())
    for pool in service.pools.values():
        click.echo(f"{pool.name:<20} {pool.entity:<14} owned {pool.limits.owned}, per day {pool.limits.per_day}; "
                   f"held now {held.get(pool.name, 0)}")


@pools.command("limit")
@click.argument("pool")
@click.argument("user_id", type=int)
@click.option("--owned", type=click.IntRange(0), default=None, help="Most records held at once (omit: the role's).")
@click.option("--per-day", type=click.IntRange(0), default=None, help="Most claims a day (omit: the role's).")
@click.pass_obj
def pools_limit(crm, pool: str, user_id: int, owned: int | None, per_day: int | None) -> None:
    """Set a user's own limits in POOL (neither option: back to the role's)."""
    from .service import PoolError

    try:
        _service(crm).set_limit(pool, user_id, owned=owned, per_day=per_day, role="admin")
    except PoolError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{pool}: user {user_id} owned {owned if owned is not None else 'role'}, "
               f"per day {per_day if per_day is not None else 'role'}")


@pools.command("recycle")
@click.option("--now", "at", type=click.DateTime(), default=None, help="Plan as if it were this time (UTC).")
@click.pass_obj
def pools_recycle(crm, at: datetime | None) -> None:
    """One recycling pass now (the scheduler runs it every minute)."""
    from .recycle import recycle

    now = at.replace(tzinfo=timezone.utc) if at is not None else None
    counts = recycle(_service(crm), now)
    click.echo(", ".join(f"{k} {v}" for k, v in counts.items()))
