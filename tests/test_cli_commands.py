"""``crm_cli_commands``: a plugin's commands are commands of ``crm`` (listed in ``crm --help``, run
with the runtime from the group's context), found without booting the database; a plugin that fails
to load is one line naming where, not a traceback. The workflow's own commands arrive the same way."""

from __future__ import annotations

import textwrap
import uuid

from click.testing import CliRunner

from engine.cli import main
from engine.plugins import make_plugin_manager

GREETER = '''
import click

from engine.plugins import hookimpl


@click.command()
@click.option("--name", default="world")
def hello(name):
    """Say hello (needs no database)."""
    click.echo(f"Hello, {name}!")


@click.command("count-entities")
@click.pass_obj
def count_entities(crm):
    """Count the entities of the booted model."""
    click.echo(f"{len(crm.runtime().model.entities)} entities")


@hookimpl
def crm_cli_commands():
    return [hello, count_entities]
'''

#: A database no command can open: whatever runs with it did not boot the runtime.
NOWHERE = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"


def _plugin_dir(tmp_path, source: str):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"p_{uuid.uuid4().hex[:8]}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return folder


def _env(database_url: str, plugins) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "CRM_PLUGIN_DIRS": str(plugins)}


def test_a_plugin_command_is_listed_in_crm_help_and_runs_without_booting_the_database(tmp_path):
    env = _env(NOWHERE, _plugin_dir(tmp_path, GREETER))
    listed = CliRunner().invoke(main, ["--help"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "hello" in listed.output and "Say hello" in listed.output and "count-entities" in listed.output
    assert "validate" in listed.output and "worker" in listed.output   # the core's and the workflow's too
    ran = CliRunner().invoke(main, ["hello", "--name", "Ada"], env=env)
    assert ran.exit_code == 0 and ran.output == "Hello, Ada!\n"
    assert CliRunner().invoke(main, ["hello", "--help"], env=env).exit_code == 0


def test_a_plugin_command_gets_the_booted_runtime_from_the_group(settings, tmp_path):
    env = _env(settings.database_url, _plugin_dir(tmp_path, GREETER))
    ran = CliRunner().invoke(main, ["count-entities"], env=env)
    assert ran.exit_code == 0, ran.output
    assert ran.output.endswith(" entities\n") and int(ran.output.split()[0]) > 5


def test_a_plugin_that_fails_to_load_is_one_line_naming_its_file_not_a_traceback(tmp_path):
    folder = _plugin_dir(tmp_path, "import click\n\nraise RuntimeError('the licence file is missing')\n")
    for args in (["--help"], ["hello"], ["validate"]):
        result = CliRunner().invoke(main, args, env=_env(NOWHERE, folder))
        assert result.exit_code == 1, (args, result.output)
        assert "Traceback" not in result.output
        [line] = result.output.strip().splitlines()
        assert line.startswith("Error: A plugin failed to load (") and str(folder) in line
        assert ".py:3): RuntimeError: the licence file is missing" in line


def test_the_workflow_contributes_its_commands_through_the_hook():
    pm = make_plugin_manager(entry_point_plugins=False)
    names = {command.name for commands in pm.hook.crm_cli_commands() for command in commands}
    assert {"worker", "automations"} <= names
    assert "worker" not in main.commands and "automations" not in main.commands   # not the core's
