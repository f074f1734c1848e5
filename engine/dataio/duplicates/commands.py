"""Duplicates on the command line (``crm duplicates``): index the keys of existing records
(``backfill``, after adding or changing a rule; the scheduler also does it every few minutes) and
list the groups of likely duplicates of an entity (``scan``)."""

from __future__ import annotations

import json
import time

import click

from engine.plugins import hookimpl


@hookimpl
def crm_cli_commands():
    return [duplicates]


@click.group()
def duplicates() -> None:
    """Duplicate rules: index existing records, scan for groups of likely duplicates."""


def _entities(rt, entity: str | None) -> list[str]:
    from .plugin import service_of

    service = service_of(rt)
    if entity is None:
        return service.entities
    if not service.rules_of(entity):
        raise click.ClickException(f"{entity} has no duplicate rules (entities with rules: "
                                   f"{', '.join(service.entities) or 'none'})")
    return [entity]


@duplicates.command("backfill")
@click.argument("entity", required=False)
@click.pass_obj
def duplicates_backfill(crm, entity: str | None) -> None:
    """Index the records of ENTITY (default: every entity with rules) the key table lacks."""
    from .keys import backfill
    from .plugin import service_of

    rt = crm.runtime()
    for name in _entities(rt, entity):
        started = time.perf_counter()
        done = backfill(rt, service_of(rt), name, progress=lambda n, name=name: click.echo(f"{name}: {n} ...", err=True))
        click.echo(f"{name}: indexed {done} record(s) in {time.perf_counter() - started:.1f} s")


@duplicates.command("scan")
@click.argument("entity")
@click.option("--rule", default=None, help="Only this rule.")
@click.option("--json", "as_json", is_flag=True, help="Every group as a JSON line.")
@click.option("--limit", type=click.IntRange(0), default=20, help="Groups shown (0: all).")
@click.pass_obj
def duplicates_scan(crm, entity: str, rule: str | None, as_json: bool, limit: int) -> None:
    """List groups of likely duplicates of ENTITY (all records: the command runs as the system)."""
    from .scan import duplicate_groups, with_titles

    rt = crm.runtime()
    _entities(rt, entity)
    started = time.perf_counter()
    groups = duplicate_groups(rt, entity, None, rule=rule)
    took = time.perf_counter() - started
    shown = with_titles(rt, entity, groups[:limit] if limit else groups)
    for grp in shown:
        if as_json:
            click.echo(json.dumps(grp.as_json(), ensure_ascii=False))
        else:
            names = ", ".join(f"{grp.titles.get(i, '?')} (#{i})" for i in grp.ids)
            click.echo(f"{grp.rule:<20} {grp.score:5.0%}  {names}")
    click.echo(f"{len(groups)} group(s), {sum(len(g.ids) for g in groups)} record(s), in {took:.1f} s", err=True)
