"""`select_epoch`: how the val-chosen epoch is picked. One rule (records/results.py chosen_position)
decides the summary's best_epoch, best.pt and the report's val-best columns."""

import json

import pandas as pd

import pytest
from omegaconf import OmegaConf
import torch
from conftest import TINY
from report_fixtures import make_result, write_run

from tlbench.errors import ConfigError
from tlbench.records import results
from tlbench.report import load_epochs, load_runs
from tlbench.report.metrics import add_run_metrics
from tlbench.runner.build import check_settings
from tlbench.runner.run import run, run_id_of
from tlbench.training import engine

# Val accuracy ties at epochs 2 and 4 (0.80) and val loss decides; the lowest loss is at epoch 5; the
# centred 3-epoch mean of val accuracy peaks at epoch 3 (0.80, 0.76, 0.80 around it).
VAL_ACC = [0.60, 0.80, 0.76, 0.80, 0.64, 0.60]
VAL_LOSS = [1.00, 0.70, 0.62, 0.65, 0.58, 0.80]
TEST_ACC = [0.55, 0.70, 0.78, 0.74, 0.72, 0.69]
CHOSEN = {"acc": 2, "acc_loss": 4, "loss": 5, "smoothed": 3, "final": 6}


def curve() -> list[dict]:
    return [{"epoch": i + 1, "val_acc": v, "val_loss": loss, "test_acc": t, "val_mean_class_acc": v,
             "test_mean_class_acc": t, "train_acc": 0.9, "test_loss": 0.5, "time_s": 1.0}
            for i, (v, loss, t) in enumerate(zip(VAL_ACC, VAL_LOSS, TEST_ACC))]


@pytest.mark.parametrize("rule", CHOSEN)
def test_each_rule_chooses_its_epoch_on_a_curve_where_accuracy_ties_and_loss_decides(rule):
    summary = results.summarize(curve(), "top1", rule)
    assert summary["best_epoch"] == CHOSEN[rule] and summary["select_epoch"] == rule
    assert summary["test_acc_at_best_val"] == TEST_ACC[CHOSEN[rule] - 1]
    assert summary["best_val_acc"] == VAL_ACC[CHOSEN[rule] - 1]


def test_every_rule_the_setting_takes_has_a_key():
    from tlbench.specs import SELECT_RULES

    assert set(SELECT_RULES) == set(CHOSEN)


def test_a_file_without_the_setting_chose_by_accuracy_first_epoch_wins():
    assert results.select_rule({"epochs": 3}) == "acc"
    assert results.chosen_position([0.8, 0.9, 0.9], [0.5, 0.6, 0.4]) == 1


def test_the_report_uses_each_runs_own_rule(tmp_path):
    for rule in ("acc", "acc_loss", "smoothed"):
        write_run(tmp_path, make_result(test_acc=TEST_ACC, val_acc=VAL_ACC, val_loss=VAL_LOSS, select_epoch=rule),
                  name=rule)
    write_run(tmp_path, make_result(test_acc=TEST_ACC, val_acc=VAL_ACC, val_loss=VAL_LOSS, seed=1), name="old")
    runs = add_run_metrics(load_runs([tmp_path]), load_epochs([tmp_path]))
    chosen = dict(zip(runs["path"].map(lambda p: p.split("/")[-2]), runs["best_epoch"]))
    assert chosen == {"acc": 2, "acc_loss": 4, "smoothed": 3, "old": 2}
    assert runs.set_index(runs["path"].map(lambda p: p.split("/")[-2])).loc["acc_loss", "test_acc_at_best_val"] == 0.74


def test_an_unknown_rule_fails_before_training_naming_the_choices(make_cfg):
    with pytest.raises(ConfigError, match="select_epoch='best' is not known; use one of acc, acc_loss, loss, "
                                          "smoothed, final"):
        check_settings(make_cfg("select_epoch=best"))


class _Saving:
    """engine._Saver fed the constructed curve, with a model whose weight is its epoch number."""

    def __init__(self, tmp_path, rule, epochs=len(VAL_ACC)):
        self.options = engine.TrainOptions(epochs=epochs, best_checkpoint=tmp_path / "best.pt", select_epoch=rule)
        self.model, self.history = torch.nn.Linear(1, 1), engine.History()
        self.saver = engine._Saver(self.options, train_loader=None)

    def train(self, epochs):
        phase = type("Phase", (), {"name": "all"})
        for record in epochs:
            with torch.no_grad():
                self.model.weight.fill_(record["epoch"])
            self.history.epochs.append(record)
            self.saver.epoch_end(record, self.model, None, None, phase, self.history)

    def kept_epoch(self) -> int:
        return int(torch.load(self.options.best_checkpoint, weights_only=True)["weight"].item())


@pytest.mark.parametrize("rule", CHOSEN)
def test_best_pt_holds_the_epoch_the_summary_reports(tmp_path, rule):
    saving = _Saving(tmp_path, rule)
    saving.train(curve())
    assert saving.kept_epoch() == results.summarize(curve(), "top1", rule)["best_epoch"] == CHOSEN[rule]


@pytest.mark.parametrize("rule", ["smoothed", "acc_loss"])
def test_a_resumed_saver_keeps_the_same_epoch(tmp_path, rule):
    """A resume after epoch 3: the saver picks up the kept epoch from the history (best.pt on disk)
    and the restored weights (epoch 3's, which smoothed has not settled yet)."""
    first = _Saving(tmp_path, rule)
    first.train(curve()[:3])
    resumed = _Saving(tmp_path, rule)
    resumed.history.epochs[:] = curve()[:3]
    with torch.no_grad():
        resumed.model.weight.fill_(3)
    resumed.saver.resumed(resumed.history, resumed.model)
    resumed.train(curve()[3:])
    assert resumed.kept_epoch() == CHOSEN[rule]


def test_a_run_keeps_the_epoch_its_rule_chose_as_best(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, "pretrained=false", "epochs=3", "save_best=true", "select_epoch=acc_loss",
                          "threads=1"), output_dir=tmp_path / "run")
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert result["summary"]["select_epoch"] == "acc_loss"
    assert best["epoch"] == result["summary"]["best_epoch"]
    assert best["test_acc"] == result["summary"]["test_acc_at_best_val"]


def test_the_old_rule_keeps_old_run_ids_and_another_rule_is_another_experiment(make_cfg):
    """select_epoch=acc is what every run did before the setting: left out of the identity, so a
    config without the key (an old result.json's) has the id it always had."""
    from tlbench.records import identity

    old = make_cfg(*TINY, "select_epoch=acc")
    config = identity.flatten(OmegaConf.to_container(old, resolve=True))
    assert "select_epoch" not in identity.experiment(OmegaConf.to_container(old, resolve=True))
    assert config["select_epoch"] == "acc"
    assert run_id_of(make_cfg(*TINY, "select_epoch=loss")) != run_id_of(make_cfg(*TINY)) != run_id_of(old)
    # a probe has no epochs to choose among: the rule is not part of its identity
    assert run_id_of(make_cfg(*TINY, "freeze=knn", "select_epoch=loss")) == run_id_of(make_cfg(*TINY, "freeze=knn"))


def selection_rules():
    """benchmarks/selection_rules.py, imported as the script it is."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "selection_rules.py"
    spec = importlib.util.spec_from_file_location("selection_rules", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_selection_rules_benchmark_reads_test_at_each_rules_epoch(tmp_path, capsys):
    import pandas as pd

    write_run(tmp_path / "sweep", make_result(test_acc=TEST_ACC, val_acc=VAL_ACC, val_loss=VAL_LOSS, seed=0))
    write_run(tmp_path / "sweep", make_result(test_acc=[0.5, 0.6, 0.7], val_acc=[0.5, 0.7, 0.6], seed=1))
    write_run(tmp_path / "sweep", make_result(test_acc=[0.8], freeze="logreg", seed=2))  # a probe: skipped
    write_run(tmp_path / "sweep", make_result(test_acc=[0.5, 0.9], val_is_test=True, seed=3))  # skipped
    assert selection_rules().main([str(tmp_path / "sweep"), "--by", "dataset.name,pretrained",
                                   "--csv", str(tmp_path / "rows.csv")]) == 0
    shown = capsys.readouterr().out
    assert "4 result.json files, 2 fine-tuning runs counted" in shown and "1 skipped (a probe)" in shown
    rows = pd.read_csv(tmp_path / "rows.csv")
    first = rows[rows["seed"] == 0].set_index("rule")
    assert first["epoch"].to_dict() == CHOSEN
    assert first.loc["acc_loss", "test_metric"] == 0.74 and first.loc["acc_loss", "vs_final"] == pytest.approx(0.05)
    # acc over both runs: (0.70 + 0.60) / 2 = 65%, vs final (0.69 and 0.70): -4.5 points, 2 runs
    table = selection_rules().table(rows, ["dataset.name", "pretrained"]).set_index("rule")
    assert table.loc["acc", ["test_pct", "vs_final_pts", "runs"]].tolist() == [65.0, -4.5, 2]
    assert list(table.index) == ["acc", "acc_loss", "loss", "smoothed", "final"]


def with_val_size(result: dict, val_size: int) -> dict:
    result["data_info"]["val_size"] = val_size
    return result


def test_the_report_flags_selections_made_on_few_val_images(tmp_path):
    from tlbench.report.build import write_report

    for seed in (0, 1):  # 25 val images: flagged; val accuracy 0.8 on 25 images has SE 8.0 points
        write_run(tmp_path / "small", with_val_size(make_result(val_acc=[0.6, 0.8, 0.8], seed=seed), 25))
        write_run(tmp_path / "large", with_val_size(make_result(val_acc=[0.6, 0.8, 0.8], seed=seed), 200))
    small = write_report([tmp_path / "small"], tmp_path / "small_report").read_text()
    assert "70.0%†" in small and "25 (SE 8.0)†" in small
    assert "† chosen on fewer than 100 val images" in small and "dataset.val_split" in small
    runs = pd.read_csv(tmp_path / "small_report" / "runs.csv")
    assert runs["val_size"].tolist() == [25, 25] and runs["best_val_acc_se"].tolist() == pytest.approx([0.0795] * 2, abs=1e-4)
    large = write_report([tmp_path / "large"], tmp_path / "large_report").read_text()
    assert "200 (SE 2.8)" in large and "†" not in large


def test_the_val_accuracy_standard_error_is_agresti_coulls_and_never_zero():
    from scipy.stats import binomtest

    from tlbench.report.selection import Z, standard_error

    for right, n in ((17, 17), (20, 25), (0, 40), (160, 200)):
        wilson = binomtest(right, n).proportion_ci(confidence_level=0.95, method="wilson")
        centre = (wilson.low + wilson.high) / 2  # Agresti-Coull's adjusted p is the Wilson interval's centre
        n_adjusted = n + Z ** 2
        assert standard_error(right / n, n) == pytest.approx((centre * (1 - centre) / n_adjusted) ** 0.5, rel=1e-3)
    assert 100 * standard_error(1.0, 17) == pytest.approx(6.3, abs=0.05)  # 17 of 17 right is not certainty


def test_the_tuned_on_val_table_says_how_many_val_images_chose(tmp_path):
    from tlbench.report.build import write_report

    for lr, accs in ((0.001, [0.6, 0.8]), (0.01, [0.6, 0.72])):
        write_run(tmp_path / "sweep", with_val_size(make_result(val_acc=accs, test_acc=[0.5, 0.6], lr=lr), 25))
    shown = write_report([tmp_path / "sweep"], tmp_path / "report", tune=["optimizer.lr"]).read_text()
    tuned = shown[shown.index("## Tuned on val"):shown.index("## Findings")]
    assert "80.0†" in tuned and "25 (SE 8.0)†" in tuned and "† chosen on fewer than 100 val images" in tuned
