"""A short paragraph stating what the numbers show, and nothing they do not."""

from __future__ import annotations

import math

import pandas as pd

from tlbench.report.groups import missing
from tlbench.report.metrics import headline_columns
from tlbench.report.tables import headline_name, metric_kinds, metric_name, pct


def _subject(row: pd.Series, settings: list[str]) -> str:
    """"resnet18" or "resnet18 (freeze=linear_probe)"."""
    name = str(row.get("model", "this setting"))
    extra = [f"{c}={row[c]}" for c in settings if c != "model" and not missing(row[c])]
    return f"{name} ({', '.join(extra)})" if extra else name


def delta_sentence(row: pd.Series, settings: list[str], column: str) -> str:
    """E.g. "Pretraining raised final test accuracy of resnet18 by 6.2 points (n = 3 seeds,
    95% CI 5.1 to 7.3)." for column final_test_acc; "lowered" for negatives; no interval when
    n = 1; a warning when the val-best epoch was chosen on the test split."""
    col = f"delta_{column}"
    value, low, high, n = row[col], row[f"{col}_ci_low"], row[f"{col}_ci_high"], row[f"{col}_n"]
    what = headline_name(column, _kinds(row))
    verb = "raised" if value > 0 else "lowered" if value < 0 else "did not change"
    size = f" by {abs(100 * value):.1f} points" if value != 0 else ""
    if row["method"] == "paired":
        count = f"n = {n} seed{'s' if n != 1 else ''}"
    else:
        count = f"n = {row['n_pretrained']} pretrained and {row['n_random']} random seeds"
    if math.isnan(low) or math.isnan(high):
        # One seed on a side gives no spread to estimate; say so instead of inventing one.
        subject = _subject(row, settings)
        return (f"Pretraining {verb} {what} of {subject}{size} ({count}, no interval)"
                f"{_test_selection_caveat(row, column)}.")
    label = "Welch 95% CI" if row["method"] == "welch" else "95% CI"
    sentence = (f"Pretraining {verb} {what} of {_subject(row, settings)}{size} "
                f"({count}, {label} {100 * low:.1f} to {100 * high:.1f})")
    if low <= 0 <= high:
        sentence += "; the interval includes zero, so these seeds do not settle the sign"
    return sentence + _test_selection_caveat(row, column) + "."


def _kinds(row: pd.Series) -> list[str]:
    """The row's data-set metric, for headline_name (none in tables without a metric column)."""
    return [row["metric"]] if isinstance(row.get("metric"), str) else []


def _test_selection_caveat(row: pd.Series, column: str) -> str:
    """A val-selected number whose 'val' was the test split was selected on what it reports."""
    if column.endswith("_at_best_val") and row.get("val_is_test") == True:  # noqa: E712
        return "; that epoch was chosen on the test split (val_is_test), so this is optimistic"
    return ""


def findings(runs: pd.DataFrame, summary: pd.DataFrame, deltas: pd.DataFrame,
             metric: str, threshold: float) -> str:
    sentences = []
    n_failed = int((runs["status"] != "ok").sum())
    if n_failed:
        sentences.append(f"{n_failed} of {len(runs)} runs did not finish (failed or still "
                         "running) and are left out of all statistics "
                         "(listed under Unfinished runs).")
    if len(summary):
        top = summary.iloc[0]
        settings = list(summary.columns[: summary.columns.get_loc("init")])
        sentences.append(
            f"The highest mean final {metric_name(metric, _kinds(top))} was "
            f"{pct(top[f'final_{metric}_mean'])}, by {_subject(top, settings)} with "
            f"{top['init']} weights (n = {top['n']}).")
        never = int((summary["epochs_to_threshold_n"] == 0).sum())
        if never:
            sentences.append(f"{never} of {len(summary)} settings never reached "
                             f"{100 * threshold:g}% {metric_name(metric, metric_kinds(summary))} in any seed.")
    if len(deltas):
        settings = list(deltas.columns[: deltas.columns.get_loc("n_pretrained")])
        # The val-selected number first: it is what early stopping on val would report.
        sentences += [delta_sentence(row, settings, column) for _, row in deltas.iterrows()
                      for column in reversed(headline_columns(metric))]
    elif len(summary):
        sentences.append("No two settings differ only in pretrained, so there is no "
                         "pretrained vs random comparison.")
    return " ".join(sentences) or "No finished runs, so there is nothing to compare."
