"""`python -m tlbench [overrides]` / `python -m tlbench -m a=1,2 b=x,y` (a sweep)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from tlbench.run import run  # imported here so `--help` and config errors stay fast

    run(cfg)


if __name__ == "__main__":
    main()
