"""Metric definitions of the report, checked on hand-written result.json files."""

from __future__ import annotations

import inspect
import json
import math
import warnings

import pandas as pd
import pytest

from report_fixtures import SWEEP, as_schema_1, make_result, write_run, write_sweep
from tlbench.report import load_epochs, load_iter_loss, load_runs
from tlbench.report.build import analyse
from tlbench.report.findings import delta_sentence, findings
from tlbench.report.metrics import run_metrics
from tlbench.report.stats import mean_ci, welch_diff_ci
from tlbench.report.tables import accuracy_table, convergence_table, overfitting_table

T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)


def one_run_metrics(tmp_path, fraction=0.9, threshold=0.9, **kwargs) -> dict:
    write_run(tmp_path, make_result(**kwargs))
    epochs = load_epochs([tmp_path])
    return run_metrics(epochs, "test_acc", fraction, threshold)


def test_convergence_counts_epochs_and_cumulative_seconds(tmp_path):
    m = one_run_metrics(tmp_path, test_acc=[0.5, 0.7, 0.85, 0.9, 0.88], time_s=10.0,
                        fraction=0.9, threshold=0.88)
    # 90% of the best (0.9) is 0.81, first reached at epoch 3 after 3 x 10 s.
    assert (m["epochs_to_fraction"], m["seconds_to_fraction"]) == (3, 30)
    assert (m["epochs_to_threshold"], m["seconds_to_threshold"]) == (4, 40)
    assert m["final_test_acc"] == 0.88 and m["test_acc_at_best_val"] == 0.9
    assert m["best_epoch"] == 4


def test_threshold_never_reached_is_nan_and_reads_never(tmp_path):
    write_sweep(tmp_path, failed=False)
    runs, _, _, summary, _, _ = analyse([tmp_path], threshold=0.99)
    assert runs["epochs_to_threshold"].isna().all()
    table = convergence_table(summary, fraction=0.9, threshold=0.99)
    assert set(table["epochs to 99%"]) == {"never"}


def test_auc_is_mean_test_acc_over_epochs(tmp_path):
    m = one_run_metrics(tmp_path, test_acc=[0.2, 0.4, 0.9])
    assert m["auc_test_acc"] == pytest.approx(0.5)


def test_overfit_gap_is_train_minus_test_final_and_max(tmp_path):
    # val_acc flat at 0.6, so a gap taken against val would read 0.2 and 0.3 instead.
    m = one_run_metrics(tmp_path, test_acc=[0.5, 0.6, 0.7], val_acc=[0.6, 0.6, 0.6],
                        train_acc=[0.5, 0.9, 0.8])
    assert m["overfit_gap"] == pytest.approx(0.1)
    assert m["max_overfit_gap"] == pytest.approx(0.3)


def test_first_divergence_needs_val_loss_up_and_train_loss_down(tmp_path):
    m = one_run_metrics(tmp_path, test_acc=[0.5, 0.6, 0.6, 0.6, 0.6],
                        val_loss=[1.0, 0.8, 0.9, 1.0, 1.1], train_loss=[1.0, 0.9, 0.95, 0.7, 0.6])
    # Epoch 3: val up but train up too, so not yet; epoch 4 is the first divergence.
    assert m["first_divergence_epoch"] == 4


def test_no_divergence_reads_never(tmp_path):
    write_sweep(tmp_path, failed=False)
    runs, _, _, summary, _, _ = analyse([tmp_path])
    assert runs["first_divergence_epoch"].isna().all()
    assert overfitting_table(summary, runs).iloc[0, -1] == "never, never, never"


def test_trainable_params_per_freeze_phase(tmp_path):
    m = one_run_metrics(tmp_path, test_acc=[0.5, 0.6, 0.7], phases=["head", "head", "all"])
    assert m["trainable_params.head"] == 5130 and m["trainable_params.all"] == 11_181_642


def test_ci_with_one_seed_is_no_interval():
    estimate = mean_ci([0.8])
    assert estimate.mean == 0.8 and estimate.n == 1
    assert math.isnan(estimate.ci_low) and math.isnan(estimate.ci_high)


def test_ci_with_three_seeds_matches_hand_t_interval():
    values = [0.80, 0.84, 0.86]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = T_975_DF2 * std / math.sqrt(3)
    estimate = mean_ci(values)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((mean - half, mean + half))


def test_welch_interval_matches_hand_computation():
    from scipy import stats

    a, b = [0.9, 0.92, 0.88, 0.91], [0.8, 0.85]
    va, vb = pd.Series(a).var() / 4, pd.Series(b).var() / 2
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 1)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = sum(a) / 4 - sum(b) / 2
    estimate = welch_diff_ci(a, b)
    assert (estimate.mean, estimate.ci_low, estimate.ci_high) == pytest.approx(
        (diff, diff - half, diff + half))


def test_pretrained_pairs_by_seed_with_paired_t(tmp_path):
    write_sweep(tmp_path)
    _, _, _, _, deltas, _ = analyse([tmp_path])
    resnet = deltas.set_index("model").loc["resnet18"]
    # Per-seed differences are 0.10, 0.12, 0.08: mean 0.10, std 0.02.
    half = T_975_DF2 * 0.02 / math.sqrt(3)
    for column in ("delta_final_test_acc", "delta_test_acc_at_best_val"):
        assert resnet["method"] == "paired" and resnet[f"{column}_n"] == 3
        assert resnet[column] == pytest.approx(0.10)
        assert (resnet[f"{column}_ci_low"], resnet[f"{column}_ci_high"]) == \
            pytest.approx((0.10 - half, 0.10 + half))
    mobilenet = deltas.set_index("model").loc["mobilenet_v3_small"]
    assert mobilenet["delta_final_test_acc"] == pytest.approx(0.14)
    assert math.isnan(mobilenet["delta_final_test_acc_ci_low"])


def test_random_inits_own_settings_do_not_keep_it_from_its_pretrained_twin(tmp_path):
    """A random-init run carries settings only random init has (its lr ratio, its epoch rule, BitFit's own ratio):
    the report still pairs it with the pretrained run of the same setting, and not with another setting's."""
    own = {"random_init_lr_ratio": 3.0, "random_init_select_epoch": "final"}
    for seed, gain in enumerate((0.10, 0.12, 0.08)):
        write_run(tmp_path, make_result(pretrained=True, seed=seed, test_acc=[0.9]))
        write_run(tmp_path, make_result(pretrained=False, seed=seed, test_acc=[0.9 - gain], **own))
    write_run(tmp_path, make_result(pretrained=False, seed=0, test_acc=[0.5], lr=0.01, **own))
    _, _, _, summary, deltas, _ = analyse([tmp_path])
    assert len(summary) == 3 and len(deltas) == 1
    assert deltas.loc[0, "method"] == "paired" and deltas.loc[0, "delta_final_test_acc"] == pytest.approx(0.10)


def test_unequal_seeds_use_welch(tmp_path):
    write_sweep(tmp_path, runs=SWEEP[:5], failed=False)  # pretrained seeds 0-2, random 0-1
    _, _, _, _, deltas, _ = analyse([tmp_path])
    assert deltas.loc[0, "method"] == "welch"
    assert deltas.loc[0, "n_pretrained"] == 3 and deltas.loc[0, "n_random"] == 2


def test_runs_differing_in_another_key_are_not_paired(tmp_path):
    write_run(tmp_path, make_result(pretrained=True, lr=0.001))
    write_run(tmp_path, make_result(pretrained=False, lr=0.01))
    _, _, _, summary, deltas, _ = analyse([tmp_path])
    assert len(summary) == 2 and deltas.empty


def test_seed_output_dir_and_device_do_not_split_groups(tmp_path):
    write_run(tmp_path, make_result(seed=0))
    write_run(tmp_path, make_result(seed=1, device="cuda"))
    _, _, _, summary, _, _ = analyse([tmp_path])
    assert summary["n"].tolist() == [2]


def test_failed_and_running_runs_listed_but_excluded_from_statistics(tmp_path):
    write_sweep(tmp_path)
    write_run(tmp_path, make_result(seed=4, test_acc=[0.99], status="running"))
    runs, _, _, summary, _, _ = analyse([tmp_path])
    assert runs["status"].value_counts().to_dict() == {"ok": 8, "failed": 1, "running": 1}
    resnet_pre = summary[(summary["model"] == "resnet18") & (summary["init"] == "pretrained")]
    assert resnet_pre["n"].item() == 3 and resnet_pre["seeds"].item() == "0 1 2"


def test_findings_sentences():
    row = pd.Series({"model": "resnet18", "method": "paired", "n_pretrained": 3, "n_random": 3,
                     "delta_final_test_acc": 0.062, "delta_final_test_acc_ci_low": 0.051,
                     "delta_final_test_acc_ci_high": 0.073, "delta_final_test_acc_n": 3,
                     "val_is_test": False})
    assert delta_sentence(row, ["model"], "final_test_acc") == (
        "Pretraining raised final test accuracy of resnet18 by 6.2 points "
        "(n = 3 seeds, 95% CI 5.1 to 7.3).")
    lowered = row.copy()
    lowered[["delta_final_test_acc", "delta_final_test_acc_ci_low"]] = [-0.01, -0.03]
    text = delta_sentence(lowered, ["model"], "final_test_acc")
    assert "lowered" in text and "includes zero" in text
    single = row.copy()
    single[["delta_final_test_acc_ci_low", "delta_final_test_acc_ci_high",
            "delta_final_test_acc_n"]] = [math.nan, math.nan, 1]
    assert delta_sentence(single, ["model"], "final_test_acc").endswith(
        "(n = 1 seed, no interval).")
    at_val_best = row.rename(lambda k: k.replace("final_test_acc", "test_acc_at_best_val"))
    assert delta_sentence(at_val_best, ["model"], "test_acc_at_best_val") == (
        "Pretraining raised test accuracy at the val-best epoch of resnet18 by 6.2 points "
        "(n = 3 seeds, 95% CI 5.1 to 7.3).")
    at_val_best["val_is_test"] = True
    assert delta_sentence(at_val_best, ["model"], "test_acc_at_best_val").endswith(
        "; that epoch was chosen on the test split (val_is_test), so this is optimistic.")


def test_load_runs_flattens_config_and_keeps_failed(tmp_path):
    write_sweep(tmp_path)
    runs = load_runs([tmp_path])
    assert {"config.model.name", "config.optimizer.lr", "summary.final_test_acc", "path",
            "status", "env.torch", "val_is_test", "data_info.val_source"} <= set(runs.columns)
    assert sorted(runs["status"].unique()) == ["failed", "ok"]
    epochs, losses = load_epochs([tmp_path]), load_iter_loss([tmp_path])
    assert len(epochs) == 8 * 4 + 1 and len(losses) == (8 * 4 + 1) * 20


def test_missing_or_empty_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_runs([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no result.json found under .*empty"):
        load_runs([tmp_path / "empty"])


def test_newer_schema_warns_and_unknown_fields_are_ignored(tmp_path):
    result = make_result()
    result.update(schema_version=3, new_field={"x": 1})
    path = write_run(tmp_path, result)
    with pytest.warns(UserWarning, match=f"{path}.*schema_version 3"):
        runs, *_ = analyse([tmp_path])
    assert runs["final_test_acc"].item() == 0.8


def test_schema_2_reads_without_warning(tmp_path):
    write_run(tmp_path, make_result())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs, *_ = analyse([tmp_path])
    assert runs["val_is_test"].tolist() == [False]


def test_bad_metric_or_threshold_names_the_fix(tmp_path):
    write_sweep(tmp_path, failed=False)
    with pytest.raises(ValueError, match="choose one of .*test_acc"):
        analyse([tmp_path], metric="test_accuracy")
    with pytest.raises(ValueError, match="did you mean 0.9"):
        analyse([tmp_path], threshold=90)


def test_duplicate_run_id_counts_once(tmp_path):
    result = make_result()
    write_run(tmp_path / "a", result)
    write_run(tmp_path / "b", json.loads(json.dumps(result)))
    with pytest.warns(UserWarning, match="appears twice"):
        runs = load_runs([tmp_path / "a", tmp_path / "b"])
    assert len(runs) == 1


def test_runs_from_before_a_setting_existed_group_with_runs_at_its_default_only(tmp_path):
    """freeze.bn_eval came later: an older file without it behaved as bn_eval=false."""
    older = make_result(seed=0)
    newer = make_result(seed=1)
    newer["config"]["freeze"]["bn_eval"] = False
    other = make_result(seed=2, lr=0.01)
    other["config"]["freeze"]["bn_eval"] = True
    for result in (older, newer, other):
        write_run(tmp_path, result)
    _, _, _, summary, _, _ = analyse([tmp_path])
    assert sorted(summary["n"].tolist()) == [1, 2]
    with_bn_eval = make_result(seed=3)
    with_bn_eval["config"]["freeze"]["bn_eval"] = True
    write_run(tmp_path / "b", older)
    write_run(tmp_path / "b", with_bn_eval)
    _, _, _, summary, _, _ = analyse([tmp_path / "b"])
    assert sorted(summary["n"].tolist()) == [1, 1], "an older run was taken for a bn_eval=true run"


# Val peaks at epoch 3, test at epoch 2: the headline must follow val, not test's maximum.
VAL_BEST_3_TEST_BEST_2 = dict(test_acc=[0.70, 0.85, 0.80, 0.78], val_acc=[0.72, 0.80, 0.83, 0.81])


def test_test_acc_is_read_at_the_val_best_epoch_not_at_its_own_maximum(tmp_path):
    m = one_run_metrics(tmp_path, **VAL_BEST_3_TEST_BEST_2)
    assert m["best_epoch"] == 3
    assert m["test_acc_at_best_val"] == 0.80 and m["final_test_acc"] == 0.78
    assert m["oracle_max_test_acc"] == 0.85  # kept for epochs_to_fraction only
    runs, _, _, summary, _, _ = analyse([tmp_path])
    assert summary["test_acc_at_best_val_mean"].item() == 0.80
    assert not any("oracle" in c or c.startswith("best_") for c in summary.columns)
    shown = accuracy_table(summary, "test_acc").iloc[0].tolist()
    assert "80.0%" in shown and "78.0%" in shown and "85.0%" not in shown


def test_val_best_epoch_tie_goes_to_the_first_epoch(tmp_path):
    m = one_run_metrics(tmp_path, test_acc=[0.5, 0.6, 0.7], val_acc=[0.8, 0.9, 0.9])
    assert m["best_epoch"] == 2 and m["test_acc_at_best_val"] == 0.6


def test_pretrained_deltas_use_the_val_best_epoch_and_the_final_epoch(tmp_path):
    # Pretrained: val-best epoch 3 (test 0.70), final 0.65, test max 0.90.
    # Random: val-best epoch 2 (test 0.62), final 0.58, test max 0.62.
    write_run(tmp_path, make_result(pretrained=True, test_acc=[0.60, 0.90, 0.70, 0.65],
                                    val_acc=[0.60, 0.70, 0.80, 0.75]))
    write_run(tmp_path, make_result(pretrained=False, test_acc=[0.50, 0.62, 0.60, 0.58],
                                    val_acc=[0.50, 0.70, 0.60, 0.55]))
    runs, _, _, summary, deltas, _ = analyse([tmp_path])
    row = deltas.iloc[0]
    assert row["delta_test_acc_at_best_val"] == pytest.approx(0.08)  # 0.28 if test's max leaked
    assert row["delta_final_test_acc"] == pytest.approx(0.07)
    assert not any("best_test_acc" in c or "oracle" in c for c in deltas.columns)
    text = findings(runs, summary, deltas, "test_acc", 0.9)
    assert "raised test accuracy at the val-best epoch of resnet18 by 8.0 points" in text
    assert "raised final test accuracy of resnet18 by 7.0 points" in text
    assert "optimistic" not in text


def test_schema_1_file_reads_test_as_its_val_and_is_flagged(tmp_path):
    write_run(tmp_path, as_schema_1(make_result(test_acc=[0.5, 0.7, 0.6])))
    epochs = load_epochs([tmp_path])
    assert epochs["test_acc"].tolist() == epochs["val_acc"].tolist() == [0.5, 0.7, 0.6]
    assert epochs["test_loss"].tolist() == epochs["val_loss"].tolist()
    runs, _, _, summary, _, _ = analyse([tmp_path])
    assert runs["val_is_test"].tolist() == [True] and summary["val_is_test"].tolist() == [True]
    assert runs["data_info.val_is_test"].tolist() == [True]
    assert runs["final_test_acc"].item() == 0.6 and runs["test_acc_at_best_val"].item() == 0.7
    assert runs["summary.test_acc_at_best_val"].item() == 0.7


def test_val_split_0_run_is_flagged_in_deltas_and_findings(tmp_path):
    for pretrained, accs in ((True, [0.6, 0.8]), (False, [0.5, 0.6])):
        write_run(tmp_path, make_result(pretrained=pretrained, test_acc=accs, val_is_test=True))
    runs, _, _, summary, deltas, _ = analyse([tmp_path])
    assert runs["val_is_test"].all() and deltas["val_is_test"].tolist() == [True]
    text = findings(runs, summary, deltas, "test_acc", 0.9)
    assert "val-best epoch of resnet18 by 20.0 points (n = 1 seed, no interval); that epoch " \
           "was chosen on the test split (val_is_test), so this is optimistic." in text


def test_default_metric_is_test_acc(tmp_path):
    from tlbench.report.__main__ import parse_args
    from tlbench.report.build import write_report
    from tlbench.report.callback import ReportCallback

    assert parse_args(["sweep"]).metric == "test_acc"
    assert ReportCallback().options["metric"] == "test_acc"
    for function in (analyse, write_report):
        assert inspect.signature(function).parameters["metric"].default == "test_acc"
    write_run(tmp_path, make_result(**VAL_BEST_3_TEST_BEST_2))
    runs, *_ = analyse([tmp_path])
    assert runs["final_test_acc"].item() == 0.78
