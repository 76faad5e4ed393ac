"""Accuracy against cost: each group of seeds as one point (mean accuracy, mean cost), and the
frontier of settings no other setting beats on both (at least as accurate and at most as costly,
one of them strictly). Computed per data set: accuracies on different data sets do not compare."""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.compare import finished
from tlbench.report.load import follows_dataset_metric
from tlbench.report.stats import mean_ci
from tlbench.report.tables import METRIC_NAMES

# (result.json cost column, label, unit) for each cost axis the report draws.
COSTS = {"cost.wall_s": ("wall time", "s"), "cost.gmacs_per_image": ("forward GMACs per image", "GMACs")}


def group_points(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per group of finished runs: dataset, setting, init, n, accuracy mean and 95% CI,
    mean of each cost column, trainable params; `metric`: the data set's, when `column` is read in
    it."""
    ok = finished(runs)
    if ok.empty or column not in ok.columns or not any(c in ok.columns for c in COSTS):
        return pd.DataFrame()
    rows = []
    for _, group in ok.groupby("group_key", sort=False):
        first, estimate = group.iloc[0], mean_ci(group[column])
        row = {"dataset": first.get("dataset", "data"), "setting": first["setting"], "init": first["init"],
               "metric": first.get("metric") if follows_dataset_metric(column) else None,
               "n": estimate.n, "accuracy": estimate.mean, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high,
               "trainable_params": group.get("cost.trainable_params", pd.Series(dtype=float)).max()}
        for cost in COSTS:
            row[cost] = group[cost].mean() if cost in group.columns else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def on_frontier(points: pd.DataFrame, cost: str) -> pd.Series:
    """True for the points no other point of the same data set dominates on (accuracy, cost)."""
    flags = pd.Series(False, index=points.index)
    for _, frame in points.dropna(subset=[cost, "accuracy"]).groupby("dataset", sort=False):
        best = -math.inf
        for index, row in frame.sort_values([cost, "accuracy"], ascending=[True, False]).iterrows():
            if row["accuracy"] > best:
                flags[index], best = True, row["accuracy"]
    return flags


def frontier_table(points: pd.DataFrame, cost: str) -> pd.DataFrame:
    """The frontier's settings for people, cheapest first per data set."""
    label, unit = COSTS[cost]
    chosen = points[on_frontier(points, cost)].sort_values(["dataset", cost])
    interval = ["n = 1, no interval" if n < 2 else f"{100 * lo:.1f} to {100 * hi:.1f}"
                for n, lo, hi in zip(chosen["n"], chosen["ci_low"], chosen["ci_high"])]
    number = chosen.groupby("dataset", sort=False).cumcount() + 1  # as numbered in the chart
    metric = chosen["metric"] if "metric" in chosen.columns else pd.Series(None, index=chosen.index)
    return pd.DataFrame({"dataset": chosen["dataset"], "#": number, "setting": chosen["setting"], "init": chosen["init"],
                         "n": chosen["n"], "accuracy": chosen["accuracy"].map(lambda v: f"{100 * v:.1f}%"),
                         "metric": metric.map(lambda kind: METRIC_NAMES.get(kind, "–")),
                         "95% CI": interval, f"{label} ({unit})": chosen[cost].map(lambda v: f"{v:.3g}"),
                         "trainable params": chosen["trainable_params"].map(
                             lambda v: "–" if pd.isna(v) else f"{int(v):,}")})
