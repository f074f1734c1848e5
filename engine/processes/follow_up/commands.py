"""``crm follow-up backfill``: recompute the follow-up signals of every followed record, for data
written before the declaration existed, with the plugin off, or straight into the database.

Records are taken in batches of ids (keyset), each batch recomputed with the same aggregate
queries as the live path (``signals.refresh``) and written in its own transaction, so a large
table never holds one long transaction.
"""

from __future__ import annotations

import click
import sqlalchemy as sa

from engine.plugins import hookimpl

BATCH = 1000


def backfill(runtime, entity: str | None = None, batch: int = BATCH) -> dict[str, tuple[int, int]]:
    """{target entity: (records seen, records changed)} after recomputing every followed record
    (of ``entity`` only, when given)."""
    from .signals import refresh

    writes = runtime.extensions.get("follow_up")
    svc = runtime.records
    counts: dict[str, tuple[int, int]] = {}
    for spec in writes.specs if writes is not None else ():
        for name in spec.targets:
            if entity is not None and name != entity:
                continue
            table = svc.table(name)
            seen = changed = 0
            after = 0
            while True:
                with svc.db.write() as conn:
                    ids = list(conn.execute(sa.select(table.c.id).where(table.c.id > after)
                                            .order_by(table.c.id).limit(batch)).scalars())
                    if not ids:
                        break
                    changed += refresh(svc, conn, spec, name, ids)
                seen += len(ids)
                after = ids[-1]
            before = counts.get(name, (0, 0))
            counts[name] = (before[0] + seen, before[1] + changed)
    return counts


@hookimpl
def crm_cli_commands():
    return [follow_up]


@click.group("follow-up")
def follow_up() -> None:
    """Follow-up signals: last and next activity, when the owner last touched a record."""


@follow_up.command("backfill")
@click.option("--entity", default=None, help="Only the records of this followed entity.")
@click.option("--batch", default=BATCH, show_default=True, help="Records recomputed per transaction.")
@click.pass_obj
def backfill_command(crm, entity: str | None, batch: int) -> None:
    """Recompute the signals of every followed record (set-based, in batches)."""
    rt = crm.runtime()
    writes = rt.extensions.get("follow_up")
    followed = {name for spec in (writes.specs if writes else ()) for name in spec.targets}
    if not followed:
        raise click.ClickException("no follow_up declaration: nothing to backfill")
    if entity is not None and entity not in followed:
        raise click.ClickException(f"{entity!r} is not followed (followed: {', '.join(sorted(followed))})")
    for name, (seen, changed) in backfill(rt, entity, batch).items():
        click.echo(f"{name}: {seen} records, {changed} changed")
