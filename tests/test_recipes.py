"""conf/recipe: the robust fine-tuning recipes, each one choice on the command line (`recipe=lpft`), and
issue 25's study that sweeps them (`experiment=robust_cifar10`). Each recipe sets what its paper sets and
nothing else; choosing none leaves every run_id as it was."""

import pytest
from conftest import TINY

from tlbench.runner import build
from tlbench.runner.run import run, run_id_of

RECIPES = {"ft": {}, "lp": {"freeze.name": "linear_probe"}, "freeze_unfreeze": {"freeze.name": "freeze_unfreeze", "freeze.epochs": 1, "freeze.backbone_lr_ratio": 1.0},
           "lpft": {"model.head_init": "probe"}, "surgical_first": {"freeze.name": "surgical", "freeze.stage": 0},
           "surgical_last": {"freeze.name": "surgical", "freeze.stage": -1},
           "l2sp": {"l2sp.alpha": 0.1, "l2sp.beta": 0.01, "optimizer.weight_decay": 0.0},
           "mix": {"mix.mixup_alpha": 0.8, "mix.cutmix_alpha": 1.0}}


def flat(cfg):
    from omegaconf import OmegaConf

    from tlbench.records import identity

    return identity.flatten(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_recipe_sets_what_it_names_and_nothing_else(make_cfg, recipe):
    base, chosen = flat(make_cfg(*TINY)), flat(make_cfg(*TINY, f"recipe={recipe}"))
    build.check_settings(make_cfg(*TINY, "epochs=10", f"recipe={recipe}"))
    changed = {k: v for k, v in chosen.items() if base.get(k) != v and not k.startswith("freeze.")}
    expected = {k: v for k, v in RECIPES[recipe].items() if not k.startswith("freeze.")}
    assert changed == expected
    for key, value in RECIPES[recipe].items():
        assert chosen[key] == value


def test_no_recipe_and_the_plain_one_keep_the_run_id(make_cfg):
    assert run_id_of(make_cfg(*TINY, "recipe=ft")) == run_id_of(make_cfg(*TINY))


def test_the_study_sweeps_every_recipe_over_three_seeds_and_runs_one(make_cfg, tmp_path):
    from hydra import compose, initialize_config_dir

    from tlbench.configs import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=robust_cifar10"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params.recipe.split(",")) == set(RECIPES) and params.seed == "0,1,2"
    assert cfg.test_shift.corruptions == "all" and cfg.ema.decay > 0 and cfg.wise_ft
    result = run(make_cfg(*TINY, "pretrained=false", "recipe=lpft", "ema.decay=0.9", "wise_ft=[0,1]",
                          "test_shift.corruptions=[contrast]", "test_shift.severities=[5]", "test_shift.images=16"),
                 output_dir=tmp_path)  # the study's pieces together, on tiny data
    assert result["status"] == "ok" and "head_probe" in result and result["test_shift"]["acc"]["contrast"]["5"] >= 0
    assert "ema" in result["summary"] and result["wise_ft"]["chosen_alpha"] in (0.0, 1.0)
