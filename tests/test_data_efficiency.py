"""Data efficiency as a sweep axis: k-shot and fractional training subsets (nested, with their own
seed, the val and test splits unchanged), and the report's accuracy-vs-size curves and data
multiplier."""

import hashlib
import json
import math

import pandas as pd
import pytest

from conftest import TINY
from report_fixtures import write_efficiency_sweep
from tlbench import data
from tlbench.records import identity
from tlbench.errors import ConfigError
from tlbench.report import write_report
from tlbench.report.efficiency import size_needed
from tlbench.runner.run import run


def image_hashes(dataset) -> set[str]:
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image, _ in dataset}


def digits(**settings):
    return data.build_dataset("digits", image_size=8, **settings)


def test_k_shot_subsets_are_nested_stratified_and_leave_val_and_test_alone():
    full = digits()
    subsets = {k: digits(train_per_class=k) for k in (1, 5, 20, 100)}
    for k, splits in subsets.items():
        labels = pd.Series([int(label) for _, label in splits.train])
        assert labels.value_counts().tolist() == [k] * 10, k
        assert image_hashes(splits.val) == image_hashes(full.val)
        assert image_hashes(splits.test) == image_hashes(full.test)
        assert splits.train_subset == f"{k} per class, subset_seed=0"
    hashes = [image_hashes(subsets[k].train) for k in (1, 5, 20, 100)]
    assert all(small < large for small, large in zip(hashes, hashes[1:]))  # strictly nested
    assert hashes[-1] < image_hashes(full.train)


def test_fractions_are_nested_and_the_subset_seed_draws_another_subset():
    quarter, half = digits(train_fraction=0.25).train, digits(train_fraction=0.5).train
    assert image_hashes(quarter) < image_hashes(half)
    assert image_hashes(digits(train_per_class=5, subset_seed=1).train) != image_hashes(digits(train_per_class=5).train)
    assert image_hashes(digits(train_per_class=5, subset_seed=1).val) == image_hashes(digits().val)


def test_a_total_of_training_images_is_shared_in_proportion_nested_and_exact():
    """VTAB-1k's 1,000 examples: `train_images=N` keeps exactly N, every class in proportion to its
    size (Webster's divisor method, one image at a time, so a larger N never drops an image)."""
    targets = [0] * 50 + [1] * 30 + [2] * 10 + [3] * 7 + [4] * 3
    previous = set()
    for total in range(1, 101):
        chosen = set(data.stratified_indices(targets, 1.0, seed=0, total=total))
        assert len(chosen) == total and previous <= chosen, total
        previous = chosen
    per_class = pd.Series([targets[i] for i in data.stratified_indices(targets, 1.0, seed=0, total=20)]).value_counts()
    assert per_class.to_dict() == {0: 10, 1: 6, 2: 2, 3: 1, 4: 1}  # 20 x 50/100, 30/100, ... rounded
    splits = digits(train_images=100, val_split=200)
    assert (len(splits.train), len(splits.val)) == (100, 200)
    assert splits.train_subset == "100 images, classes in proportion, subset_seed=0"
    assert splits.val_source == "200 images of train, stratified, split_seed=0"
    assert image_hashes(splits.test) == image_hashes(digits().test)


@pytest.mark.parametrize("settings, needle", [
    (dict(train_images=100_000), "dataset.train_images=100000 but only"),
    (dict(train_images=10, train_per_class=2), "each chooses the training subset"),
    (dict(val_split=1.5), "or an integer number of images"),
    (dict(train_per_class=1000), "dataset.train_per_class=1000 but class"),
    (dict(train_per_class=0), "dataset.train_per_class=0 must be a positive number"),
    (dict(train_per_class=5, train_fraction=0.5), "set one of them"),
])
def test_a_subset_that_cannot_be_drawn_fails_naming_the_setting(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        digits(**settings)


def test_a_k_shot_run_records_its_subset_and_keeps_its_own_identity(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "dataset=digits", "dataset.image_size=16", "model=resnet18", "pretrained=false",
                   "epochs=1", "dataset.train_per_class=3")
    result = run(cfg, output_dir=tmp_path / "k3")
    info = json.loads((tmp_path / "k3" / "result.json").read_text())["data_info"]
    assert result["status"] == "ok"
    assert (info["train_size"], info["train_subset"]) == (30, "3 per class, subset_seed=0")
    assert info["val_size"] == 144  # the same val split as the full set's
    ids = {identity.run_id(resolved(make_cfg("dataset=digits", f"dataset.train_per_class={k}"))) for k in (None, 3, 5)}
    assert len(ids) == 3
    # train_images came later: a run that leaves it unset keeps the run_id it had before the key existed
    config = resolved(make_cfg("dataset=digits"))
    before = {**config, "dataset": {k: v for k, v in config["dataset"].items() if k != "train_images"}}
    assert identity.run_id(config) == identity.run_id(before)


def test_an_older_digits_run_keeps_its_run_id():
    """Digits gained train_fraction, train_per_class and subset_seed after runs were written."""
    from omegaconf import OmegaConf
    from hydra import compose, initialize_config_dir
    from conftest import CONF

    with initialize_config_dir(str(CONF), version_base="1.3"):
        config = OmegaConf.to_container(compose("config", overrides=["dataset=digits"]), resolve=False)
    older = json.loads(json.dumps(config))
    for key in ("train_fraction", "train_per_class", "subset_seed"):
        del older["dataset"][key]
    assert identity.run_id(older) == identity.run_id(config)


def resolved(cfg):
    from omegaconf import OmegaConf
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("means, target, expected", [
    ([0.3, 0.5, 0.7], 0.6, (math.sqrt(1000 * 10000), "interpolated")),
    ([0.3, 0.5, 0.7], 0.5, (1000, "interpolated")),
    ([0.3, 0.5, 0.7], 0.9, (10000, "above")),
    ([0.3, 0.5, 0.7], 0.2, (100, "below")),
    ([0.3, 0.2, 0.7], 0.5, (10 ** 3.6, "interpolated")),  # the first crossing, on a curve that dips
])
def test_size_needed_interpolates_on_a_log_axis_and_censors_outside(means, target, expected):
    size, how = size_needed([100, 1000, 10000], means, target)
    assert how == expected[1] and size == pytest.approx(expected[0])


def test_the_report_draws_accuracy_against_size_and_the_data_multiplier(tmp_path):
    write_efficiency_sweep(tmp_path / "sweep")
    report = write_report([tmp_path / "sweep"], out_dir=tmp_path / "report").read_text()
    assert "## Data efficiency" in report and "data_efficiency.png" in report
    assert (tmp_path / "report" / "data_efficiency.png").stat().st_size > 10_000
    points = pd.read_csv(tmp_path / "report" / "data_efficiency.csv")
    assert len(points) == 6 and set(points["n"]) == {3}
    multiplier = pd.read_csv(tmp_path / "report" / "data_multiplier.csv").set_index("train_size")
    assert multiplier.loc[100, "multiplier"] == pytest.approx(math.sqrt(1000 * 10000) / 100)  # 3,162 random images
    assert multiplier.loc[100, "censored"] == "interpolated"
    assert math.exp(multiplier.loc[100, "log_multiplier_ci_low"]) < 31.62 < \
        math.exp(multiplier.loc[100, "log_multiplier_ci_high"])
    assert list(multiplier.loc[[1000, 10000], "censored"]) == ["above", "above"]
    assert "more than x10 (random init never gets there by 10,000 images) | outside the sizes tried" in report
