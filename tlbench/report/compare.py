"""Group statistics across seeds and the pretrained-minus-random comparison."""

from __future__ import annotations

import pandas as pd

from tlbench.report.groups import is_pretrained_column, label_columns, label_value, short_name
from tlbench.report import selection
from tlbench.report.metrics import headline_columns, metric_columns
from tlbench.report.stats import Estimate, mean_ci, paired_diff_ci, welch_diff_ci


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that count in statistics: a failed or still-running run's partial curve would
    bias every mean."""
    return runs[runs["status"] == "ok"]


def first_column(runs: pd.DataFrame, names, default: pd.Series) -> pd.Series:
    """The first of the named columns the table has (a top-level field or its config key)."""
    return next((runs[name] for name in names if name in runs.columns), default)


def seed_of(runs: pd.DataFrame) -> pd.Series:
    return first_column(runs, ("seed", "config.seed"), pd.Series(range(len(runs)), index=runs.index))


def setting_columns(runs: pd.DataFrame) -> list[str]:
    """Label columns naming a setting apart from its init (shown separately as `init`)."""
    return [c for c in label_columns(runs) if not is_pretrained_column(c)] if len(runs) else []


def any_val_is_test(runs: pd.DataFrame) -> bool:
    """Whether any of these runs chose its epoch on the test split: one such seed is enough to
    make a group's val-selected mean optimistic."""
    if "val_is_test" not in runs.columns:
        return False
    return bool(runs["val_is_test"].eq(True).any())  # None (not recorded) counts as no


def _estimate_columns(prefix: str, estimate: Estimate) -> dict:
    return {f"{prefix}_mean": estimate.mean, f"{prefix}_std": estimate.std,
            f"{prefix}_ci_low": estimate.ci_low, f"{prefix}_ci_high": estimate.ci_high,
            f"{prefix}_n": estimate.n}


def group_summary(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per group of finished runs (same config except seed): n, seeds, val_is_test, the
    data set's metric, and mean / std / 95% t CI / n of every per-run metric. Sorted by mean final
    metric."""
    ok = finished(runs)
    labels = setting_columns(ok)
    phase_columns = [c for c in ok.columns if c.startswith("trainable_params.")]
    rows = []
    for key, group in ok.groupby("group_key", sort=False):
        first = group.iloc[0]
        row = {short_name(c): label_value(first, c) for c in labels}
        row["init"] = first["init"]
        row["n"] = len(group)
        row["seeds"] = " ".join(str(s) for s in sorted(seed_of(group).tolist(), key=str))
        row["val_is_test"] = any_val_is_test(group)
        row["metric"] = first.get("metric", "top1")  # the data set's: what val_acc and test_acc hold (load.py)
        if "small_val" in group.columns:
            row.update(selection.group_columns(group))
        for column in metric_columns(metric):
            row.update(_estimate_columns(column, mean_ci(group[column])))
        for column in phase_columns:
            row[column] = group[column].max()
        row["group_key"] = key
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(f"final_{metric}_mean", ascending=False).reset_index(drop=True)


def _by_seed(group: pd.DataFrame, column: str) -> dict:
    return dict(zip(seed_of(group), group[column]))


def delta(pretrained: pd.DataFrame, random: pd.DataFrame, column: str) -> Estimate:
    """Pretrained minus random for one metric column.

    Paired t on per-seed differences when both sides ran exactly the same seeds
    (each once); otherwise Welch t on the difference of means.
    """
    seeds_p, seeds_r = seed_of(pretrained), seed_of(random)
    same_seeds = (set(seeds_p) == set(seeds_r) and seeds_p.is_unique and seeds_r.is_unique)
    if same_seeds:
        return paired_diff_ci(_by_seed(pretrained, column), _by_seed(random, column))
    return welch_diff_ci(pretrained[column], random[column])


def pretrained_deltas(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per pair of groups identical except `pretrained`: the difference (pretrained
    minus random) of the metric at the final epoch and at the val-best epoch, each with its 95%
    CI, and val_is_test when either side chose its epoch on the test split. Sorted by the
    final difference."""
    ok = finished(runs)
    labels = setting_columns(ok)
    rows = []
    for key, group in ok.groupby("pair_key", sort=False):
        pretrained, random = group[group["init"] == "pretrained"], group[group["init"] == "random"]
        if pretrained.empty or random.empty:
            continue
        first = group.iloc[0]
        row = {short_name(c): label_value(first, c) for c in labels}
        row.update(n_pretrained=len(pretrained), n_random=len(random))
        for column in headline_columns(metric):
            estimate = delta(pretrained, random, column)
            row.update({f"delta_{column}": estimate.mean,
                        f"delta_{column}_ci_low": estimate.ci_low,
                        f"delta_{column}_ci_high": estimate.ci_high,
                        f"delta_{column}_n": estimate.n})
            row["method"] = estimate.method
        row["val_is_test"] = any_val_is_test(group)
        row["metric"] = first.get("metric", "top1")
        row["pair_key"] = key
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(f"delta_final_{metric}", ascending=False).reset_index(drop=True)
