"""Where the Hydra configs are: the one place the entry points, the LR finder and the tests ask.

In a checkout (and an editable install) they are the repository's top-level `conf/`; a wheel
installs the same files as `tlbench/conf` (pyproject.toml maps the package `tlbench.conf` to
`conf/`), so an installed tlbench runs without a checkout. A real folder rather than a
`pkg://tlbench.conf` search path: `@hydra.main(config_path=...)` and `initialize_config_dir`
both take an absolute path, and a user's `--config-dir` / `hydra.searchpath` folders add to it."""

from pathlib import Path

CONFIG_NAME = "config"  # config.yaml, the primary config
PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The folder holding config.yaml: tlbench/conf when installed from a wheel, else the checkout's
    conf/ (packaged first: next to an installed package, `../conf` would be site-packages/conf)."""
    candidates = (PACKAGE / "conf", PACKAGE.parent / "conf")
    for folder in candidates:
        if (folder / f"{CONFIG_NAME}.yaml").is_file():
            return folder
    raise FileNotFoundError(f"tlbench's {CONFIG_NAME}.yaml is in neither {' nor '.join(map(str, candidates))}: "
                            "reinstall tlbench (pip install tlbench-*.whl, or pip install -e . in a checkout)")
