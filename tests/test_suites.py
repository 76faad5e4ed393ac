"""The protocol presets are sweeps over the standard transfer suites: `python -m tlbench -m
experiment=<preset>` expands into one job per data set (and init), each of which composes, passes
the startup checks and, offline without the data, fails at once saying how to supply it."""

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF
from tlbench import data, specs
from tlbench.configs import CONFIG_NAME
from tlbench.errors import DataNotFoundError
from tlbench.runner.build import check_settings

KORNBLITH = {"food101", "cifar10", "cifar100", "sun397", "stanford_cars", "fgvc_aircraft", "dtd", "oxford_pets",
             "caltech101_background", "flowers102"}
VTAB = {"caltech101_background", "cifar100", "dtd", "flowers102", "oxford_pets", "svhn", "sun397_tfds",  # natural
        "patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy",  # specialized
        "clevr", "clevr_distance", "kitti_distance", "dmlab", "dsprites_location", "dsprites_orientation",
        "smallnorb_azimuth", "smallnorb_elevation"}  # structured


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


ONE_SETTING = ("optimizer.lr=0.01", "optimizer.weight_decay=0.0001")  # the command line's value wins over a grid


@pytest.mark.parametrize("preset, suite, inits, extra", [
    ("kornblith_finetune", KORNBLITH, None, ONE_SETTING),
    ("kornblith_scratch", KORNBLITH, None, ONE_SETTING),
    ("kornblith_logreg", KORNBLITH, None, ()),
    pytest.param("vtab1k", VTAB, {"true", "false"}, (), marks=pytest.mark.e2e),  # ~16 s of compositions
])
def test_a_suite_preset_is_one_sweep_over_its_data_sets(make_cfg, preset, suite, inits, extra):
    jobs = sweep_jobs(preset, "model=resnet18,tf_efficientnet_lite0", *extra)
    assert {dataset_of(job) for job in jobs} == suite
    assert len(jobs) == len(suite) * 2 * (len(inits) if inits else 1)
    for job in jobs:
        cfg = make_cfg(*job)
        check_settings(cfg)
        assert cfg.input_size == 224
        if inits:
            assert next(o for o in job if o.startswith("pretrained=")).split("=")[1].lower() in inits


def test_vtab1k_is_the_reference_codes_protocol_item_by_item(make_cfg):
    """google-research/task_adaptation scripts/run_all_tasks.sh, trainer.py and adapt_and_eval.py's defaults."""
    cfg = make_cfg("experiment=vtab1k", "dataset=caltech101_background")
    reference = {"training examples": 1000, "held out to select on": 0, "chosen on a split": "nothing (final)",
                 "optimizer": ("sgd", 0.9, False, 0.0), "batch size": 64, "learning rate": 0.01,
                 "optimizer steps": 1000, "schedule": ("multistep", [300, 600, 900], 0.1, 80),
                 "preprocessing": ("squash", 224), "augmentation": "none", "label smoothing": 0.0,
                 "metric": "top1", "head": "zeros"}
    composed = {"training examples": cfg.dataset.train_images, "held out to select on": cfg.dataset.val_split,
                "chosen on a split": "nothing (final)" if cfg.select_epoch == "final" else cfg.select_epoch,
                "optimizer": (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.nesterov,
                              cfg.optimizer.weight_decay),
                "batch size": cfg.batch_size, "learning rate": cfg.optimizer.lr, "optimizer steps": cfg.steps,
                "schedule": (cfg.schedule.name, list(cfg.schedule.milestones), cfg.schedule.gamma,
                             cfg.schedule.warmup_steps),
                "preprocessing": (cfg.dataset.preprocess, cfg.input_size),
                "augmentation": "none" if not any(v for k, v in cfg.augment.items() if k != "pad_mode") else "some",
                "label smoothing": cfg.label_smoothing, "metric": cfg.dataset.metric, "head": cfg.model.head_init}
    assert composed == reference


def test_a_vtab1k_run_takes_exactly_its_steps_on_the_multistep_schedule_and_tests_the_final_model(make_cfg,
                                                                                                  tmp_path):
    """The preset on tiny data, scaled down: 96 training images at batch 16 are 6 steps an epoch; 20 steps
    with milestones 5, 10, 15 and a 4-step warm-up. Each epoch's recorded lr is its last step's."""
    from tlbench.runner.run import run

    result = run(make_cfg("experiment=vtab1k", "model=test_resnet", "dataset=synthetic", "input_size=null",
                          "dataset.train_images=96", "batch_size=16", "steps=20", "schedule.milestones=[5,10,15]",
                          "schedule.warmup_steps=4", "pretrained=false"), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["budget"]["steps"] == 20 and len(result["iter_loss"]) == 20
    assert [e["train_images"] for e in result["epochs"]] == [96, 96, 96, 32]
    last_steps = [5, 11, 17, 19]
    assert [e["lr"] for e in result["epochs"]] == pytest.approx([0.01 * 0.1 ** sum(s > m for m in (5, 10, 15))
                                                                 for s in last_steps])
    assert result["summary"]["best_epoch"] == 4 and result["data_info"]["val_is_test"]
    assert result["metric"] == "top1"


def test_kornblith_finetune_is_the_papers_protocol_item_by_item(make_cfg):
    """As SimCLR's appendix B.8 (Chen, Kornblith et al. 2020), which follows the paper, states it."""
    cfg = make_cfg("experiment=kornblith_finetune", "dataset=dtd")
    paper = {"init": "ImageNet weights", "optimizer": ("sgd", 0.9, True), "batch size": 256, "optimizer steps": 20000,
             "chosen on": "val, the model after the last step", "label smoothing": 0.0,
             "weight decay divided by the learning rate": True, "training crop": ("random resized crop", 224, 0.5),
             "evaluation": ("shorter side 256, central 224"), "BatchNorm decay": "max(1 - 10/s, 0.9)"}
    composed = {"init": "ImageNet weights" if cfg.pretrained else "random",
                "optimizer": (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.nesterov),
                "batch size": cfg.batch_size, "optimizer steps": cfg.steps,
                "chosen on": "val, the model after the last step" if cfg.select_epoch == "final" else cfg.select_epoch,
                "label smoothing": cfg.label_smoothing, "weight decay divided by the learning rate": cfg.optimizer.decay_per_lr,
                "training crop": ("random resized crop" if cfg.augment.random_resized_crop else "?", cfg.input_size,
                                  cfg.augment.hflip),
                "evaluation": (f"shorter side {int(cfg.dataset.image_size / cfg.dataset.crop_fraction)}, central "
                               f"{cfg.dataset.image_size}" if cfg.dataset.preprocess == "crop" else "squashed"),
                "BatchNorm decay": "max(1 - 10/s, 0.9)" if all(
                    1 - specs.Training(bn_momentum=cfg.bn_momentum).bn_momentum_for(s) == pytest.approx(max(1 - 10 / s, 0.9))
                    for s in (8, 100, 296, 5000)) else cfg.bn_momentum}
    assert composed == paper
    assert make_cfg("experiment=kornblith_logreg", "dataset=dtd").freeze.name == "logreg"


@pytest.mark.parametrize("preset, lrs, decays, steps, pretrained", [
    ("kornblith_finetune", (1e-4, 0.1), (1e-6, 1e-3), 20000, True),
    ("kornblith_scratch", (1e-3, 1.0), (1e-5, 10 ** -1.5), 40000, False),
])
def test_the_kornblith_grids_are_shipped_sweeps(make_cfg, preset, lrs, decays, steps, pretrained):
    """7 log-spaced learning rates x 8 weight decays per data set (fine-tuning: 7 log-spaced and none)."""
    import math

    jobs = sweep_jobs(preset)
    assert len(jobs) == 10 * 7 * 8 and {dataset_of(job) for job in jobs} == KORNBLITH
    value = lambda job, key: float(next(o.split("=", 1)[1] for o in job if o.startswith(key + "=")))  # noqa: E731
    lr_values = sorted({value(job, "optimizer.lr") for job in jobs})
    decay_values = sorted({value(job, "optimizer.weight_decay") for job in jobs})
    assert len(lr_values) == 7 and (lr_values[0], lr_values[-1]) == pytest.approx(lrs, rel=1e-3)
    assert all(math.log10(b) - math.log10(a) == pytest.approx(0.5, abs=1e-3) for a, b in zip(lr_values, lr_values[1:]))
    nonzero = [d for d in decay_values if d > 0]
    assert len(decay_values) == 8 and (nonzero[0], nonzero[-1]) == pytest.approx(decays, rel=1e-3)
    assert len(nonzero) == (7 if pretrained else 8)
    cfg = make_cfg(*jobs[0])
    assert (cfg.steps, cfg.pretrained, cfg.optimizer.decay_per_lr) == (steps, pretrained, True)


@pytest.mark.parametrize("name", sorted(KORNBLITH | VTAB))
def test_every_suite_data_set_fails_fast_offline_saying_how_to_supply_it(make_cfg, name):
    cfg = make_cfg("experiment=vtab1k" if name in VTAB else "experiment=kornblith_finetune", f"dataset={name}")
    with pytest.raises(DataNotFoundError, match="dataset.root"):
        data.build_dataset(**cfg.dataset)
