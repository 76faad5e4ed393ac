"""Tables formatted for people: percents, "never", and honest intervals.

Each function takes the numeric tables from compare.py and returns a DataFrame of
strings in display order; the CSV files keep the raw numbers.
"""

from __future__ import annotations

import pandas as pd

from tlbench.report import selection
from tlbench.report.compare import finished, seed_of
from tlbench.report.groups import missing
from tlbench.report.load import DATASET_METRIC_FIELDS
from tlbench.report.metrics import headline_columns

NO_INTERVAL = "n = 1, no interval"
# Each data set's metric (result.json `metric`), as the report names it.
METRIC_NAMES = {"top1": "top-1", "mean_per_class": "mean per-class"}


def metric_kinds(frame: pd.DataFrame) -> list[str]:
    """The data sets' metrics among these rows (their `metric` column), in METRIC_NAMES order."""
    present = set(frame["metric"].dropna()) if "metric" in frame.columns else set()
    return [kind for kind in METRIC_NAMES if kind in present]


def metric_name(metric: str, kinds=()) -> str:
    """test_acc -> "test accuracy" for sentences, titles and axis labels. val_acc and test_acc are
    read in each data set's metric (load.py), so rows whose data sets report mean per-class
    accuracy (`kinds`: metric_kinds) say so: "test mean per-class accuracy", or with top-1 data
    sets among them "test accuracy (each data set's metric: top-1 or mean per-class)"."""
    name = metric.replace("_acc", " accuracy").replace("_", " ")
    if metric not in DATASET_METRIC_FIELDS or "mean_per_class" not in kinds:
        return name
    if len(kinds) == 1:
        return name.replace(" accuracy", " mean per-class accuracy")
    return f"{name} (each data set's metric: {' or '.join(METRIC_NAMES[k] for k in kinds)})"


def headline_kind(column: str) -> str:
    """final_test_acc -> "final"; test_acc_at_best_val -> "val-best epoch" (short table labels)."""
    return "val-best epoch" if column.endswith("_at_best_val") else "final"


def headline_name(column: str, kinds=()) -> str:
    """final_test_acc -> "final test accuracy";
    test_acc_at_best_val -> "test accuracy at the val-best epoch" (`kinds`: as metric_name)."""
    if column.endswith("_at_best_val"):
        return f"{metric_name(column.removesuffix('_at_best_val'), kinds)} at the val-best epoch"
    return f"final {metric_name(column.removeprefix('final_'), kinds)}"


def dataset_metric_text(metric: str, kinds) -> list[str]:
    """Per row, which accuracy its headline numbers are (the data set's metric), when `metric`
    follows the data set's metric; "top-1" for rows without one."""
    follows = metric in DATASET_METRIC_FIELDS
    return [METRIC_NAMES.get(kind, "top-1") if follows else metric_name(metric) for kind in kinds]


def chosen_on(val_is_test) -> str:
    """Which split picked the val-best epoch; the test split makes that number optimistic."""
    optimistic = val_is_test == True  # noqa: E712 - numpy bools too; None or NaN read as no
    return "test split (optimistic)" if optimistic else "val split"


def pct(value, decimals: int = 1) -> str:
    """0.8534 -> "85.3%"."""
    return "–" if missing(value) else f"{100 * value:.{decimals}f}%"


def points(value, decimals: int = 1) -> str:
    """A difference of fractions in percentage points with its sign: 0.062 -> "+6.2"."""
    return "–" if missing(value) else f"{100 * value:+.{decimals}f}"


def interval(low, high, n, scale: float = 100.0, decimals: int = 1) -> str:
    """"84.1 to 86.5" (scaled), or why there is none."""
    if n is not None and not missing(n) and n < 2:
        return NO_INTERVAL if n == 1 else "no runs"
    if missing(low) or missing(high):
        return "no interval"
    return f"{scale * low:.{decimals}f} to {scale * high:.{decimals}f}"


def epochs_or_never(value, decimals: int = 1) -> str:
    return "never" if missing(value) else f"{value:.{decimals}f}".removesuffix(".0")


def reached(mean, n_reached: int, n_runs: int, decimals: int = 1) -> str:
    """Mean over the runs that got there, with how many did when not all."""
    if n_reached == 0:
        return "never"
    text = epochs_or_never(mean, decimals)
    return text if n_reached == n_runs else f"{text} ({n_reached}/{n_runs} reached)"


def integer(value) -> str:
    return "–" if missing(value) else f"{value:,.0f}"


def _settings(table: pd.DataFrame, first_stat: str = "init") -> pd.DataFrame:
    """The setting columns, which compare.py puts before the first statistic column; a setting a row's options
    do not have reads "–"."""
    return table.iloc[:, : table.columns.get_loc(first_stat)].apply(
        lambda column: column.map(lambda v: "–" if missing(v) else str(v)))


def accuracy_table(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Final and val-selected accuracy with CIs; never the maximum over epochs, which for the
    test split would be picked by looking at the numbers it reports."""
    table = _settings(summary)
    table["init"], table["n"] = summary["init"], summary["n"].astype(str)
    kinds = metric_kinds(summary)
    if kinds:
        table["metric"] = dataset_metric_text(metric, summary["metric"])
    small = summary["small_val"] if "small_val" in summary.columns else pd.Series(False, index=summary.index)
    for col in headline_columns(metric):
        shown = summary[f"{col}_mean"].map(pct)
        table[headline_name(col, kinds)] = [selection.marked(text, s) for text, s in zip(shown, small)] \
            if col.endswith("_at_best_val") else shown
        table[f"{headline_kind(col)} 95% CI (%)"] = [interval(lo, hi, n) for lo, hi, n in zip(
            summary[f"{col}_ci_low"], summary[f"{col}_ci_high"], summary[f"{col}_n"])]
    table["val-best epoch chosen on"] = summary["val_is_test"].map(chosen_on)
    if "val_size" in summary.columns:
        table["val images (SE of val acc, points)"] = [selection.chosen_by(n, se, s) for n, se, s in zip(
            summary["val_size"], summary["val_acc_se"], small)]
    table[f"AUC {metric_name(metric, kinds)}"] = summary[f"auc_{metric}_mean"].map(lambda v: pct(v, 2))
    return table


def pretrained_table(deltas: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Headline: pretrained minus random, in percentage points, at the final and the
    val-best epoch."""
    table = _settings(deltas, first_stat="n_pretrained")
    kinds = metric_kinds(deltas)
    for col in headline_columns(metric):
        delta = f"delta_{col}"
        table[f"Δ {headline_name(col, kinds)} (points)"] = deltas[delta].map(points)
        table[f"{headline_kind(col)} 95% CI (points)"] = [interval(lo, hi, n) for lo, hi, n in zip(
            deltas[f"{delta}_ci_low"], deltas[f"{delta}_ci_high"], deltas[f"{delta}_n"])]
    table["seeds (pretrained / random)"] = [
        f"{p} / {r}" for p, r in zip(deltas["n_pretrained"], deltas["n_random"])]
    table["interval"] = deltas["method"].map({"paired": "paired t", "welch": "Welch t"})
    table["val-best epoch chosen on"] = deltas["val_is_test"].map(chosen_on)
    return table


def _per_run_text(runs: pd.DataFrame, summary: pd.DataFrame, column: str) -> list[str]:
    """Per-seed values of one run column for each summary group, in seed order."""
    ok = finished(runs)
    texts = []
    for key in summary["group_key"]:
        group = ok[ok["group_key"] == key]
        ordered = group.assign(_seed=seed_of(group).astype(str)).sort_values("_seed")
        texts.append(", ".join(epochs_or_never(v) for v in ordered[column]))
    return texts


def convergence_table(summary: pd.DataFrame, fraction: float, threshold: float) -> pd.DataFrame:
    table = _settings(summary)
    table["init"], table["n"] = summary["init"], summary["n"].astype(str)
    own = f"{100 * fraction:g}% of own best"
    table[f"epochs to {own}"] = summary["epochs_to_fraction_mean"].map(epochs_or_never)
    table[f"seconds to {own}"] = summary["seconds_to_fraction_mean"].map(epochs_or_never)
    for unit in ("epochs", "seconds"):
        col = f"{unit}_to_threshold"
        table[f"{unit} to {100 * threshold:g}%"] = [
            reached(m, k, n) for m, k, n in zip(summary[f"{col}_mean"], summary[f"{col}_n"],
                                                summary["n"])]
    return table


def overfitting_table(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    table = _settings(summary)
    table["init"], table["n"] = summary["init"], summary["n"].astype(str)
    table["final train − test gap (points)"] = summary["overfit_gap_mean"].map(points)
    table["max train − test gap (points)"] = summary["max_overfit_gap_mean"].map(points)
    table["first val-loss divergence epoch (per seed)"] = _per_run_text(
        runs, summary, "first_divergence_epoch")
    return table


def _params_text(row: pd.Series, phases: list[str]) -> str:
    parts = [f"{p.removeprefix('trainable_params.')}: {integer(row[p])}"
             for p in phases if not missing(row[p])]
    return " → ".join(parts) or "–"


def cost_table(summary: pd.DataFrame) -> pd.DataFrame:
    table = _settings(summary)
    table["init"], table["n"] = summary["init"], summary["n"].astype(str)
    table["total time (s)"] = summary["total_time_s_mean"].map(lambda v: epochs_or_never(v))
    table["images/s"] = summary["mean_images_per_s_mean"].map(integer)
    phases = [c for c in summary.columns if c.startswith("trainable_params.")]
    table["trainable params by freeze phase"] = [
        _params_text(row, phases) for _, row in summary.iterrows()]
    return table.replace({"never": "–"})


def failed_table(runs: pd.DataFrame) -> pd.DataFrame:
    failed = runs[runs["status"] != "ok"]
    columns = {"run_id": "run", "status": "status", "path": "file", "n_epochs": "epochs done",
               "error.type": "error", "error.message": "message"}
    present = [c for c in columns if c in failed.columns]
    return failed[present].rename(columns=columns).astype(str)


def _percent_interval(low, high, n) -> str:
    """An interval already in percent or points, 2 decimals (published numbers carry 2)."""
    return interval(low, high, n, scale=1.0, decimals=2)


def published_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Published vs measured, one row per number and group; a run that never reached the
    number's epoch says so where the measured mean would be."""
    measured = comparison["note"].isna()
    comparison = comparison.astype(object)  # text cells fill in where numbers are missing
    table = pd.DataFrame({
        "write-up": comparison["writeup"],
        "variant": comparison["variant"].str.replace("_", " "),
        "setting": comparison["setting"].fillna("–"), "init": comparison["init"].fillna("–"),
        "published number": [f"{what} [{metric}, epoch {epoch}]" for what, metric, epoch in zip(
            comparison["what"], comparison["metric"], comparison["epoch"])],
        "published": (comparison["published_pct"] / 100).map(lambda v: pct(v, 2)),
        "measured mean": [pct(v / 100, 2) if ok else note for v, ok, note in zip(
            comparison["measured_mean_pct"], measured, comparison["note"])],
        "95% CI (%)": [_percent_interval(lo, hi, n) if ok else "–" for lo, hi, n, ok in zip(
            comparison["ci_low_pct"], comparison["ci_high_pct"], comparison["n_seeds"], measured)],
        "n seeds": comparison["n_seeds"].astype(int).astype(str),
        "measured − published (points)": (comparison["difference_points"] / 100).map(
            lambda v: points(v, 2)),
        "published inside CI?": comparison["published_inside_ci"].fillna("n/a"),
        "differs from the write-up": comparison["differs_from_writeup"].fillna("").replace(
            "", "nothing"),
    })
    return table.reset_index(drop=True)


def _phase_params(phase, count) -> str:
    return "–" if missing(count) else f"{integer(count)} ({phase})"


def _estimate_text(costs: pd.DataFrame, prefix: str, unit: str) -> list[str]:
    """"79.00% (77.73 to 80.27)" from <prefix>_mean_pct, _ci_low_pct, _ci_high_pct, _n;
    a signed "+1.20 (...)" for points."""
    form = "{:+.2f}" if unit == "points" else "{:.2f}%"
    columns = [f"{prefix}_{part}_{unit}" for part in ("mean", "ci_low", "ci_high")]
    return [f"{form.format(mean)} ({_percent_interval(low, high, n)})" for mean, low, high, n
            in zip(*(costs[c] for c in columns), costs[f"{prefix}_n"])]


def defect_cost_table(costs: pd.DataFrame) -> pd.DataFrame:
    """What fixing a write-up's defects changed, in points of the final accuracy."""
    first_phase = {name: [_phase_params(p, c) for p, c in zip(
        costs[f"{name}_first_phase"], costs[f"{name}_first_phase_trainable_params"])]
        for name in ("as_published", "fixed")}
    return pd.DataFrame({
        "write-up": costs["writeup"], "setting": costs["setting"], "init": costs["init"],
        "defects in the as-published runs": costs["defects"],
        f"{headline_name(costs['metric'].iloc[0])}: as published (95% CI)":
            _estimate_text(costs, "as_published", "pct"),
        "fixed (95% CI)": _estimate_text(costs, "fixed", "pct"),
        "fixed − as published, points (95% CI)": _estimate_text(costs, "difference", "points"),
        "interval": costs["method"].map({"paired": "paired t", "welch": "Welch t"}),
        "trainable params in the first phase: as published": first_phase["as_published"],
        "trainable params in the first phase: fixed": first_phase["fixed"],
    })
