"""The architecture linter refuses what breaks the contracts: the real `.importlinter`, pointed at a
small package tree of the same shape in tmp_path, keeps a clean tree and refuses a wrong import.

`make test` runs `lint-imports` on the engine itself; this test proves the mechanism: that the
contracts are read, that a lower layer importing a higher one (also inside a function) or one
capability importing another fails, and that imports only for type checking do not count.
"""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
FAKE = "fakecrm"

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def contract_modules(config: configparser.ConfigParser) -> set[str]:
    """Every module the contracts name (``engine.x``), from the layers and independence contracts."""
    names: set[str] = set()
    for section in config.sections():
        containers = config.get(section, "containers", fallback="").split() or [""]
        for key in ("layers", "modules"):
            if config.has_option(section, key):
                found = {m for m in re.split(r"[\s|:]+", config.get(section, key)) if m}
                names |= {f"{c}.{m}" if c else m for c in containers for m in found}   # within a container
    return names


@pytest.fixture
def project(tmp_path):
    """A copy of `.importlinter` for the package `fakecrm`, and a tree with one package per module it
    names (empty: nothing imports anything yet)."""
    text = (ROOT / ".importlinter").read_text(encoding="utf-8")
    text = re.sub(r"\bengine\b", FAKE, text)
    (tmp_path / ".importlinter").write_text(text, encoding="utf-8")
    config = configparser.ConfigParser()
    config.read_string(text)
    for module in sorted(contract_modules(config)) + [FAKE]:
        folder = tmp_path.joinpath(*module.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text('"""A stand-in."""\n', encoding="utf-8")
    return tmp_path


def write(project: Path, module: str, source: str) -> None:
    (project.joinpath(*module.split(".")) / "__init__.py").write_text(source, encoding="utf-8")


def lint(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(project / ".importlinter"), "--no-cache"],
                          cwd=project, env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_name_the_layers_and_the_capabilities():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    kinds = {config.get(s, "type") for s in config.sections() if s.startswith("importlinter:contract:")}
    assert kinds == {"layers", "independence"}
    assert config.getboolean("importlinter", "exclude_type_checking_imports")
    assert {"engine.workflow", "engine.dashboards", "engine.storage", "engine.metadata"} <= contract_modules(config)


def test_a_clean_tree_and_downward_imports_are_kept(project):
    write(project, f"{FAKE}.api", f"from {FAKE}.storage import *\nimport {FAKE}.metadata\n")
    write(project, f"{FAKE}.workflow", f"from {FAKE} import runtime, storage\n")
    result = lint(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", result.stdout), result.stdout


def test_a_lower_layer_importing_a_higher_one_is_refused(project):
    write(project, f"{FAKE}.storage", f"from {FAKE}.api import *   # the wrong way up\n")
    result = lint(project)
    assert result.returncode != 0
    assert f"{FAKE}.storage is not allowed to import {FAKE}.api" in result.stdout


def test_an_import_inside_a_function_counts_and_one_for_type_checking_does_not(project):
    write(project, f"{FAKE}.metadata", "from typing import TYPE_CHECKING\n"
                                       f"if TYPE_CHECKING:\n    from {FAKE}.storage import Thing\n")
    assert lint(project).returncode == 0
    write(project, f"{FAKE}.rules", f"def later():\n    from {FAKE} import security\n")
    result = lint(project)
    assert result.returncode != 0
    assert f"{FAKE}.rules is not allowed to import {FAKE}.security" in result.stdout


def test_a_capability_importing_another_is_refused(project):
    write(project, f"{FAKE}.dashboards", f"from {FAKE}.workflow import *\n")
    result = lint(project)
    assert result.returncode != 0
    assert re.search(rf"{FAKE}\.dashboards is not allowed to import {FAKE}\.workflow", result.stdout)
    assert "Capabilities are independent" in result.stdout
