"""`min_steps`: a floor on optimizer steps, so a small training split is not trained for a handful of
steps (issue 22: 10 epochs of 100 images at batch 64 are 20). The epochs are raised once the training
split's size is known; result.json's config keeps the epochs as configured, its `budget` what ran."""

import pytest
from conftest import TINY, run_interrupted

from tlbench.records import identity
from tlbench.runner.run import run, run_id_of
from tlbench.training.schedules import Budget

# 4 synthetic classes x 4 images = 16 training images: one step per epoch at batch 32 (TINY sets min_steps=0)
SMALL = [*TINY, "pretrained=false", "dataset.train_per_class=4"]


@pytest.mark.parametrize("configured, min_steps, per_epoch, epochs", [
    (10, 0, 2, 10), (10, 15, 2, 10), (10, 20, 2, 10), (10, 21, 2, 11), (10, 200, 2, 100), (10, 200, 3, 67),
    (3, 5, 16, 3),
])
def test_the_budget_raises_epochs_just_enough_for_the_floor(configured, min_steps, per_epoch, epochs):
    budget = Budget(configured, min_steps, per_epoch)
    assert budget.epochs == epochs and budget.raised == (epochs > configured)
    assert budget.describe()["steps"] == epochs * per_epoch >= min_steps


def test_a_small_split_trains_min_steps_and_result_json_says_so(make_cfg, tmp_path):
    result = run(make_cfg(*SMALL, "min_steps=5"), output_dir=tmp_path / "run")
    assert result["status"] == "ok"
    assert result["budget"] == {"epochs": 5, "steps": 5, "steps_per_epoch": 1, "min_steps": 5,
                                "configured_epochs": 2, "configured_steps": None, "raised": True}
    assert [e["epoch"] for e in result["epochs"]] == [1, 2, 3, 4, 5]
    assert len(result["iter_loss"]) == 5
    assert result["config"]["epochs"] == 2  # the configured value: the run's identity
    assert result["summary"]["final_test_acc"] == result["epochs"][-1]["test_acc"]


def test_the_floor_changes_nothing_when_the_epochs_already_give_enough_steps(make_cfg, tmp_path):
    floored = run(make_cfg(*SMALL, "min_steps=2"), output_dir=tmp_path / "floored")
    plain = run(make_cfg(*SMALL), output_dir=tmp_path / "plain")
    assert floored["budget"]["raised"] is False and floored["budget"]["epochs"] == 2
    assert floored["iter_loss"] == plain["iter_loss"]
    assert [e["test_acc"] for e in floored["epochs"]] == [e["test_acc"] for e in plain["epochs"]]


def test_a_raised_budget_is_the_same_training_as_asking_for_those_epochs(make_cfg, tmp_path):
    """The floor only decides the epoch count: the schedule, strategy and data order are those of epochs=N."""
    floored = run(make_cfg(*SMALL, "min_steps=4", "freeze=freeze_unfreeze", "freeze.epochs=1"),
                  output_dir=tmp_path / "floored")
    asked = run(make_cfg(*SMALL, "epochs=4", "freeze=freeze_unfreeze", "freeze.epochs=1"),
                output_dir=tmp_path / "asked")
    assert floored["iter_loss"] == asked["iter_loss"]
    assert [e["test_acc"] for e in floored["epochs"]] == [e["test_acc"] for e in asked["epochs"]]
    assert floored["run_id"] != asked["run_id"]


def test_a_run_interrupted_under_a_raised_budget_resumes_to_its_end(make_cfg, tmp_path, monkeypatch):
    overrides = [*SMALL, "min_steps=4"]
    uninterrupted = run(make_cfg(*overrides), output_dir=tmp_path / "uninterrupted")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 3)  # past the configured 2 epochs
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4]
    assert resumed["iter_loss"] == pytest.approx(uninterrupted["iter_loss"])


def test_min_steps_zero_is_the_old_identity_and_a_probe_ignores_it(make_cfg, user_cfg):
    assert "min_steps" not in identity.experiment(_config(make_cfg(*TINY)))  # TINY: min_steps=0
    assert identity.experiment(_config(user_cfg("dataset=synthetic")))["min_steps"] == 60  # the default
    assert run_id_of(make_cfg(*TINY, "min_steps=100")) != run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, "freeze=logreg", "min_steps=100")) == run_id_of(make_cfg(*TINY, "freeze=logreg"))


def test_the_default_floor_raises_a_small_split(user_cfg, tmp_path):
    """The default (60 steps): 8 images at batch 16 train 60 epochs of one step."""
    small = [arg for arg in SMALL if arg != "min_steps=0"]
    assert run(user_cfg(*small, "epochs=1", "batch_size=16", "dataset.train_per_class=2"),
               output_dir=tmp_path / "small")["budget"] == {
        "epochs": 60, "steps": 60, "steps_per_epoch": 1, "min_steps": 60, "configured_epochs": 1,
        "configured_steps": None, "raised": True}


def _config(cfg) -> dict:
    from tlbench.runner.run import resolved_config

    return resolved_config(cfg)


def test_a_negative_floor_is_one_clear_message(make_cfg):
    from tlbench.errors import ConfigError
    from tlbench.runner.build import check_settings

    with pytest.raises(ConfigError, match=r"min_steps.*-1.*>= 0"):
        check_settings(make_cfg(*TINY, "min_steps=-1"))


# --- `steps`: an exact budget in optimizer steps (issue 24: VTAB's 1,000 steps, Kornblith's) -------------------

# 16 training images at batch 4: four steps an epoch
STEPPED = [*SMALL, "batch_size=4"]


@pytest.mark.parametrize("steps, per_epoch, epochs", [(6, 4, 2), (8, 4, 2), (1, 4, 1), (1000, 13, 77), (1000, 12, 84)])
def test_a_steps_budget_takes_as_many_epochs_as_its_steps_need(steps, per_epoch, epochs):
    budget = Budget(10, 60, per_epoch, configured_steps=steps)  # epochs and the floor give way to `steps`
    assert budget.epochs == epochs and budget.steps == steps and not budget.raised
    assert budget.changed == (epochs != 10)
    assert budget.describe()["configured_steps"] == steps


def test_a_steps_budget_stops_the_last_epoch_part_way(make_cfg, tmp_path):
    result = run(make_cfg(*STEPPED, "steps=6", "schedule=constant"), output_dir=tmp_path / "run")
    assert result["status"] == "ok"
    assert result["budget"] == {"epochs": 2, "steps": 6, "steps_per_epoch": 4, "min_steps": 0, "configured_epochs": 2,
                                "configured_steps": 6, "raised": False}
    assert len(result["iter_loss"]) == 6
    assert [e["train_images"] for e in result["epochs"]] == [16, 8]
    assert result["config"]["steps"] == 6 and result["config"]["epochs"] == 2  # as configured
    # the same training as the first 6 steps of a longer run: the budget only decides where training stops
    longer = run(make_cfg(*STEPPED, "epochs=2", "schedule=constant"), output_dir=tmp_path / "longer")
    assert result["iter_loss"] == longer["iter_loss"][:6]


def test_a_schedule_over_the_run_spans_the_steps_budget(make_cfg, tmp_path):
    """cosine over 6 steps (warm-up 1 epoch = 4 steps): the last step, 5, trains at lr x cosine(1 of 2)."""
    import math

    result = run(make_cfg(*STEPPED, "steps=6", "optimizer.lr=0.1"), output_dir=tmp_path / "run")
    assert result["epochs"][-1]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 1 / 2)))


def test_a_run_interrupted_under_a_steps_budget_resumes_to_its_end(make_cfg, tmp_path, monkeypatch):
    overrides = [*STEPPED, "steps=10"]  # 3 epochs: 4 + 4 + 2 steps
    uninterrupted = run(make_cfg(*overrides), output_dir=tmp_path / "uninterrupted")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 2)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert len(resumed["iter_loss"]) == 10 and [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert resumed["iter_loss"] == pytest.approx(uninterrupted["iter_loss"])


def test_steps_unset_is_the_old_identity_and_a_probe_ignores_it(make_cfg):
    assert "steps" not in identity.experiment(_config(make_cfg(*TINY)))
    assert identity.experiment(_config(make_cfg(*TINY, "steps=1000")))["steps"] == 1000
    assert run_id_of(make_cfg(*TINY, "freeze=logreg", "steps=100")) == run_id_of(make_cfg(*TINY, "freeze=logreg"))


def test_a_steps_budget_below_one_is_one_clear_message(make_cfg):
    from tlbench.errors import ConfigError
    from tlbench.runner.build import check_settings

    with pytest.raises(ConfigError, match=r"steps.*0.*positive number of optimizer steps"):
        check_settings(make_cfg(*TINY, "steps=0"))


def test_under_a_steps_budget_epochs_and_the_floor_are_not_the_identity(make_cfg):
    """They train nothing different: `steps` decides the epochs."""
    assert run_id_of(make_cfg(*TINY, "steps=100", "epochs=3", "min_steps=60")) == run_id_of(make_cfg(*TINY, "steps=100"))
    assert run_id_of(make_cfg(*TINY, "steps=100")) != run_id_of(make_cfg(*TINY, "steps=101"))
