"""Per-run metrics computed from the per-epoch table of one run.

Definitions (also in METRICS.md); `m` is the compared metric, `test_acc` by default,
and accuracies are fractions in [0, 1]. The epoch a run would be stopped at is chosen on
the val split only; the test split is read at that epoch, never maximized over epochs.

- best_epoch: the epoch the run's own select_epoch rule chooses on val (records/results.py
  chosen_position; files without the setting: acc, the first epoch with the highest val_acc).
- final_<m>: m at the last recorded epoch. <m>_at_best_val: m at best_epoch. These two are
  the accuracy headlines. When the run's val_is_test is true (schema-1 files, dataset.val_split=0)
  best_epoch was chosen on the test split, so test_acc_at_best_val is optimistic.
- oracle_max_<m>: the maximum of m over epochs. For m = test_acc it is picked by looking at the
  test split: an upper bound, never a headline; it is kept only as the reference of
  epochs_to_fraction.
- epochs_to_fraction: first epoch e with m[e] >= fraction * oracle_max_<m> (always reached).
  seconds_to_fraction: sum of time_s over epochs 1..e.
- epochs_to_threshold / seconds_to_threshold: the same for m[e] >= threshold; NaN ("never")
  when no epoch reaches it.
- auc_<m>: mean of m over all recorded epochs = area under the step curve of m against
  epoch (each epoch width 1) divided by the number of epochs, so it lies in [0, 1].
- overfit_gap: train_acc - test_acc at the last epoch, both top-1 (test_top1_acc: load.py reads
  test_acc in the data set's metric, and train_acc is always top-1); max_overfit_gap: its maximum
  over epochs.
- first_divergence_epoch: first epoch e >= 2 where val_loss[e] > val_loss[e-1] while
  train_loss[e] < train_loss[e-1]; NaN ("never") if none.
- total_time_s: sum of time_s; mean_images_per_s: unweighted mean of images_per_s over epochs.
- trainable_params.<phase>: trainable_params in each freeze_phase (the maximum if it varied).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tlbench.records import results


def check_options(epochs: pd.DataFrame, metric: str, fraction: float, threshold: float) -> None:
    """Fail early with the valid choices rather than reporting a column of NaN."""
    choices = sorted(c for c in epochs.columns if str(c).endswith("_acc"))
    if len(epochs) and metric not in epochs.columns:
        raise ValueError(f"--metric {metric!r} is not a per-epoch field of these runs; "
                         f"choose one of {choices}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"--fraction {fraction} must be in (0, 1], e.g. 0.9 for 90% of the best")
    if not 0.0 <= threshold <= 1.0:
        hint = f", did you mean {threshold / 100:g}?" if 1.0 < threshold <= 100.0 else ""
        raise ValueError(f"--threshold {threshold} must be a fraction in [0, 1] "
                         f"(accuracies are fractions){hint}")


def _first_epoch(epochs: pd.DataFrame, reached: pd.Series) -> tuple[float, float]:
    """(epoch number, cumulative seconds) of the first True in `reached`, NaN if none."""
    if not reached.any():
        return math.nan, math.nan
    position = int(np.argmax(reached.to_numpy()))
    seconds = epochs["time_s"].iloc[: position + 1].sum() if "time_s" in epochs else math.nan
    return float(epochs["epoch"].iloc[position]), float(seconds)


def first_divergence_epoch(epochs: pd.DataFrame) -> float:
    """First epoch where val loss rises while train loss falls, vs the previous epoch."""
    if not {"val_loss", "train_loss"} <= set(epochs.columns):
        return math.nan
    val_up = epochs["val_loss"].diff() > 0
    train_down = epochs["train_loss"].diff() < 0
    hits = epochs.loc[val_up & train_down, "epoch"]
    return float(hits.iloc[0]) if len(hits) else math.nan


def trainable_params_by_phase(epochs: pd.DataFrame) -> dict:
    """{"trainable_params.<phase>": count} in the order the phases happened."""
    if "trainable_params" not in epochs.columns:
        return {}
    phases = epochs.get("freeze_phase", pd.Series("all", index=epochs.index)).fillna("all")
    counts = epochs["trainable_params"].groupby(phases, sort=False).max()
    return {f"trainable_params.{phase}": float(count) for phase, count in counts.items()}


def _column_or_nan(epochs: pd.DataFrame, name: str) -> pd.Series:
    return epochs[name] if name in epochs.columns else pd.Series(math.nan, index=epochs.index)


def val_best_position(epochs: pd.DataFrame, rule: str = results.OLD_SELECT_RULE) -> int | None:
    """Row position of the epoch the run's select_epoch `rule` chooses on val (results.chosen_position),
    None without val_acc.

    This is where early stopping on val would have kept the model; reading test there (and
    not at test's own maximum) keeps the reported split out of the selection."""
    val = _column_or_nan(epochs, "val_acc").to_numpy(dtype=float)
    if np.isnan(val).all():
        return None
    return results.chosen_position(val.tolist(), _column_or_nan(epochs, "val_loss").tolist(), rule)


def headline_columns(metric: str) -> list[str]:
    """The accuracy numbers fit to compare settings: m at the last and at the val-best epoch."""
    return [f"final_{metric}", f"{metric}_at_best_val"]


def run_metrics(epochs: pd.DataFrame, metric: str = "test_acc", fraction: float = 0.9,
                threshold: float = 0.9, rule: str = results.OLD_SELECT_RULE) -> dict:
    """All per-run metrics for one run's epochs (sorted by epoch); NaN where undefined. `rule`:
    the run's select_epoch."""
    epochs = epochs.dropna(subset=[metric]) if metric in epochs.columns else epochs.iloc[:0]
    if epochs.empty:
        return {}
    values = epochs[metric]
    oracle_max = float(values.max())
    chosen = val_best_position(epochs, rule)
    test_top1 = epochs["test_top1_acc"] if "test_top1_acc" in epochs.columns else _column_or_nan(epochs, "test_acc")
    gap = _column_or_nan(epochs, "train_acc") - test_top1
    to_fraction = _first_epoch(epochs, values >= fraction * oracle_max)
    to_threshold = _first_epoch(epochs, values >= threshold)
    return {
        f"final_{metric}": float(values.iloc[-1]),
        f"{metric}_at_best_val": math.nan if chosen is None else float(values.iloc[chosen]),
        "best_epoch": math.nan if chosen is None else float(epochs["epoch"].iloc[chosen]),
        "best_val_acc": math.nan if chosen is None else float(_column_or_nan(epochs, "val_acc").iloc[chosen]),
        "best_val_loss": math.nan if chosen is None else float(_column_or_nan(epochs, "val_loss").iloc[chosen]),
        f"oracle_max_{metric}": oracle_max,
        "epochs_to_fraction": to_fraction[0],
        "seconds_to_fraction": to_fraction[1],
        "epochs_to_threshold": to_threshold[0],
        "seconds_to_threshold": to_threshold[1],
        f"auc_{metric}": float(values.mean()),
        "overfit_gap": float(gap.iloc[-1]),
        "max_overfit_gap": float(gap.max()),
        "first_divergence_epoch": first_divergence_epoch(epochs),
        "total_time_s": float(_column_or_nan(epochs, "time_s").sum(min_count=1)),
        "mean_images_per_s": float(_column_or_nan(epochs, "images_per_s").mean()),
        **trainable_params_by_phase(epochs),
    }


def metric_columns(metric: str) -> list[str]:
    """Per-run metric columns that get a mean and CI per group, in report order. The oracle
    maximum is left out: a mean over seeds would make it look like a result."""
    return [*headline_columns(metric), f"auc_{metric}", "epochs_to_fraction",
            "seconds_to_fraction", "epochs_to_threshold", "seconds_to_threshold",
            "overfit_gap", "max_overfit_gap", "first_divergence_epoch", "total_time_s",
            "mean_images_per_s"]


def select_rules(runs: pd.DataFrame) -> list[str]:
    """Per run, the rule that picked its epoch (results.select_rule over its config.* columns: select_epoch, or
    random_init_select_epoch from random weights); a column a run's file lacks counts as absent."""
    keys = ("select_epoch", "random_init_select_epoch", "pretrained")
    columns = {key: runs[f"config.{key}"] if f"config.{key}" in runs else pd.Series(None, index=runs.index, dtype=object)
               for key in keys}
    known = {"select_epoch": str, "random_init_select_epoch": str, "pretrained": (bool, np.bool_)}
    return [results.select_rule({key: value for key, value in zip(keys, values) if isinstance(value, known[key])})
            for values in zip(*(columns[key] for key in keys))]


def add_run_metrics(runs: pd.DataFrame, epochs: pd.DataFrame, metric: str = "test_acc",
                    fraction: float = 0.9, threshold: float = 0.9) -> pd.DataFrame:
    """`runs` with the per-run metric columns appended (failed runs get them too, from
    whatever epochs they recorded; statistics later use only status == "ok")."""
    check_options(epochs, metric, fraction, threshold)
    by_path = dict(list(epochs.groupby("path", sort=False))) if len(epochs) else {}
    rows = [run_metrics(by_path.get(path, epochs.iloc[:0]), metric, fraction, threshold, rule)
            for path, rule in zip(runs["path"], select_rules(runs))]
    computed = pd.DataFrame(rows, index=runs.index)
    for column in [*metric_columns(metric), "best_epoch", "best_val_acc", "best_val_loss", f"oracle_max_{metric}"]:
        if column not in computed.columns:
            computed[column] = math.nan
    return pd.concat([runs, computed], axis=1)
