"""tlbench as a user without the checkout has it: built into a wheel, installed without the
repository on the path, run from another folder through `python -m tlbench` and the console
scripts, with a config folder of the user's own next to the packaged configs."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, TINY

SOURCES = ("pyproject.toml", "README.md", "conf", "tlbench")  # what the wheel is built from
SCRIPTS = ("tlbench", "tlbench-report", "tlbench-predict", "tlbench-lr-find", "tlbench-refit", "tlbench-soup")
SMALL = [*TINY, "epochs=1", "pretrained=false", "threads=1"]
# Builds a wheel and runs the installed copy in processes of its own: the e2e command (README "Tests").
pytestmark = pytest.mark.e2e
# A user's own model option: timm's test_resnet (0.4 M parameters), its head started as the package's options never do.
MY_MODEL = "name: test_resnet\nsource: timm\nweights_file: null\nhead_init: normal\nkwargs: {}\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, site): the wheel built from a copy of the sources (so the build writes no build/ or
    egg-info into the checkout, and no stale build/lib file reaches the wheel) and installed into
    `site` with pip's --target, as a package folder with its console scripts in site/bin."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip([*wheel_command(), "-w", str(root / "wheel"), str(source)])
    wheel = next((root / "wheel").glob("tlbench-*.whl"))
    pip(["install", "--no-deps", "--target", str(root / "site"), str(wheel)])
    return wheel, root / "site"


def wheel_command() -> list[str]:
    """`pip wheel --no-deps`, with this environment's setuptools when it can build the wheel
    (70.1 ships bdist_wheel); a fresh venv's older one cannot, and pip then fetches the backend from
    the package registry, as `pip install -e .` does."""
    try:
        version = tuple(int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = (0, 0)
    return ["wheel", "--no-deps", *(["--no-build-isolation"] if version >= (70, 1) else [])]


def pip(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def outside(site: Path, tmp_path: Path, *command: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Runs `command` in a folder outside the checkout, importing only the installed copy."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), TLBENCH_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TLBENCH_WEIGHTS_DIR=str(tmp_path / "weights"), TLBENCH_DATA_DIR=str(tmp_path / "data"))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    assert not cwd.resolve().is_relative_to(REPO), "run the installed copy away from the checkout"
    done = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    return done


def my_conf(tmp_path: Path) -> Path:
    """A user's own config folder, laid out as conf/: options that the package does not have."""
    folder = tmp_path / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "my_resnet.yaml").write_text(MY_MODEL)
    (folder / "dataset").mkdir()  # and a data set option that starts from a packaged one
    (folder / "dataset" / "my_synthetic.yaml").write_text("defaults:\n  - synthetic\n  - _self_\n\nnum_classes: 3\n")
    return folder


def test_the_wheel_carries_every_config_the_code_and_the_console_scripts(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    configs = {f"tlbench/conf/{p.relative_to(REPO / 'conf').as_posix()}" for p in (REPO / "conf").rglob("*.yaml")}
    assert "tlbench/conf/config.yaml" in configs and configs <= names, sorted(configs - names)
    groups = {p.name for p in (REPO / "conf").iterdir() if p.is_dir()}
    assert {"model", "dataset", "augment", "optimizer", "schedule", "freeze", "experiment", "hydra"} <= groups
    assert all(any(n.startswith(f"tlbench/conf/{group}/") for n in names) for group in groups)
    code = {p.relative_to(REPO).as_posix() for p in (REPO / "tlbench").rglob("*.py") if "__pycache__" not in p.parts}
    assert code <= names, f"missing from the wheel (a new subpackage for pyproject's packages?): {sorted(code - names)}"
    assert not any(n.startswith("conf/") for n in names)
    for script in SCRIPTS:
        assert f"{script} = tlbench." in entry_points


def test_the_installed_copy_runs_a_tiny_training_from_outside_the_checkout(installed, tmp_path):
    _, site = installed
    where = outside(site, tmp_path, sys.executable, "-c",
                    "import tlbench.configs as c; print(c.__file__, c.config_dir())")
    module, configs = map(Path, where.stdout.split())
    assert module.is_relative_to(site) and configs == site / "tlbench" / "conf"
    outside(site, tmp_path, sys.executable, "-m", "tlbench", *SMALL, "model.name=test_resnet",
            f"results_dir={tmp_path / 'out'}")
    [found] = (tmp_path / "out").glob("runs/*/*/result.json")
    result = json.loads(found.read_text())
    assert result["status"] == "ok" and len(result["epochs"]) == 1


def test_the_console_script_sweeps_a_users_own_model_through_the_search_path(installed, tmp_path):
    _, site = installed
    mine, sweep = my_conf(tmp_path), tmp_path / "sweep"
    outside(site, tmp_path, str(site / "bin" / "tlbench"), "-m", *SMALL, f"hydra.searchpath=[file://{mine}]",
            "model=my_resnet", "seed=0", f"hydra.sweep.dir={sweep}")
    [found] = sweep.glob("*/result.json")
    result = json.loads(found.read_text())
    assert result["status"] == "ok" and result["model"] == "test_resnet"
    assert result["config"]["model"]["head_init"] == "normal"  # my_resnet.yaml's, not a packaged option's
    assert (sweep / "report.md").is_file()  # the report callback of the packaged config.yaml ran


def test_config_dir_adds_a_users_folder_to_the_packaged_configs(installed, tmp_path):
    _, site = installed
    composed = outside(site, tmp_path, str(site / "bin" / "tlbench"), "-cd", str(my_conf(tmp_path)),
                       "model=my_resnet", "dataset=my_synthetic", "--cfg", "job")
    assert "name: test_resnet" in composed.stdout and "head_init: normal" in composed.stdout
    assert "name: synthetic" in composed.stdout and "num_classes: 3" in composed.stdout
    for script in SCRIPTS[1:]:
        assert "usage:" in outside(site, tmp_path, str(site / "bin" / script), "--help").stdout
