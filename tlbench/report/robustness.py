"""The report's "Under shift" section, for runs with `test_shift` (result.json): per setting, top-1 accuracy on
the same test images clean and corrupted (the mean over corruptions and severities), the drop, and the
effective robustness of Taori et al. (NeurIPS 2020): how far a run's corrupted accuracy lies above the trend
of corrupted on clean accuracy over every run in the report, the trend a line fitted on logit-scaled
accuracies (as that paper fits its baseline). Intervals: 95% t over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tlbench.report.compare import finished, setting_columns
from tlbench.report.groups import setting_text, short_name
from tlbench.report.stats import mean_ci, paired_diff_ci
from tlbench.report.tables import interval, pct, points

CLEAN, SHIFTED = "test_shift.clean_acc", "test_shift.mean_acc"
TREND_RUNS = 3  # fewer runs (or one clean accuracy) give no trend, and no effective robustness


def _logit(p):
    p = np.clip(np.asarray(p, dtype=float), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def trend(runs: pd.DataFrame) -> tuple[float, float] | None:
    """(slope, intercept) of logit(corrupted) on logit(clean) over the runs, or None when they cannot fix one."""
    if len(runs) < TREND_RUNS or runs[CLEAN].nunique() < 2:
        return None
    slope, intercept = np.polyfit(_logit(runs[CLEAN]), _logit(runs[SHIFTED]), 1)
    return float(slope), float(intercept)


def expected(line: tuple[float, float], clean) -> np.ndarray:
    """The trend's corrupted accuracy at a clean accuracy."""
    return 1 / (1 + np.exp(-(line[0] * _logit(clean) + line[1])))


def shifted_runs(runs: pd.DataFrame) -> pd.DataFrame:
    ok = finished(runs)
    if ok.empty or SHIFTED not in ok.columns:
        return pd.DataFrame()
    return ok[ok[SHIFTED].notna()]


def shift_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, tuple[float, float] | None]:
    """One row per setting (seeds pooled) with corrupted test scores; and the trend used."""
    shifted = shifted_runs(runs)
    if shifted.empty:
        return pd.DataFrame(), None
    line = trend(shifted)
    labels, rows = setting_columns(shifted), []
    for _, group in shifted.groupby("group_key", sort=False):
        first = group.iloc[0]
        row = {short_name(c): setting_text(first, c) for c in labels}
        row.update(init=first["init"], n=str(len(group)), images=str(int(first["test_shift.images"])))
        clean, corrupted = mean_ci(group[CLEAN]), mean_ci(group[SHIFTED])
        drop = paired_diff_ci(dict(enumerate(group[CLEAN])), dict(enumerate(group[SHIFTED])))
        row["clean"] = pct(clean.mean)
        row["corrupted (mean)"] = pct(corrupted.mean)
        row["corrupted 95% CI (%)"] = interval(corrupted.ci_low, corrupted.ci_high, corrupted.n)
        row["drop (points, 95% CI)"] = f"{points(drop.mean)} ({interval(drop.ci_low, drop.ci_high, drop.n)})"
        if line is not None:
            gain = mean_ci(group[SHIFTED] - expected(line, group[CLEAN]))
            row["effective robustness (points, 95% CI)"] = \
                f"{points(gain.mean)} ({interval(gain.ci_low, gain.ci_high, gain.n)})"
        rows.append(row)
    return pd.DataFrame(rows), line


def trend_text(line: tuple[float, float] | None, count: int) -> str:
    if line is None:
        return (f"Effective robustness needs a trend of corrupted on clean accuracy: at least {TREND_RUNS} runs with "
                f"different clean accuracies ({count} here).")
    return (f"Trend over the {count} runs: logit(corrupted) = {line[0]:.3f} x logit(clean) {line[1]:+.3f}; effective "
            "robustness is a run's corrupted accuracy minus the trend's at its clean accuracy.")


def draw_shift(runs: pd.DataFrame, line, path: Path) -> Path | None:
    """Corrupted against clean accuracy, one point per run (coloured by setting), the trend drawn."""
    shifted = shifted_runs(runs)
    if shifted.empty:
        return None
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = setting_columns(shifted)
    frame = pd.DataFrame({"clean (%)": 100 * shifted[CLEAN], "corrupted, mean (%)": 100 * shifted[SHIFTED],
                          "setting": [", ".join(f"{short_name(c)}={setting_text(r, c)}" for c in labels) + f" ({r['init']})"
                                      for _, r in shifted.iterrows()]})
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    sns.scatterplot(data=frame, x="clean (%)", y="corrupted, mean (%)", hue="setting", ax=ax, s=50)
    if line is not None:
        xs = np.linspace(shifted[CLEAN].min(), shifted[CLEAN].max(), 50)
        ax.plot(100 * xs, 100 * expected(line, xs), color="gray", linestyle="--", label="trend (logit fit)")
    ax.legend(fontsize=7)
    ax.set_title("Corrupted against clean test accuracy (one point per run)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
