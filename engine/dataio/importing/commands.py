"""Imports on the command line: ``crm import FILE --entity E [options]`` (runs in this process, with
a progress bar), ``crm import list``, ``crm import revert ID``, ``crm import resume ID`` (after a
crash: goes on from the job's checkpoint) and ``crm import errors ID`` (the rejected rows as CSV).

The command line writes as an unrestricted caller, like every ``crm`` command.
"""

from __future__ import annotations

import click

from engine.plugins import hookimpl


@hookimpl
def crm_cli_commands():
    return [imports]


class _FileFirst(click.Group):
    """``crm import FILE ...`` and ``crm import revert ID``: a first word that is no subcommand is a file."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["file", *args]
        return super().parse_args(ctx, args)


def _service(crm):
    from .plugin import imports_of

    service = imports_of(crm.runtime())
    if service is None:
        raise click.ClickException("the imports plugin is turned off (CRM_DISABLED_PLUGINS)")
    return service


@click.group("import", cls=_FileFirst)
def imports() -> None:
    """Import records from CSV or XLSX files (crm import FILE --entity E), list, revert, resume."""


@imports.command("file")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--entity", required=True, help="The entity the rows become records of.")
@click.option("--mapping", "mapping_name", default=None, help="A mapping saved for the entity under this name.")
@click.option("--mode", type=click.Choice(["create", "update", "upsert"]), default="create", show_default=True)
@click.option("--key", default=None, help="The unique field an update or upsert finds records by (default: id).")
@click.option("--dry-run", is_flag=True, help="Check every row and write nothing.")
@click.option("--encoding", default=None, help="The file's encoding (default: detected).")
@click.option("--delimiter", default=None, help="The CSV delimiter (default: sniffed; 'tab' for a tab).")
@click.option("--sheet", default=None, help="The XLSX sheet (default: the first).")
@click.option("--locale", default=None, help="Formats of dates and numbers in the file (en, de, fr, zh...).")
@click.option("--unresolved", type=click.Choice(["error", "empty", "create"]), default="error", show_default=True,
              help="What a lookup value that finds no record does.")
@click.option("--duplicates", type=click.Choice(["error", "skip", "create", "update"]), default="error",
              show_default=True, help="What a new row that matches a duplicate rule does (update: its one match).")
@click.option("--no-automations", is_flag=True, help="Do not run automations for these writes (audited).")
@click.pass_obj
def import_file(crm, path, entity, mapping_name, mode, key, dry_run, encoding, delimiter, sheet, locale,
                unresolved, duplicates, no_automations) -> None:
    """Import FILE into ENTITY, with a progress bar; the summary and the first errors at the end."""
    from .readers import ImportFileError
    from .service import ImportError_, Options
    from .store import load_mapping

    service = _service(crm)
    options = Options(mode=mode, key=key, encoding=encoding, delimiter="\t" if delimiter == "tab" else delimiter,
                      sheet=sheet, locale=locale, unresolved=unresolved, duplicates=duplicates,
                      automations=not no_automations)
    try:
        if mapping_name:
            options.mapping = load_mapping(service, entity, mapping_name)
        job_id = service.start(path, entity, options, user_id=None, dry_run=dry_run, run=False)
    except (ImportFileError, ImportError_) as exc:
        raise click.ClickException(str(exc)) from None
    total = service.get(job_id)["options"].get("rows") or 0
    click.echo(f"import {job_id}: {total} rows into {entity}{' (dry run)' if dry_run else ''}")
    with click.progressbar(length=total, label="rows", show_pos=True, show_eta=True) as bar:
        shown = [0]

        def progress(done: int) -> None:
            bar.update(done - shown[0])
            shown[0] = done

        job = service.run(job_id, progress=progress)
    _summary(service, job)


@imports.command("resume")
@click.argument("job_id", type=int)
@click.pass_obj
def import_resume(crm, job_id: int) -> None:
    """Go on with an import whose process died, from its last committed chunk."""
    service = _service(crm)
    if service.get(job_id) is None:
        raise click.ClickException(f"there is no import {job_id}")
    _summary(service, service.run(job_id, force=True))


@imports.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def import_list(crm, limit: int) -> None:
    """The latest imports: id, status, entity, counts, file."""
    for job in _service(crm).list(limit=limit):
        click.echo(f"{job['id']:>6} {job['status']:<10}{' dry' if job['dry_run'] else '    '} {job['entity']:<14} "
                   f"created {job['created']}, updated {job['updated']}, failed {job['failed']}  {job['file_name']}")


@imports.command("revert")
@click.argument("job_id", type=int)
@click.pass_obj
def import_revert(crm, job_id: int) -> None:
    """Undo an import: delete what it created, restore what it updated (refused per record changed since)."""
    from engine.storage.context import Context

    from .revert import RevertRefused, revert

    try:
        result = revert(_service(crm), job_id, Context())
    except RevertRefused as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"reverted {result['reverted']} records")
    for item in result["refused"]:
        click.echo(f"  row {item['row']}: record {item['record_id']} not reverted: {item['reason']}")
    if result["refused"]:
        raise SystemExit(1)


@imports.command("errors")
@click.argument("job_id", type=int)
@click.pass_obj
def import_errors(crm, job_id: int) -> None:
    """The rejected rows of an import as CSV (their columns plus ``error``), to fix and import again."""
    from .revert import error_rows_csv

    service = _service(crm)
    if service.get(job_id) is None:
        raise click.ClickException(f"there is no import {job_id}")
    for text in error_rows_csv(service, job_id):
        click.echo(text, nl=False)


def _summary(service, job: dict) -> None:
    verb = "would be " if job["dry_run"] else ""
    click.echo(f"import {job['id']} {job['status']}: {verb}created {job['created']}, {verb}updated {job['updated']}, "
               f"unchanged {job['unchanged']}, failed {job['failed']}")
    if job["error"]:
        click.echo(f"  stopped: {job['error']}")
    for column, errors in service.first_errors(job["id"], per_column=3).items():
        for e in errors:
            click.echo(f"  row {e['row']}, {column}: {e['message']}")
    if job["failed"]:
        click.echo(f"  the rejected rows: crm import errors {job['id']} > errors.csv")
