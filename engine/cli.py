"""The ``crm`` command: the platform's commands, and those plugins add (``crm_cli_commands``).

The group knows the plugins' commands before it parses (``crm --help`` lists them): it builds the
plugin manager from the environment when a command is looked up, without booting the database. A
plugin that fails to load is one line naming where, exit 1. Every command gets a ``CliContext``
(``@click.pass_obj``): ``obj.runtime()`` boots the engine, with one-line errors for the metadata and
the keys.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import sqlalchemy as sa

from engine.cli_access import keys, token, user
from engine.metadata import MetadataError
from engine.settings import Settings


class CliContext:
    """What the ``crm`` group gives every command, its own and the plugins': the plugins and the runtime."""

    def __init__(self):
        self._pm = None
        self._commands: dict[str, click.Command] | None = None
        self._runtime = None

    @property
    def plugins(self):
        """The plugin manager of the environment's settings; a plugin that fails to load stops the command."""
        if self._pm is None:
            from engine.plugins import make_plugin_manager

            settings = Settings.from_env()
            try:
                self._pm = make_plugin_manager(settings.plugin_dirs, entry_point_plugins=settings.entry_point_plugins,
                                               disabled=settings.disabled_plugins)
            except Exception as exc:  # noqa: BLE001 - any error of a plugin's code: one line, not a traceback
                raise click.ClickException(_plugin_failure(exc)) from None
        return self._pm

    def commands(self) -> dict[str, click.Command]:
        """The commands plugins contribute, by name; the first plugin registered keeps a name."""
        if self._commands is None:
            found: dict[str, click.Command] = {}
            for contributed in reversed(self.plugins.hook.crm_cli_commands()):   # pluggy calls the last first
                for command in contributed or ():
                    found.setdefault(command.name, command)
            self._commands = found
        return self._commands

    def runtime(self):
        """The engine booted from the environment (once per command)."""
        if self._runtime is None:
            from engine.runtime import Runtime
            from engine.storage.crypto import EncryptionError

            self.plugins   # noqa: B018 - a plugin that fails to load: its one line, before the boot
            try:
                self._runtime = Runtime.boot(Settings.from_env())
            except MetadataError as exc:
                _print_problems(exc)
                sys.exit(1)
            except EncryptionError as exc:
                click.echo(f"Cannot start: {exc}", err=True)
                sys.exit(1)
        return self._runtime


def _plugin_failure(exc: BaseException) -> str:
    """One line: what failed to load, where (the plugin's file and line), and why."""
    import traceback

    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}:{exc.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if not f.filename.startswith("<") and "importlib" not in f.filename and "pluggy" not in f.filename]
        if frames:
            where = f"{frames[-1].filename}:{frames[-1].lineno}"
    reason = (str(exc).strip().splitlines() or [""])[0]
    return f"A plugin failed to load{f' ({where})' if where else ''}: {type(exc).__name__}: {reason}"


def _context() -> CliContext:
    return click.get_current_context().find_root().ensure_object(CliContext)


def _runtime():
    return _context().runtime()


def _print_problems(exc: MetadataError) -> None:
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(exc.problems)} problem(s) in the metadata.", err=True)


class _Commands(click.Group):
    """The ``crm`` group: its own commands, then the plugins'. A database that cannot be reached or
    refuses a statement is one line that names it (password hidden), exit 1, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *ctx.ensure_object(CliContext).commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or ctx.ensure_object(CliContext).commands().get(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except sa.exc.OperationalError as exc:
            url = sa.engine.make_url(Settings.from_env().database_url).render_as_string(hide_password=True)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            click.echo(f"Database error ({url}): {reason}", err=True)
            sys.exit(1)


@click.group(cls=_Commands)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run and administer the CRM engine. Settings come from the environment (see docs/operations.md)."""
    ctx.ensure_object(CliContext)


for _command in (token, user, keys):
    main.add_command(_command)


@main.command()
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--alone", is_flag=True, help="Check DIRECTORY on the system layer only, without the base CRM.")
def validate(directory: Path | None, alone: bool) -> None:
    """Check the metadata: every problem with file:line, exit 1 if any; else a summary."""
    from engine.plugins import plugin_layers
    from engine.runtime import load_model_from

    settings = Settings.from_env()
    pm = _context().plugins
    layers = settings.layers(plugin_layers(pm))
    if directory is not None:
        base = (settings.config_root / "base").resolve()
        if directory.resolve() == base:
            layers = layers[:2]
        else:
            layers = layers[:1] if alone else layers[:2]
            layers.append((f"industry:{directory.name}", directory))
    try:
        model = load_model_from(pm, layers)
    except MetadataError as exc:
        _print_problems(exc)
        sys.exit(1)
    summary = model.summary()
    click.echo(f"OK: {summary['entities']} entities, {summary['fields']} fields "
               f"(layers: {', '.join(name for name, _ in model.layers)}; model {model.digest})")
    for entity in model.entities.values():
        click.echo(f"  {entity.name:<20} {len(entity.fields):>3} fields  [{entity.origin.layer}]")


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--allow-data-loss", is_flag=True, help="Apply steps that drop columns or tables holding values.")
def migrate(dry_run: bool, allow_data_loss: bool) -> None:
    """Bring the database to the model: plan, back up, apply in one transaction."""
    from engine.storage.backup import BackupError
    from engine.storage.migrate import MigrationRefused

    rt = _runtime()
    plan = rt.plan()
    if plan.changes_model:
        click.echo(f"Migration plan to model v{plan.version} ({plan.digest}):")
        click.echo(plan.describe())
    else:
        click.echo(f"The database is at model v{plan.version - 1} ({plan.digest}); nothing to change.")
    if dry_run:
        if plan.blocked or (plan.data_loss and not allow_data_loss):
            click.echo("This plan would be refused (see the marked steps); "
                       "data loss needs --allow-data-loss, a blocked step needs the data fixed.", err=True)
            sys.exit(1)
        return
    try:
        applied = rt.migrate(allow_data_loss=allow_data_loss, plan=plan, progress=click.echo)
    except MigrationRefused as exc:
        click.echo(f"Refused, nothing changed. {exc}", err=True)
        sys.exit(1)
    except BackupError as exc:
        click.echo(f"No backup could be taken, so nothing was changed: {exc}", err=True)
        sys.exit(1)
    if applied.steps or applied.backup:
        click.echo(f"Applied {len(applied.steps)} step(s); model v{applied.version}; backup: {applied.backup}")
    else:
        click.echo(f"Database is at model v{applied.version}.")


@main.command()
@click.option("--records", default=50, show_default=True, help="Unit of demo records (an entity seeds ratio x unit).")
@click.option("--seed", "seed_value", default=42, show_default=True, help="Random seed; the same seed gives the same data.")
@click.option("--if-empty", is_flag=True, help="Do nothing if the database already holds records.")
def seed(records: int, seed_value: int, if_empty: bool) -> None:
    """Fill the database with deterministic demo data."""
    from engine.demo import seed as run_seed

    rt = _runtime()
    if if_empty and _has_records(rt):
        click.echo("Demo data: the database already holds records; left as it is.")
        return
    counts = run_seed(rt.records, records, seed_value=seed_value)
    click.echo(f"Demo data: {sum(counts.values())} records in {len(counts)} entities.")


@main.command()
@click.option("--email", default="admin@example.com", show_default=True)
@click.option("--name", default="Administrator", show_default=True)
@click.option("--reset-password", "reset", is_flag=True,
              help="Give the admin a new password (CRM_ADMIN_PASSWORD, or a random one) and print it once.")
def admin(email: str, name: str, reset: bool) -> None:
    """Create the admin user if missing, and print its login; an existing password changes only with
    --reset-password (or CRM_ADMIN_PASSWORD)."""
    rt = _runtime()
    click.echo(ensure_admin(rt, email, name, reset=reset))


PORT_OPTION = click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), envvar="CRM_PORT",
                           help="Port to serve on (or CRM_PORT; `make run PORT=5001`).")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@PORT_OPTION
def serve(host: str, port: int) -> None:
    """Serve the web application (development server)."""
    from engine.app import create_app

    _exit_unless_port_free(host, port)
    rt = _runtime()
    create_app(rt.settings, runtime=rt).run(host=host, port=port)


@main.command()
@click.option("--records", default=50, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@PORT_OPTION
def up(records: int, host: str, port: int) -> None:
    """Migrate, seed demo data on an empty database, ensure the admin, and serve: what `make run` does."""
    from engine.app import create_app
    from engine.demo import seed as run_seed

    from engine.storage.backup import BackupError
    from engine.storage.migrate import MigrationRefused

    _exit_unless_port_free(host, port)
    made = _demo_key()
    try:
        rt = _runtime()
    except SystemExit:
        if made:   # a key made just now that cannot start this database: leave nothing behind
            made.unlink(missing_ok=True)
        raise
    try:
        applied = rt.migrate(progress=click.echo)
    except (MigrationRefused, BackupError) as exc:
        click.echo(f"The database was not changed. {exc}\nRun `crm migrate --dry-run` to see the plan.", err=True)
        sys.exit(1)
    click.echo(f"Database {rt.settings.database_url} at model v{applied.version}.")
    if not _has_records(rt):
        counts = run_seed(rt.records, records)
        click.echo(f"Demo data: {sum(counts.values())} records in {len(counts)} entities.")
    login = ensure_admin(rt, "admin@example.com", "Administrator")
    _scheduler_thread(rt)
    click.echo("\n" + login + f"\nWeb UI: http://{host}:{port}/ (sign in with the login above)"
               f"\nAPI docs: http://{host}:{port}/api/docs\n")
    create_app(rt.settings, runtime=rt).run(host=host, port=port)


def _scheduler_thread(rt, interval: float = 30.0) -> None:
    """The demo runs the scheduler inside the server; deployments run `crm scheduler` on its own."""
    import threading

    threading.Thread(target=rt.scheduler().run_forever, args=(interval,), name="crm-scheduler", daemon=True).start()


@main.command()
@click.option("--once", is_flag=True, help="Prepare, run every job once, and stop.")
@click.option("--now", "now_text", default=None, help="Pretend it is this ISO time (with --once; for tests and catch-up).")
@click.option("--interval", default=30.0, show_default=True, help="Seconds between passes.")
def scheduler(once: bool, now_text: str | None, interval: float) -> None:
    """Run the scheduled jobs of the platform and its plugins: time-based automations (cron and
    date-relative), requeuing jobs whose worker died, and every job a plugin adds."""
    rt = _runtime()
    sched = rt.scheduler()
    if once:
        now = _parse_now(now_text) if now_text else None
        planned = sched.prepare(now)
        failed = list(sched.failed)
        counts = sched.tick(now)
        failed += sched.failed
        click.echo(_describe_pass(planned, counts))
        sched.finish(timeout=600)
        if failed:
            click.echo(f"Failed (see the log above): {', '.join(failed)}", err=True)
            sys.exit(1)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sched.run_forever(interval)


#: The line `crm scheduler --once` prints: the time triggers' counts by the names users know, then
#: any other job's.
_PASS_LINE = {"fired": ("scheduled", "cron"), "requeued": ("reclaimed",)}


def _describe_pass(planned: dict, counts: dict) -> str:
    numbers = {name: sum(counts.get(key, 0) for key in keys) for name, keys in _PASS_LINE.items()}
    shown = {key for keys in _PASS_LINE.values() for key in keys}
    numbers.update({key: value for key, value in counts.items() if key not in shown})
    total = sum(value for value in planned.values() if isinstance(value, (int, float)))
    return "  ".join([f"planned: {total}", *(f"{name}: {value}" for name, value in numbers.items())])


def _parse_now(text: str):
    from datetime import datetime, timezone

    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO date-time", param_hint="--now") from None
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


@main.command()
def backup() -> None:
    """Write a backup of the database into the backup folder."""
    from engine.storage.backup import BackupError
    from engine.storage.backup import backup as run_backup

    rt = _runtime()
    try:
        click.echo(str(run_backup(rt.db, Path(rt.settings.backup_dir), "manual")))
    except (BackupError, OSError) as exc:
        click.echo(f"No backup was written: {exc}", err=True)
        sys.exit(1)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--keep-credentials", is_flag=True,
              help="Keep the live passwords, API tokens (and revocations), sessions and users' active flags.")
@click.confirmation_option(prompt="Replace the whole database with this backup?")
def restore(file: Path, keep_credentials: bool) -> None:
    """Replace the database with a backup (checked against its manifest first; all or nothing)."""
    from engine.storage.backup import BackupError
    from engine.storage.backup import restore as run_restore

    rt = _runtime()
    try:
        manifest = run_restore(rt.db, file, keep_credentials=keep_credentials)
    except (BackupError, OSError) as exc:
        click.echo(f"Not restored, the database was not changed: {exc}", err=True)
        sys.exit(1)
    kept = "; kept the live credentials" if keep_credentials else ""
    click.echo(f"Restored {file} (model v{manifest.get('model_version', 0)}, taken {manifest.get('taken_at')}){kept}.")


@main.command("eval")
@click.argument("expression")
@click.option("--record", "record_json", default="{}", show_default=True,
              help="The record as JSON; related records nested ({\"parent\": {\"name\": \"Acme\"}}).")
@click.option("--fields", "fields_json", default=None, help='Field types as JSON, e.g. {"amount": "currency"}.')
@click.option("--entity", default=None, help="Check against this entity of the configured model.")
@click.option("--user", "user_json", default=None, help="$user as JSON.")
@click.option("--prior", "prior_json", default=None, help="The record before the change, as JSON.")
@click.option("--new", "is_new", is_flag=True, help="ISNEW() is TRUE.")
@click.option("--now", default=None, help="Fix TODAY() and NOW() (ISO date or date and time, UTC).")
@click.option("--blank-as-zero", is_flag=True, help="Treat blank number fields as zeroes.")
def eval_(expression: str, record_json: str, fields_json: str | None, entity: str | None, user_json: str | None,
          prior_json: str | None, is_new: bool, now: str | None, blank_as_zero: bool) -> None:
    """Evaluate a formula on a record: print the result, or the error with its position (exit 1)."""
    import json

    from engine.rules.cli import run_eval

    try:
        loads = [json.loads(text) if text else None for text in (record_json, fields_json, user_json, prior_json)]
    except ValueError as exc:
        click.echo(f"invalid JSON: {exc}", err=True)
        sys.exit(1)
    model = None
    if entity:
        from engine.plugins import plugin_layers
        from engine.runtime import load_model_from

        settings = Settings.from_env()
        pm = _context().plugins
        try:
            model = load_model_from(pm, settings.layers(plugin_layers(pm)))
        except MetadataError as exc:
            _print_problems(exc)
            sys.exit(1)
    ok, text = run_eval(expression, *loads, entity=entity, model=model, is_new=is_new, now=now,
                        blank_as_zero=blank_as_zero)
    click.echo(text, err=not ok)
    if not ok:
        sys.exit(1)


def _has_records(rt) -> bool:
    with rt.db.read() as conn:
        for entity in rt.model.entities.values():
            table = rt.records.table(entity.name)
            if conn.execute(sa.select(table.c.id).limit(1)).first():
                return True
    return False


def _exit_unless_port_free(host: str, port: int) -> None:
    """Stop with exit status 2 and a clear message, before anything is done or printed, when no server
    can listen on ``host:port`` (werkzeug would only say so after `crm up` printed the address)."""
    import errno
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):   # SO_REUSEADDR, as the server sets it
            return
    except socket.gaierror as exc:
        reason = f"the host {host!r} is not known ({exc.strerror})"
    except OSError as exc:
        reason = (f"port {port} is in use (another `crm up`?)" if exc.errno == errno.EADDRINUSE
                  else f"port {port}: {exc.strerror}")
    click.echo(f"Cannot serve on {host}:{port}: {reason}. Choose another port: `make run PORT={port + 1}`, "
               f"`crm up --port {port + 1}` or CRM_PORT={port + 1}.", err=True)
    sys.exit(2)


def _demo_key() -> Path | None:
    """`crm up` is the laptop demo: without keys in CRM_ENCRYPTION_KEYS or the var folder it makes a
    development key there (mode 0600), where every `crm` command finds it (Settings), and says so
    loudly. Returns the file if it was made just now."""
    from datetime import datetime, timezone

    from engine.storage.crypto import ENV, new_key_line
    from engine.settings import dev_key_file

    settings = Settings.from_env()
    note, made = dev_key_file(settings.var_dir), None
    if settings.encryption_keys_from == ENV:
        return None
    if not settings.encryption_keys:
        note.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(note, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
            out.write(new_key_line(datetime.now(timezone.utc).strftime("dev%Y%m%d%H%M%S")) + "\n")
        made = note
    click.echo(f"WARNING: {ENV} is not set; using the DEVELOPMENT key in {note}. "
               f"Never use it in production: set {ENV} (see docs/security.md).", err=True)
    return made


RESET_HINT = "Forgot it? `crm admin --reset-password` sets a new one and prints it (or set CRM_ADMIN_PASSWORD)."


def _password_holds(rt, user_id: int, password: str) -> bool:
    from engine.security.passwords import verify_password

    creds = rt.records.metadata.tables["_crm_credential"]
    with rt.db.read() as conn:
        stored = conn.execute(sa.select(creds.c.password_hash).where(creds.c.user_id == user_id)).scalar()
    return stored is not None and verify_password(password, stored)


def ensure_admin(rt, email: str, name: str, *, reset: bool = False) -> str:
    """Create the admin user if it does not exist; return the login text.

    A new admin gets ``CRM_ADMIN_PASSWORD`` or a random password; it and a demo API token are kept
    in ``$CRM_VAR_DIR/admin_login.txt`` (mode 0600) so the demo can print them again. An existing
    admin's password is never changed, except explicitly: ``reset`` (`crm admin --reset-password`)
    or a ``CRM_ADMIN_PASSWORD`` that is not its password yet.
    """
    import re

    from engine.security.passwords import new_password, set_password
    from engine.storage.records import Context

    note = Path(rt.settings.var_dir) / "admin_login.txt"
    users = rt.records.query("user", where={"email": email}, limit=1)
    chosen = os.environ.get("CRM_ADMIN_PASSWORD") or None
    if users and not reset and (chosen is None or _password_holds(rt, users[0]["id"], chosen)):
        noted = note.read_text(encoding="utf-8").strip() if note.exists() else ""
        shown = re.search(r"^Admin login: (\S+)  password: (\S+)", noted)
        if shown and shown.group(1) == users[0]["email"] and chosen in (None, shown.group(2)) \
                and _password_holds(rt, users[0]["id"], shown.group(2)):   # the file is this database's
            return noted
        if chosen:
            return f"Admin login: {users[0]['email']}  password: {chosen}"
        return f"Admin login: {users[0]['email']} (exists; its password was not changed)\n{RESET_HINT}"
    password = chosen or new_password()
    if users:
        user = users[0]
    else:
        user = rt.records.create("user", {"name": name, "email": email, "role": "admin"}, context=Context(system=True))
    set_password(rt.records, user["id"], password)
    from engine.security.tokens import create_token

    _, api_token = create_token(rt.records, user["id"], "demo")
    text = f"Admin login: {user['email']}  password: {password}\nAPI token:   {api_token}"
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(text + "\n", encoding="utf-8")
    note.chmod(0o600)
    return text


if __name__ == "__main__":
    main()
