"""Every console script's --help, formatted in this process at a fixed width: the argparse commands by their
`build_parser()`, `tlbench` (Hydra) by Hydra's own help template over conf/."""

import copy
import importlib
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from reference_text.markdown import code, fenced

import tlbench
from tlbench.configs import CONFIG_NAME, config_dir

WIDTH = "100"  # COLUMNS while formatting, so the pages do not follow the terminal of whoever builds them
PYPROJECT = Path(tlbench.__file__).resolve().parents[1] / "pyproject.toml"
HYDRA_ENTRY = "tlbench.__main__:main"
MODULE_ONLY = {"python -m tlbench.bench": "tlbench.bench"}  # commands without a console script


def scripts(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """{command: "module:function"}: pyproject's [project.scripts], then the `python -m` only commands."""
    return {**_console_scripts(pyproject), **{name: f"{module}:main" for name, module in MODULE_ONLY.items()}}


def _console_scripts(pyproject: Path) -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed metadata holds the same table
        from importlib.metadata import entry_points
        return {e.name: e.value for e in entry_points(group="console_scripts") if e.value.startswith("tlbench.")}
    with open(pyproject, "rb") as handle:
        return dict(tomllib.load(handle)["project"]["scripts"])


@contextmanager
def fixed_width():
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        os.environ.pop("COLUMNS") if before is None else os.environ.__setitem__("COLUMNS", before)


def help_text(entry: str, name: str) -> str:
    """What `<name> --help` prints, for the script whose entry point is `entry`."""
    with fixed_width():
        if entry == HYDRA_ENTRY:
            return hydra_help(name)
        module = importlib.import_module(entry.split(":")[0])
        return module.build_parser().format_help()


def hydra_help(name: str, flag: str = "--help") -> str:
    """`tlbench --help` (the groups, their options and the composed config) or `tlbench --hydra-help` (Hydra's
    flags and its own groups, launchers included), as Hydra formats them. Hydra has no public call for its
    help text: this is the one its flags run (hydra-core 1.3)."""
    from hydra import initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from tlbench.runner.sweep import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name=name), _argv0(name):
        hydra = GlobalHydra.instance().hydra
        cfg = hydra.compose_config(CONFIG_NAME, overrides=[], run_mode=RunMode.RUN, with_log_configuration=False)
        if flag == "--hydra-help":
            return hydra.get_help(cfg.hydra.hydra_help, hydra.get_sanitized_hydra_cfg(cfg), get_args_parser(), False)
        return hydra.get_help(cfg.hydra.help, hydra.get_sanitized_cfg(copy.deepcopy(cfg), "job"), get_args_parser(),
                              False)


@contextmanager
def _argv0(name: str):
    """Hydra's shell-completion help names the running program (sys.argv[0]): here, the command documented."""
    before = sys.argv[:]
    sys.argv[:] = [name]
    try:
        yield
    finally:
        sys.argv[:] = before


def commands_markdown(pyproject: Path = PYPROJECT) -> str:
    parts = []
    for name, entry in scripts(pyproject).items():
        parts += [f"## {name}", f"Entry point {code(entry)}.", fenced(f"$ {name} --help\n{help_text(entry, name)}")]
        if entry == HYDRA_ENTRY:
            parts += [f"Hydra's own flags and groups (launchers, sweepers), which {code(name)} takes as every Hydra "
                      "application does:", fenced(f"$ {name} --hydra-help\n{hydra_help(name, '--hydra-help')}")]
    return "\n\n".join(parts)
