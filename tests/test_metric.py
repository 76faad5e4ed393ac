"""The data set's metric (DataSplits.metric: top-1, or mean per-class accuracy where Kornblith et
al. 2019 report it): evaluate computes both, a mean_per_class run selects and summarizes on it
(best epoch, best.safetensors, plateau, logreg's C), the report ranks each data set on its own
metric and says which, and a top1 run's result.json reads as before."""

import json

import pandas as pd
import pytest
import safetensors.torch
import torch
from conftest import TINY
from report_fixtures import make_result, write_run
from test_compile import TINY_RESNET
from test_probes import PROBE_TINY

from tlbench.training import engine
from tlbench import probes
from tlbench.records import results
from tlbench.runner import build
from tlbench.training.compiled import IGNORE_INDEX
from tlbench.probes.features import SplitFeatures
from tlbench.report import write_report
from tlbench.report.build import analyse
from tlbench.runner.run import run

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_MODEL = [o for o in TINY_RESNET if not o.startswith("save_model=")]  # these runs keep best.safetensors


@pytest.fixture
def mean_per_class(monkeypatch):
    """The synthetic set, read as a data set that reports mean per-class accuracy."""
    real = build.prepare

    def prepare(cfg):
        splits, built = real(cfg)
        splits.metric = "mean_per_class"
        return splits, built

    monkeypatch.setattr(build, "prepare", prepare)


def test_mean_per_class_accuracy_is_balanced_accuracy_score_on_an_imbalanced_split():
    """The model is the identity on 4-channel 1x1 images, so its predictions are the images' argmax.
    Class 0 has 40 images, 1 has 8, 2 has 3, 3 none (it is predicted, but a mean over the classes
    present leaves it out); a padded batch (compile=true's IGNORE_INDEX) counts for nothing."""
    from sklearn.metrics import balanced_accuracy_score

    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 40 + [1] * 8 + [2] * 3)
    images = torch.randn(len(labels), 4, 1, 1, generator=generator)
    images[torch.arange(len(labels)), labels, 0, 0] += 1.5 * (labels == 0).float()  # the majority is the easy one
    batches = [(images[i:i + 8], labels[i:i + 8]) for i in range(0, len(labels), 8)]
    batches.append((torch.zeros(5, 4, 1, 1), torch.full((5,), IGNORE_INDEX)))
    loss, acc, mean_class_acc = engine.evaluate(torch.nn.Flatten(), batches, torch.device("cpu"),
                                                engine.TrainOptions(epochs=1))
    predicted = images.flatten(1).argmax(1)
    assert 3 in predicted.tolist() and acc == pytest.approx((predicted == labels).float().mean().item())
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        oracle = balanced_accuracy_score(labels.numpy(), predicted.numpy())
    assert mean_class_acc == pytest.approx(oracle, abs=1e-12)
    assert acc - mean_class_acc > 0.1, "the split must be imbalanced enough for the two to differ"
    assert loss > 0


# Scripted (loss, top-1, mean per-class) per epoch: val's top-1 peaks at epoch 2, its mean per-class
# at epoch 3; mean per-class falls after epoch 3 and again after 4 (top-1 after 2 and 3).
VAL = [(1.0, 0.50, 0.40), (0.9, 0.90, 0.50), (0.8, 0.70, 0.80), (0.7, 0.80, 0.60), (0.6, 0.85, 0.70)]
TEST = [(1.0, 0.55, 0.45), (0.9, 0.85, 0.35), (0.8, 0.60, 0.75), (0.7, 0.65, 0.70), (0.6, 0.66, 0.72)]


def test_a_mean_per_class_run_selects_and_reports_on_it(make_cfg, tmp_path, monkeypatch, mean_per_class):
    scripted, snapshots, real_fit = {"val": iter(VAL), "test": iter(TEST)}, [], engine.fit

    def fit(model, train_loader, val_loader, *args, test_loader=None, on_epoch_end=None, **kwargs):
        names = {id(val_loader): "val", id(test_loader): "test"}
        monkeypatch.setattr(engine, "evaluate", lambda m, loader, d, o: next(scripted[names[id(loader)]]))

        def record(epoch_record):
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
            on_epoch_end(epoch_record)
        return real_fit(model, train_loader, val_loader, *args, test_loader=test_loader, on_epoch_end=record, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    folder = tmp_path / "run"
    result = run(make_cfg(*TINY, *TINY_MODEL, "epochs=5", "save_best=true", "schedule=plateau",
                          "schedule.monitor=val_acc", "schedule.patience=0"), output_dir=folder)
    assert result["metric"] == result["data_info"]["metric"] == "mean_per_class"
    assert [e["val_mean_class_acc"] for e in result["epochs"]] == [v[2] for v in VAL]
    assert [e["test_mean_class_acc"] for e in result["epochs"]] == [t[2] for t in TEST]
    summary = result["summary"]
    assert (summary["metric"], summary["best_epoch"], summary["best_val_metric"]) == ("mean_per_class", 3, 0.80)
    assert (summary["test_metric_at_best_val"], summary["final_test_metric"]) == (0.75, 0.72)
    # the top-1 fields stay top-1, read at the same chosen epoch
    assert (summary["best_val_acc"], summary["test_acc_at_best_val"], summary["final_test_acc"]) == (0.70, 0.60, 0.66)
    assert results.objective(summary) == 0.80  # what a search maximizes
    best = safetensors.torch.load_file(folder / "best.safetensors")
    assert all(torch.equal(best[k], snapshots[2][k]) for k in best), "best is not epoch 3's weights"
    assert json.loads((folder / "best.json").read_text())["epoch"] == 3
    # plateau on val_acc, patience 0, watches mean per-class: it falls after epoch 4 only, so epoch 5 runs at
    # half the lr; watching top-1 (down after epoch 3) would have halved epoch 4 already
    lrs = [e["lr"] for e in result["epochs"]]
    assert lrs[3] == lrs[0] and lrs[4] == pytest.approx(lrs[3] * 0.5)
    assert json.loads((folder / "result.json").read_text())["summary"] == summary

    write_report([folder])
    runs = pd.read_csv(folder / "runs.csv")
    assert runs["metric"].tolist() == ["mean_per_class"] and runs["best_epoch"].tolist() == [3]
    assert runs["test_acc_at_best_val"].tolist() == [0.75] and runs["final_test_acc"].tolist() == [0.72]
    assert runs["overfit_gap"].item() == pytest.approx(result["epochs"][-1]["train_acc"] - 0.66)  # top-1 both sides
    assert pd.read_csv(folder / "summary.csv")["metric"].tolist() == ["mean_per_class"]
    markdown = (folder / "report.md").read_text()
    assert "in each data set's own metric: mean per-class accuracy on synthetic" in markdown
    assert "| test mean per-class accuracy at the val-best epoch |" in markdown
    assert "| 75.0% |" in markdown and "| mean per-class |" in markdown


def test_a_top1_run_summarizes_exactly_as_before(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, *TINY_RESNET), output_dir=tmp_path / "run")
    epochs, summary = result["epochs"], result["summary"]
    assert result["metric"] == result["data_info"]["metric"] == "top1"
    assert all(0 <= e[f"{split}_mean_class_acc"] <= 1 for e in epochs for split in ("val", "test"))
    best = max(epochs, key=lambda e: e["val_acc"])
    before = {"final_test_acc": epochs[-1]["test_acc"], "test_acc_at_best_val": best["test_acc"],
              "final_val_acc": epochs[-1]["val_acc"], "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
              "final_train_acc": epochs[-1]["train_acc"], "final_val_loss": epochs[-1]["val_loss"],
              "final_test_loss": epochs[-1]["test_loss"],
              "overfit_gap": epochs[-1]["train_acc"] - epochs[-1]["test_acc"],
              "total_time_s": sum(e["time_s"] for e in epochs)}
    assert {k: summary[k] for k in before} == before
    assert summary["metric"] == "top1" and summary["test_metric_at_best_val"] == summary["test_acc_at_best_val"]
    assert summary["best_val_metric"] == summary["best_val_acc"] == results.objective(summary)
    assert summary["final_test_metric"] == summary["final_test_acc"]
    assert summary["final_val_metric"] == summary["final_val_acc"]


def test_summaries_choose_on_the_metric_and_older_files_are_top1():
    epochs = [dict(epoch=e, val_acc=v[1], val_mean_class_acc=v[2], test_acc=t[1], test_mean_class_acc=t[2],
                   train_acc=0.9, val_loss=v[0], test_loss=t[0], time_s=1.0)
              for e, v, t in zip(range(1, 6), VAL, TEST)]
    assert results.summarize(epochs)["best_epoch"] == results.summarize(epochs, None)["best_epoch"] == 2
    assert results.summarize(epochs, "mean_per_class")["best_epoch"] == 3
    assert results.objective({"best_val_acc": 0.5}) == 0.5  # a file from before best_val_metric
    with pytest.raises(ValueError, match="metric='balanced' is not known; use one of top1, mean_per_class"):
        results.summarize(epochs, "balanced")


def imbalanced(generator, count=200, minority=20, dim=20, shift=0.8) -> SplitFeatures:
    """Two Gaussian classes, `minority` images of class 1: a strongly regularized model that always
    says class 0 scores 90% top-1 and 50% mean per-class."""
    labels = (torch.arange(count) < minority).long()
    features = torch.randn(count, dim, generator=generator)
    features[:, :2] += labels[:, None] * shift
    return SplitFeatures(features, labels, False, 0.0)


def test_logreg_chooses_c_on_the_data_sets_metric():
    generator = torch.Generator().manual_seed(3)
    train, val, test = imbalanced(generator), imbalanced(generator), imbalanced(generator)
    setting = probes.Logreg(C_grid=[1e-4, 1e-3, 1e-2, 1e-1, 1, 10], refit_on="train", cv_folds=0)
    top1, top1_details = probes.logreg(train, val, test, setting, num_classes=2)
    balanced, details = probes.logreg(train, val, test, setting, num_classes=2, metric="mean_per_class")
    assert (top1_details["C_chosen_on"], details["C_chosen_on"]) == ("val_acc", "val_mean_class_acc")
    grid, scores = details["C_grid"], details["val_mean_class_acc_grid"]
    assert details["C"] == grid[scores.index(max(scores))] != top1_details["C"], "the two metrics must disagree"
    assert balanced["val_mean_class_acc"] == max(scores) and top1["val_acc"] == max(top1_details["val_acc_grid"])


@pytest.mark.parametrize("probe", ["logreg", "knn"])
def test_a_probe_on_a_mean_per_class_data_set_records_and_summarizes_it(make_cfg, tmp_path, probe, mean_per_class):
    result = run(make_cfg(*PROBE_TINY, f"freeze={probe}"), output_dir=tmp_path / probe)
    record, summary = result["epochs"][0], result["summary"]
    assert result["metric"] == summary["metric"] == "mean_per_class"
    assert 0 <= record["val_mean_class_acc"] <= 1 and 0 <= record["test_mean_class_acc"] <= 1
    assert summary["best_val_metric"] == record["val_mean_class_acc"]
    assert summary["test_metric_at_best_val"] == summary["final_test_metric"] == record["test_mean_class_acc"]
    if probe == "logreg":
        assert result["probe"]["C_chosen_on"] == "cv5_mean_class_acc"  # cv_folds=auto: a small val split
        assert record["val_mean_class_acc"] == max(result["probe"]["val_mean_class_acc_grid"])


def dataset_run(dataset, model, seed, test_acc, mean_class=None, val_mean_class=None):
    """A hand-made result on `dataset`; with `mean_class` one of a data set that reports mean
    per-class accuracy (its test values; val follows unless told), without it an older top-1 file."""
    result = make_result(model=model, seed=seed, test_acc=test_acc, freeze="none")
    result["config"]["dataset"]["name"] = result["dataset"] = dataset
    result.pop("identity", None)
    result["run_id"] = f"{dataset}-{model}-{seed}"
    if mean_class is not None:
        result["metric"] = "mean_per_class"
        for epoch, test, val in zip(result["epochs"], mean_class, val_mean_class or mean_class):
            epoch.update(test_mean_class_acc=test, val_mean_class_acc=val)
    return result


def test_the_report_ranks_each_data_set_on_its_own_metric_and_says_which(tmp_path):
    """On pets `a` wins on top-1 but `b` on mean per-class, the metric pets reports; on cifar10
    (an older file, no `metric`: top-1) `b` wins. So `b` ranks first on both."""
    for seed in (0, 1):
        for result in (dataset_run("pets", "a", seed, [0.80 + seed / 100], mean_class=[0.50]),
                       dataset_run("pets", "b", seed, [0.70 + seed / 100], mean_class=[0.65]),
                       dataset_run("cifar10", "a", seed, [0.60 + seed / 100]),
                       dataset_run("cifar10", "b", seed, [0.70 + seed / 100])):
            write_run(tmp_path / "sweep", result, name=result["run_id"])
    runs, epochs, *_ = analyse([tmp_path / "sweep"])
    assert dict(zip(runs["run_id"], runs["metric"]))["cifar10-a-0"] == "top1"
    pets = runs[runs["dataset"] == "pets"].sort_values("run_id")
    assert pets["test_acc_at_best_val"].tolist() == [0.50, 0.50, 0.65, 0.65]
    assert epochs.loc[epochs["run_id"] == "pets-a-0", "test_top1_acc"].tolist() == [0.80]
    report = write_report([tmp_path / "sweep"], out_dir=tmp_path / "report").read_text()
    ranked = pd.read_csv(tmp_path / "report" / "ranking_across_datasets.csv")
    assert ranked["method"].str.split(",").str[0].tolist() == ["b", "a"] and ranked["mean rank"].tolist() == [1, 2]
    assert "pets (mean per-class) accuracy" in ranked.columns and "cifar10 accuracy" in ranked.columns
    assert "top-1 accuracy on cifar10; mean per-class accuracy on pets" in report
    assert "test accuracy (each data set's metric: top-1 or mean per-class) at the val-best epoch" in report
    table = report[report.index("## Accuracy by setting"):].splitlines()
    assert sum("| mean per-class |" in line for line in table) == 2 and sum("| top-1 |" in line for line in table) == 2


def test_dataset_metric_overrides_the_data_sets_own_and_is_part_of_the_run(make_cfg, tmp_path):
    """`dataset.metric` replaces what the data set reports (VTAB reads every set in top-1; here the synthetic
    set, top-1 of its own, is read in mean per-class accuracy): selection and the summary follow it."""
    own = run(make_cfg(*TINY, "pretrained=false"), output_dir=tmp_path / "own")
    other = run(make_cfg(*TINY, "pretrained=false", "+dataset.metric=mean_per_class"), output_dir=tmp_path / "other")
    assert (own["metric"], other["metric"]) == ("top1", "mean_per_class")
    assert own["summary"]["final_test_metric"] == own["epochs"][-1]["test_acc"]
    assert other["summary"]["final_test_metric"] == other["epochs"][-1]["test_mean_class_acc"]
    assert other["run_id"] != own["run_id"]


def test_an_unknown_dataset_metric_is_one_clear_message(make_cfg):
    from tlbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"dataset.metric.*top5.*top1 or mean_per_class"):
        build.check_settings(make_cfg(*TINY, "+dataset.metric=top5"))
