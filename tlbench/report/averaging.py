"""The report's "Weight averaging" section: per setting, the weight EMA (`ema.decay`, summary.ema) and the
WiSE-FT curve (`wise_ft`) beside the weights the run trained, over the seeds. The EMA is compared with the
trained weights at each one's val-chosen epoch; WiSE-FT interpolates the final weights, so its val-chosen
mix is compared with the final epoch (alpha 1). Differences are paired by seed, with 95% t intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from tlbench.report.compare import finished, seed_of, setting_columns
from tlbench.report.groups import setting_text, short_name
from tlbench.report.stats import mean_ci, paired_diff_ci
from tlbench.report.tables import interval, pct, points

EMA = "summary.ema.test_acc_at_best_val"
WISE = "wise_ft.curve"
HEAD_INIT = "config.model.head_init"
FITTED = "probe"  # the one head_init that starts from a fitted classifier (LP-FT's probe)


def fitted_start(run) -> bool:
    """Whether a run's WiSE-FT curve starts from a fitted head (model.head_init=probe). WiSE-FT interpolates
    toward the starting model, whose zero (or random) head classifies at chance: from such a start the curve only
    blends an untrained classifier into the fine-tuned one, not the robust starting model the method assumes
    (zero-shot or a fitted linear probe)."""
    return run.get(HEAD_INIT) == FITTED


def _wise_at(curve_text, alpha, key: str = "test_acc") -> float:
    """`key` (test_acc, or shift_mean_acc: under the corruptions) of a run's WiSE-FT curve at `alpha` (NaN
    without one)."""
    if not isinstance(curve_text, str) or alpha is None or (isinstance(alpha, float) and math.isnan(alpha)):
        return math.nan
    return next((p.get(key, math.nan) for p in json.loads(curve_text) if p["alpha"] == alpha), math.nan)


def _paired(group: pd.DataFrame, a: pd.Series, b: pd.Series):
    seeds = seed_of(group)
    return paired_diff_ci(dict(zip(seeds, a)), dict(zip(seeds, b)))


def averaging_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting (seeds pooled) that ran a weight EMA or a WiSE-FT curve."""
    ok = finished(runs)
    if ok.empty or not ({EMA, WISE} & set(ok.columns)):
        return pd.DataFrame()
    labels, rows = setting_columns(ok), []
    for _, group in ok.groupby("group_key", sort=False):
        ema = group[EMA] if EMA in group.columns else pd.Series(math.nan, index=group.index)
        curves = list(zip(group.get(WISE, [None] * len(group)), group.get("wise_ft.chosen_alpha", [None] * len(group))))
        wise = pd.Series([_wise_at(c, a) for c, a in curves], index=group.index)
        wise_shifted = pd.Series([_wise_at(c, a, "shift_mean_acc") for c, a in curves], index=group.index)
        if ema.isna().all() and wise.isna().all():
            continue
        first = group.iloc[0]
        row = {short_name(c): setting_text(first, c) for c in labels}
        row.update(init=first["init"], n=str(len(group)))
        chosen, final = group["summary.test_acc_at_best_val"], group["summary.final_test_acc"]
        row["trained, val-chosen epoch"] = pct(mean_ci(chosen).mean)
        if ema.notna().any():
            diff = _paired(group, ema, chosen)
            row["EMA, its val-chosen epoch"] = pct(mean_ci(ema).mean)
            row["EMA − trained (points, 95% CI)"] = f"{points(diff.mean)} ({interval(diff.ci_low, diff.ci_high, diff.n)})"
        if ema.notna().any() and "test_shift.ema.mean_acc" in group.columns and group["test_shift.ema.mean_acc"].notna().any():
            diff = _paired(group, group["test_shift.ema.mean_acc"], group["test_shift.mean_acc"])
            row["under corruptions: EMA − final (points, 95% CI)"] = \
                f"{points(diff.mean)} ({interval(diff.ci_low, diff.ci_high, diff.n)})"
        if wise.notna().any():
            diff = _paired(group, wise, final)
            row["WiSE-FT start's head"] = f"{first.get(HEAD_INIT, '?')}" + ("" if fitted_start(first) else " (not fitted)")
            alphas = sorted({float(a) for a in group["wise_ft.chosen_alpha"].dropna()})
            row["trained, final epoch"] = pct(mean_ci(final).mean)
            row["WiSE-FT, val-chosen α"] = pct(mean_ci(wise).mean)
            row["α chosen"] = ", ".join(f"{a:g}" for a in alphas)
            row["WiSE-FT − final (points, 95% CI)"] = f"{points(diff.mean)} ({interval(diff.ci_low, diff.ci_high, diff.n)})"
        if wise_shifted.notna().any() and "test_shift.mean_acc" in group.columns:
            diff = _paired(group, wise_shifted, group["test_shift.mean_acc"])
            row["under corruptions: WiSE-FT − final (points, 95% CI)"] = \
                f"{points(diff.mean)} ({interval(diff.ci_low, diff.ci_high, diff.n)})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def wise_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table of every WiSE-FT curve that starts from a fitted head (fitted_start): setting label, seed,
    alpha, split, accuracy."""
    ok = finished(runs)
    if ok.empty or WISE not in ok.columns:
        return pd.DataFrame()
    labels, rows = setting_columns(ok), []
    for (_, run), seed in zip(ok.iterrows(), seed_of(ok)):
        if not isinstance(run[WISE], str) or not fitted_start(run):
            continue
        setting = ", ".join(f"{short_name(c)}={setting_text(run, c)}" for c in labels)
        for point in json.loads(run[WISE]):
            for split in ("val", "test"):
                rows.append({"setting": f"{setting} ({run['init']})", "seed": seed, "alpha": point["alpha"],
                             "split": split, "accuracy": 100 * point[f"{split}_acc"]})
    return pd.DataFrame(rows)


def draw_wise(curves: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy against the mixing coefficient, val and test, one line per setting (mean over seeds)."""
    if curves.empty:
        return None
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    for ax, split in zip(axes, ("val", "test")):
        sns.lineplot(data=curves[curves.split == split], x="alpha", y="accuracy", hue="setting", marker="o",
                     errorbar=None, ax=ax, legend=split == "test")
        ax.set(title=f"{split}", xlabel="α (0: start, 1: fine-tuned)", ylabel="accuracy (%)")
    if axes[1].get_legend() is not None:
        axes[1].legend(fontsize=7, loc="lower center")
    figure.suptitle("WiSE-FT: starting and fine-tuned weights interpolated (mean over seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def unfitted_curves(runs: pd.DataFrame) -> int:
    """How many finished runs drew a WiSE-FT curve from a head that was not fitted (left out of the chart)."""
    ok = finished(runs)
    if ok.empty or WISE not in ok.columns:
        return 0
    return sum(isinstance(run[WISE], str) and not fitted_start(run) for _, run in ok.iterrows())
