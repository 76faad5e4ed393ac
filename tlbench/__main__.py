"""`python -m tlbench [overrides]` / `python -m tlbench -m a=1,2 b=x,y` (a sweep); the console script
`tlbench` is this `main`. An error a user can fix ends the command with one message, exit code 2
(runner/cli.py)."""

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tlbench.configs import CONFIG_NAME, config_dir
from tlbench.runner import cli
from tlbench.runner.sweep import register_resolvers

log = logging.getLogger("tlbench")
register_resolvers()  # conf/config.yaml names the sweep folder with tlbench.sweep_name


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> float | None:
    """Returns the run's best val accuracy in the data set's metric (results.objective): what a
    search sweeper (Optuna) maximizes; None for a failed run of a sweep (a search records that
    trial as failed and goes on)."""
    from tlbench.records.results import objective
    from tlbench.runner.run import run  # imported here so `--help` and config errors stay fast

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        with cli.escaping_user_errors():
            return objective(run(cfg)["summary"])
    try:
        return objective(run(cfg)["summary"])
    except Exception as err:  # noqa: BLE001 - one failed run must not stop its siblings
        # result.json already records the failure; tlbench.runner.sweep exits non-zero at the sweep's end.
        log.error("run failed, the sweep goes on: %s: %s", type(err).__name__, err)
        return None


def main(argv: list[str] | None = None) -> int:
    """`tlbench <overrides>` with `argv` (None: the command line's); returns the exit code."""
    return cli.run_hydra_main(hydra_main, argv)


if __name__ == "__main__":
    sys.exit(main())
