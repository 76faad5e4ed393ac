"""The LR finder's run-layer side: `optimizer.lr=find` inside a run (the run's optimizer factory)
and `python -m tlbench.lr_find [--out DIR] [--phase NAME] <overrides>`, which measures the curve on
the model, data, freeze phase and param groups the run of those overrides would train. The
algorithm is tlbench/training/lr_find.py."""

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path

from tlbench.errors import ConfigError
from tlbench.runner import cli, settings
from tlbench.training.lr_find import RULE, FindingOptimizers

log = logging.getLogger("tlbench")


def find_for_config(cfg, folder: Path, phase_name: str | None = None) -> dict:
    """The standalone finder: the model, data, freeze phase and param groups of the run `cfg`
    describes, built by the run's own builders (build.py) (and seeded the same way, so the first phase's
    curve is the one `optimizer.lr=find` measures). `phase_name`: another phase of the freeze
    strategy, measured from the starting weights (not from the state the run reaches by then)."""
    from tlbench import models, probes
    from tlbench.runner import build, devices
    from tlbench.training import freeze

    build.check_settings(cfg)
    if probes.is_probe(cfg.freeze.name):
        raise ConfigError(f"freeze={cfg.freeze.name} fits a classifier on fixed features without an optimizer: "
                          "there is no learning rate to find")
    device = devices.resolve_device(cfg.device)
    devices.select(device)
    devices.set_threads(cfg.threads, None)
    devices.seed_everything(cfg.seed)
    splits, built = build.prepare(cfg)
    facts = build.adapt(cfg, built)  # as the run: before the loaders, and it may add adapters to the model
    loaders = build.make_loaders(cfg, splits, built, device)
    cfg = build.budgeted(cfg, build.budget(cfg, loaders["train"]))  # the run's epochs: its freeze phases
    strategy = build.build_strategy(cfg, built, facts, build.data_info(splits))
    options = build.core_options(cfg, device, built.model, len(splits.classes), built.stages)
    model = built.model.to(device)
    if options.channels_last:
        model = models.channels_last(model)
    phases = {strategy.phase(e).name: strategy.phase(e) for e in reversed(range(cfg.epochs))}
    if phase_name is not None and phase_name not in phases:
        raise ConfigError(f"--phase {phase_name!r} is not a phase of freeze={cfg.freeze.name} over {cfg.epochs} "
                          f"epochs; its phases are {', '.join(reversed(list(phases)))}")
    phase = phases[phase_name] if phase_name else strategy.phase(0)
    freeze.apply_phase(model, phase)
    factory = FindingOptimizers(dict(cfg.optimizer), device.type == "cuda", loaders["train"], device, options,
                                strategy, cfg.epochs, settings.lr_find(cfg.lr_find), folder, [])
    return factory.find(model, phase)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tlbench.lr_find",
                                     description="fastai's LR finder on the run that the overrides describe.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m tlbench")
    parser.add_argument("--out", type=Path, help="output folder (default <results_dir>/lr_find/<date>_<time>)")
    parser.add_argument("--phase", help="a later freeze phase (e.g. all), measured from the starting weights")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    try:
        cfg = settings.concrete(compose(args.overrides))
        folder = args.out or Path(cfg.results_dir) / "lr_find" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        entry = find_for_config(cfg, folder, args.phase)
    except Exception as err:  # noqa: BLE001 - a user's error is one message (exit 2); anything else re-raised
        return cli.exit_code(err)
    if entry["lr"] is None:
        print(f"phase {entry['phase']}: {entry['skipped']}")
        return 0
    print(f"phase {entry['phase']}: optimizer.lr={entry['lr']:.3g} ({RULE} rule, {entry['steps']} steps, "
          f"{entry['stopped']}); curve {entry['curve']}, data {entry['data']}")
    return 0


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tlbench.configs import CONFIG_NAME, config_dir
    from tlbench.runner.sweep import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose(CONFIG_NAME, overrides=overrides)


if __name__ == "__main__":
    sys.exit(main())
