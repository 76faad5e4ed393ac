"""What a run costs (result.json `cost`) and the report's accuracy-vs-cost frontier."""

import json

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from conftest import TINY
from report_fixtures import make_result, write_run
from tlbench.training import cost
from tlbench.report import write_report
from tlbench.report.frontier import on_frontier
from tlbench.runner.run import run


def test_gmacs_count_a_hand_computed_layer_and_match_torchvision_s_published_numbers():
    layer = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    assert cost.forward_gmacs(layer, 16, torch.device("cpu")) * 1e9 == 16 * 16 * 8 * 3 * 3 * 3 + 8 * 16 * 16 * 10
    for builder, weights in ((torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
                             (torchvision.models.efficientnet_b0, torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1)):
        counted = cost.forward_gmacs(builder(), 224, torch.device("cpu"))
        assert counted == pytest.approx(weights.meta["_ops"], rel=0.01), builder.__name__


def test_counting_moves_no_batchnorm_statistic_and_keeps_the_mode():
    model = torchvision.models.resnet18(num_classes=3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost.forward_gmacs(model, 32, torch.device("cpu"))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_run_records_its_cost(make_cfg, tmp_path):
    run(make_cfg(*TINY, "pretrained=false", "freeze=freeze_unfreeze", "freeze.epochs=1"), output_dir=tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    recorded = result["cost"]
    assert recorded["total_params"] == result["model_info"]["total_params"]
    assert recorded["trainable_params"] == max(e["trainable_params"] for e in result["epochs"])
    assert recorded["trainable_params"] > result["epochs"][0]["trainable_params"]  # the all phase trains more
    assert recorded["gmacs_per_image"] > 0 and recorded["input_size"] == 32
    assert recorded["wall_s"] >= sum(e["time_s"] for e in result["epochs"])
    assert recorded["peak_host_mib"] > 100 and recorded["peak_device_mib"] is None  # CPU: no device memory


def test_the_frontier_keeps_what_nothing_beats_on_both_per_data_set():
    points = pd.DataFrame({"dataset": ["a", "a", "a", "a", "b"], "accuracy": [0.5, 0.7, 0.6, 0.7, 0.1],
                           "cost.wall_s": [1.0, 2.0, 3.0, 2.5, 100.0]})
    assert on_frontier(points, "cost.wall_s").tolist() == [True, True, False, False, True]


def test_the_report_draws_accuracy_against_cost_with_its_frontier(tmp_path):
    for model, accuracy, wall_s, gmacs in (("small", 0.6, 10.0, 0.1), ("large", 0.8, 100.0, 2.0),
                                           ("slow", 0.5, 200.0, 4.0)):
        for seed in (0, 1):
            result = make_result(model=model, seed=seed, test_acc=[accuracy + 0.01 * seed], freeze="none")
            result["cost"] = {"wall_s": wall_s, "gmacs_per_image": gmacs, "trainable_params": 1000}
            write_run(tmp_path / "sweep", result)
    report = write_report([tmp_path / "sweep"], out_dir=tmp_path / "report").read_text()
    assert "## Accuracy against cost" in report
    section = report[report.index("## Accuracy against cost"):]
    assert "frontier_wall_s.png" in section and "frontier_gmacs_per_image.png" in section
    tables = [line for line in section.splitlines() if line.startswith("| cifar10")]
    assert [line.split(" | ")[2] for line in tables] == ["small", "large", "small", "large"]  # slow is beaten twice
    assert (tmp_path / "report" / "frontier_wall_s.png").stat().st_size > 10_000


def write_three_data_sets(folder):
    """Model `good` beats `fair` beats `poor` on every one of three data sets, by 10 points."""
    for dataset, base in (("cifar10", 0.5), ("cifar100", 0.3), ("digits", 0.7)):
        for model, lift in (("poor", 0.0), ("fair", 0.1), ("good", 0.2)):
            for seed in (0, 1):
                result = make_result(model=model, seed=seed, test_acc=[base + lift + 0.01 * seed], freeze="none")
                result["config"]["dataset"]["name"] = result["dataset"] = dataset
                result.pop("identity", None)
                result["run_id"] = f"{dataset}-{model}-{seed}"
                write_run(folder, result, name=f"{dataset}-{model}-{seed}")


def test_the_report_ranks_settings_across_data_sets_with_friedman_and_wilcoxon(tmp_path):
    from scipy import stats

    write_three_data_sets(tmp_path / "sweep")
    report = write_report([tmp_path / "sweep"], out_dir=tmp_path / "report").read_text()
    section = report[report.index("## Across data sets"):]
    ranked = pd.read_csv(tmp_path / "report" / "ranking_across_datasets.csv")
    assert ranked["method"].str.split(",").str[0].tolist() == ["good", "fair", "poor"]
    assert ranked["mean rank"].tolist() == [1.0, 2.0, 3.0]
    assert ranked.loc[0, "mean accuracy"] == pytest.approx((0.705 + 0.505 + 0.905) / 3)
    assert ranked.loc[0, "mean accuracy ci_low"] < ranked.loc[0, "mean accuracy"] < ranked.loc[0, "mean accuracy ci_high"]
    expected = stats.friedmanchisquare([0.705, 0.505, 0.905], [0.605, 0.405, 0.805], [0.505, 0.305, 0.705])
    assert f"chi-square {expected.statistic:.2f}, p = {expected.pvalue:.3g}" in section
    pairs = pd.read_csv(tmp_path / "report" / "wilcoxon_pairs.csv")
    assert len(pairs) == 3 and (pairs["a better on"].isin([0, 3])).all() and (pairs["p"] == 0.25).all()


def test_vtab_tasks_get_group_means_and_a_partial_suite_no_vtab_score(tmp_path):
    """Five VTAB tasks (4 natural, 1 structured), two settings: each group's mean over its tasks run, with how
    many of the group's tasks that is; no overall score (VTAB's needs all 19); non-VTAB sets are left out
    (caltech101 without its background class is not VTAB's 102-class task)."""
    folder = tmp_path / "sweep"
    accuracy = {"cifar100": 0.5, "dtd": 0.6, "svhn": 0.7, "caltech101_background": 0.2, "clevr": 0.4, "food101": 0.9,
                "caltech101": 0.9}
    for dataset, base in accuracy.items():
        for model, lift in (("good", 0.1), ("poor", 0.0)):
            result = make_result(model=model, test_acc=[base + lift], freeze="none")
            result["config"]["dataset"]["name"] = result["dataset"] = dataset
            result.pop("identity", None)
            result["run_id"] = f"{dataset}-{model}"
            write_run(folder, result, name=f"{dataset}-{model}")
    report = write_report([folder], out_dir=tmp_path / "report").read_text()
    groups = pd.read_csv(tmp_path / "report" / "vtab_groups.csv").set_index("method")
    good = groups.loc[groups.index.str.startswith("good")].iloc[0]
    assert good["natural mean"] == pytest.approx((0.6 + 0.7 + 0.8 + 0.3) / 4)
    assert good["structured mean"] == pytest.approx(0.5) and good["structured tasks"] == "1 of 8"
    assert good["natural tasks"] == "4 of 7" and good["specialized tasks"] == "0 of 4" and good["tasks"] == 5
    assert pd.isna(good["VTAB score (mean of 19)"]) and pd.isna(good["specialized mean"])
    assert "### VTAB-1k groups" in report and "these are not VTAB scores" in report
    # cifar100, dtd, caltech101_background, food101 are Kornblith et al.'s too: the report says how much of it ran
    assert "Kornblith et al. 2019's suite: 4 of its 12 data sets ran here; birdsnap and voc2007 have no loader" in report
