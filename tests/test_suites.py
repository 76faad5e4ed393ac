"""The protocol presets are sweeps over the standard transfer suites: `python -m tlbench -m
experiment=<preset>` expands into one job per data set (and init), each of which composes, passes
the startup checks and, offline without the data, fails at once saying how to supply it."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF
from tlbench import data
from tlbench.configs import CONFIG_NAME
from tlbench.errors import DataNotFoundError
from tlbench.runner.build import check_settings

KORNBLITH = {"food101", "cifar10", "cifar100", "sun397", "stanford_cars", "fgvc_aircraft", "dtd", "oxford_pets",
             "caltech101", "flowers102"}
VTAB = {"caltech101", "cifar100", "dtd", "flowers102", "oxford_pets", "sun397", "eurosat"}


def sweep_jobs(preset: str, *extra: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for `-m experiment=<preset> <extra>`: the preset's
    own hydra.sweeper.params, then the command line's."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(CONFIG_NAME, overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    parsed = OverridesParser.create().parse_overrides([f"experiment={preset}", *params, *extra])
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def dataset_of(job: list[str]) -> str:
    return next(o.split("=", 1)[1] for o in job if o.startswith("dataset="))


@pytest.mark.parametrize("preset, suite, inits", [
    ("kornblith_finetune", KORNBLITH, {"true", "false"}),
    ("kornblith_logreg", KORNBLITH, None),
    ("vtab1k", VTAB, {"true", "false"}),
])
def test_a_suite_preset_is_one_sweep_over_its_data_sets(make_cfg, preset, suite, inits):
    jobs = sweep_jobs(preset, "model=resnet18,tf_efficientnet_lite0")
    assert {dataset_of(job) for job in jobs} == suite
    assert len(jobs) == len(suite) * 2 * (len(inits) if inits else 1)
    for job in jobs:
        cfg = make_cfg(*job)
        check_settings(cfg)
        assert cfg.input_size == 224
        if inits:
            assert next(o for o in job if o.startswith("pretrained=")).split("=")[1].lower() in inits


def test_vtab1k_trains_on_800_selects_on_200_and_runs_1000_steps(make_cfg):
    cfg = make_cfg("experiment=vtab1k", "dataset=caltech101")
    assert (cfg.dataset.train_images, cfg.dataset.val_split, cfg.batch_size) == (800, 200, 64)
    assert cfg.epochs * -(-800 // cfg.batch_size) >= 1000
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.freeze.name) == ("sgd", 0.01, "none")


def test_kornblith_finetune_uses_nesterov_sgd_at_batch_256_and_logreg_probes(make_cfg):
    cfg = make_cfg("experiment=kornblith_finetune", "dataset=food101")
    assert (cfg.optimizer.name, cfg.optimizer.nesterov, cfg.optimizer.momentum, cfg.batch_size) == ("sgd", True, 0.9, 256)
    assert make_cfg("experiment=kornblith_logreg", "dataset=dtd").freeze.name == "logreg"


@pytest.mark.parametrize("name", sorted(KORNBLITH | VTAB))
def test_every_suite_data_set_fails_fast_offline_saying_how_to_supply_it(make_cfg, name):
    cfg = make_cfg("experiment=vtab1k" if name in VTAB else "experiment=kornblith_finetune", f"dataset={name}")
    with pytest.raises(DataNotFoundError, match="dataset.root"):
        data.build_dataset(**cfg.dataset)
