"""The layers hold (CONTRIBUTING.md "Layout"): the import contracts in pyproject.toml pass, and the config
(omegaconf, Hydra, DictConfig) is named only at the edge: the entry point, the config locator,
the report's Hydra callback and the run layer."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG_EDGE = {"tlbench/__main__.py", "tlbench/configs.py", "tlbench/report/callback.py"}


def test_import_contracts_hold():
    pytest.importorskip("importlinter")
    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and "0 broken" in done.stdout


def test_only_the_edge_reads_the_config():
    found = set()
    for path in (REPO / "tlbench").rglob("*.py"):
        code = path.read_text()
        if re.search(r"^\s*(from|import) (omegaconf|hydra)\b|DictConfig", code, flags=re.M):
            found.add(path.relative_to(REPO).as_posix())
    outside = {name for name in found if name not in CONFIG_EDGE and not name.startswith("tlbench/runner/")}
    assert not outside, f"the config is read below the run layer in {sorted(outside)}"


def test_a_planted_cycle_is_caught(tmp_path):
    """The cycle check is not vacuous: the LR finder command imports the build step; the build step
    importing it back (the old run <-> lr_find cycle) is found."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("tlbench")
    assert graph.direct_import_exists(importer="tlbench.runner.lr_find", imported="tlbench.runner.build")
    assert not graph.nominate_cycle_breakers("tlbench.runner")
    graph.add_import(importer="tlbench.runner.build", imported="tlbench.runner.lr_find")
    assert graph.nominate_cycle_breakers("tlbench.runner")
