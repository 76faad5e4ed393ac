"""Data efficiency: accuracy against the number of labelled training images, pretrained and
random init as two curves per setting, and the data multiplier: how many times more labelled
images random init needs to match pretrained at a given size.

A curve is the runs that share everything but seed, `pretrained` and the size of the training
subset (`dataset.train_per_class`, `dataset.train_fraction`); its x axis is the number of images
each run trained on (`data_info.train_size`). The multiplier reads the random-init curve on a
log axis: the size at which its mean first reaches the pretrained mean is interpolated linearly
in log(size) between the two sizes around the crossing. It is censored, not extrapolated, when
random init never gets there ("more than x N") or is already there at its smallest size ("at
most x N"). Its interval resamples the seeds of every point (bootstrap, percentile).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from tlbench.report.compare import finished
from tlbench.report.groups import group_columns, group_label, is_pretrained_column, key_of, label_columns
from tlbench.report.load import follows_dataset_metric
from tlbench.report.stats import mean_ci
from tlbench.report.tables import METRIC_NAMES

SIZE_KEYS = ("identity.dataset.train_per_class", "identity.dataset.train_fraction")
SIZE_COLUMN = "data_info.train_size"
BOOTSTRAP_DRAWS = 2000
CONFIDENCE = 0.95


def curve_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in group_columns(runs) if not is_pretrained_column(c) and c not in SIZE_KEYS]


def efficiency_points(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per curve, init and training-set size: mean and 95% t CI of `column` over seeds
    (`metric`: the data set's, when `column` is read in it). Empty unless some curve has at least
    two sizes."""
    ok = finished(runs)
    if ok.empty or SIZE_COLUMN not in ok.columns or column not in ok.columns:
        return pd.DataFrame()
    ok = ok[ok[SIZE_COLUMN].notna()]
    keys = curve_columns(ok)
    labels = [c for c in label_columns(ok) if c in keys and not is_pretrained_column(c)]
    ok = ok.assign(curve_key=[key_of(row, keys) for _, row in ok.iterrows()])
    rows = []
    for (curve, init, size), cell in ok.groupby(["curve_key", "init", SIZE_COLUMN], sort=False):
        estimate = mean_ci(cell[column])
        first = cell.iloc[0]
        rows.append({"setting": group_label(first, labels), "init": init, "train_size": int(size),
                     "metric": first.get("metric") if follows_dataset_metric(column) else None,
                     "n": estimate.n, "mean": estimate.mean, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high, "values": json.dumps(cell[column].tolist()),
                     "curve_key": curve})
    points = pd.DataFrame(rows)
    sizes = points.groupby("curve_key")["train_size"].nunique()
    points = points[points["curve_key"].isin(sizes[sizes >= 2].index)]
    return points.sort_values(["setting", "init", "train_size"]).reset_index(drop=True)


def size_needed(sizes, means, target: float) -> tuple[float, str]:
    """(size, how) at which the curve (sizes ascending) first reaches `target`: interpolated in
    log(size) ("interpolated"), or the curve's end when it is censored ("below" its smallest
    size, "above" its largest)."""
    if means[0] >= target:
        return float(sizes[0]), "below"
    for i in range(1, len(sizes)):
        if means[i] >= target:
            share = (target - means[i - 1]) / (means[i] - means[i - 1])
            log_size = math.log(sizes[i - 1]) + share * (math.log(sizes[i]) - math.log(sizes[i - 1]))
            return math.exp(log_size), "interpolated"
    return float(sizes[-1]), "above"


def _log_multiplier(size, random_sizes, random_means, target) -> float:
    needed, how = size_needed(random_sizes, random_means, target)
    return {"below": -math.inf, "above": math.inf}.get(how, math.log(needed / size))


def _bootstrap(size, pretrained_values, random_cells, rng) -> tuple[float, float]:
    """Percentile interval of log(multiplier), resampling each point's seeds; +-inf where censored."""
    draws = []
    sizes = [s for s, _ in random_cells]
    for _ in range(BOOTSTRAP_DRAWS):
        target = rng.choice(pretrained_values, len(pretrained_values)).mean()
        means = [rng.choice(values, len(values)).mean() for _, values in random_cells]
        draws.append(_log_multiplier(size, sizes, means, target))
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(np.array(draws), [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)


def data_multiplier(points: pd.DataFrame) -> pd.DataFrame:
    """Per curve and pretrained size: the random-init size that matches the pretrained mean,
    the multiplier (that size / this size) and its bootstrap 95% interval. Needs a random-init
    curve with at least two sizes."""
    rows, rng = [], np.random.default_rng(0)
    for curve, frame in points.groupby("curve_key", sort=False) if len(points) else []:
        random = frame[frame["init"] == "random"].sort_values("train_size")
        if len(random) < 2:
            continue
        random_sizes, random_means = random["train_size"].tolist(), random["mean"].tolist()
        cells = [(s, np.array(json.loads(v))) for s, v in zip(random["train_size"], random["values"])]
        for _, point in frame[frame["init"] == "pretrained"].sort_values("train_size").iterrows():
            needed, how = size_needed(random_sizes, random_means, point["mean"])
            pretrained_values = np.array(json.loads(point["values"]))
            low, high = (_bootstrap(point["train_size"], pretrained_values, cells, rng)
                         if len(pretrained_values) > 1 and all(len(v) > 1 for _, v in cells) else (math.nan, math.nan))
            rows.append({"setting": point["setting"], "train_size": point["train_size"],
                         "pretrained_mean": point["mean"], "random_size_needed": needed, "censored": how,
                         "multiplier": needed / point["train_size"], "log_multiplier_ci_low": low,
                         "log_multiplier_ci_high": high, "largest_random_size": random_sizes[-1],
                         "curve_key": curve})
    return pd.DataFrame(rows)


def multiplier_text(row) -> str:
    if row["censored"] == "above":
        return f"more than x{row['multiplier']:.3g} (random init never gets there by {row['largest_random_size']:,} images)"
    if row["censored"] == "below":
        return f"at most x{row['multiplier']:.3g} (random init is there at its smallest size)"
    return f"x{row['multiplier']:.3g}"


def interval_text(low: float, high: float) -> str:
    """The multiplier's interval from log bounds, where +-inf means outside the sizes tried."""
    if math.isnan(low):
        return "n = 1, no interval"
    if math.isinf(low) and math.isinf(high) and (low > 0) == (high > 0):
        return "outside the sizes tried"
    if math.isinf(high):
        return f"x{math.exp(low):.3g} or more" if not math.isinf(low) else "any"
    if math.isinf(low):
        return f"up to x{math.exp(high):.3g}"
    return f"x{math.exp(low):.3g} to x{math.exp(high):.3g}"


def multiplier_table(multipliers: pd.DataFrame) -> pd.DataFrame:
    """For people: setting, size, pretrained accuracy, random-init size needed, multiplier, 95% interval."""
    return pd.DataFrame({
        "setting": multipliers["setting"],
        "train images": multipliers["train_size"].map("{:,}".format),
        "pretrained accuracy": multipliers["pretrained_mean"].map(lambda v: f"{100 * v:.1f}%"),
        "random init needs (images)": [f"{'>' if c == 'above' else '<=' if c == 'below' else ''}{n:,.0f}"
                                       for n, c in zip(multipliers["random_size_needed"], multipliers["censored"])],
        "data multiplier": [multiplier_text(row) for _, row in multipliers.iterrows()],
        "95% interval": [interval_text(lo, hi) for lo, hi in
                         zip(multipliers["log_multiplier_ci_low"], multipliers["log_multiplier_ci_high"])],
    })


def points_table(points: pd.DataFrame) -> pd.DataFrame:
    interval = [("n = 1, no interval" if n < 2 else f"{100 * lo:.1f} to {100 * hi:.1f}")
                for n, lo, hi in zip(points["n"], points["ci_low"], points["ci_high"])]
    metric = points["metric"] if "metric" in points.columns else pd.Series(None, index=points.index)
    return pd.DataFrame({"setting": points["setting"], "init": points["init"],
                         "train images": points["train_size"].map("{:,}".format), "n": points["n"],
                         "mean": points["mean"].map(lambda v: f"{100 * v:.1f}%"),
                         "metric": metric.map(lambda kind: METRIC_NAMES.get(kind, "–")), "95% CI": interval})
