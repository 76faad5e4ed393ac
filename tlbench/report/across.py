"""Comparisons across data sets: which setting (model, strategy, init, ...) ranks best over
several data sets, and whether the differences hold up (Demšar 2006: Friedman test over the
ranks, pairwise Wilcoxon signed-rank tests over the data sets, p-values adjusted for the number of
pairs with scipy's Benjamini-Hochberg procedure).

A data set is a run's `identity.dataset.*` (its name, root or lists by content, image size and
splits) less the training-subset size; a setting is everything else but the seed. Only settings
measured on every data set enter the ranking (the tests need complete blocks). Each cell is the
mean over seeds of the test accuracy at the val-best epoch, in the data set's own metric (top-1,
or mean per-class accuracy where that is what is reported; load.py), so each data set ranks on its
own. The aggregate mean's interval resamples the seeds of every cell (bootstrap, percentile): it
says how sure the average over these data sets is, not how it would generalise to other data sets."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
from scipy import stats

from tlbench.report.compare import finished
from tlbench.report.efficiency import SIZE_KEYS
from tlbench.report.groups import group_columns, group_label, is_pretrained_column, key_of, label_columns
from tlbench.report.load import follows_dataset_metric
from tlbench.report.tables import METRIC_NAMES

BOOTSTRAP_DRAWS = 2000
# VTAB-1k's 19 tasks in its three groups (Zhai et al. 2019), under tlbench's data set names (caltech101 with its
# background class, VTAB's 102; dmlab and diabetic_retinopathy have no loader yet: the names they will get). VTAB reports top-1 on every task, each group's mean, and the mean
# over the 19 tasks.
VTAB_GROUPS = {
    "natural": ("caltech101_background", "cifar100", "dtd", "flowers102", "oxford_pets", "svhn", "sun397"),
    "specialized": ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"),
    "structured": ("clevr", "clevr_distance", "dmlab", "kitti_distance", "dsprites_location", "dsprites_orientation",
                   "smallnorb_azimuth", "smallnorb_elevation"),
}
VTAB_TASKS = sum(len(tasks) for tasks in VTAB_GROUPS.values())
# Kornblith, Shlens & Le 2019's 12 transfer sets (caltech101 with its background class, as they count it);
# birdsnap and voc2007 have no loader: a mean over the others is never the paper's 12-set mean.
KORNBLITH_SETS = ("food101", "cifar10", "cifar100", "birdsnap", "sun397", "stanford_cars", "fgvc_aircraft", "voc2007",
                  "dtd", "oxford_pets", "caltech101_background", "flowers102")
KORNBLITH_ABSENT = ("birdsnap", "voc2007")


def kornblith_coverage(found: pd.DataFrame) -> str | None:
    """A sentence on how much of Kornblith et al.'s suite the runs cover, when two or more of its sets ran."""
    ran = [name for name in KORNBLITH_SETS if name in set(found["dataset"])] if not found.empty else []
    if len(ran) < 2:
        return None
    return (f"Kornblith et al. 2019's suite: {len(ran)} of its {len(KORNBLITH_SETS)} data sets ran here; "
            f"{' and '.join(KORNBLITH_ABSENT)} have no loader in tlbench, so a mean over these data sets is not the "
            "paper's 12-set mean.")


def _dataset_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in group_columns(runs) if (c == "dataset" or c.startswith("identity.dataset.")) and c not in SIZE_KEYS]


def cells(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per setting and data set: the seeds' values of `column` and their mean; when `column`
    is read in each data set's metric, the cell's `metric` and a data set name that says which when
    it is not top-1 ("pets (mean per-class)")."""
    ok = finished(runs)
    if ok.empty or column not in ok.columns:
        return pd.DataFrame()
    ok = ok.assign(metric=ok["metric"] if follows_dataset_metric(column) and "metric" in ok.columns else None)
    data_columns = _dataset_columns(ok)
    setting_columns = [c for c in group_columns(ok) if c not in data_columns and c != "identity.pretrained"]
    ok = ok.assign(data_key=[key_of(r, data_columns) for _, r in ok.iterrows()],
                   method_key=[key_of(r, setting_columns) + r["init"] for _, r in ok.iterrows()])
    labels = [c for c in label_columns(ok) if c in setting_columns and not is_pretrained_column(c)]
    names = {}
    for key, name, kind in ok.drop_duplicates("data_key")[["data_key", "dataset", "metric"]].itertuples(index=False):
        name = f"{name} ({METRIC_NAMES[kind]})" if kind in METRIC_NAMES and kind != "top1" else name
        taken = sum(1 for n in names.values() if n.split(" #")[0] == name)
        names[key] = name if not taken else f"{name} #{taken + 1}"
    rows = []
    for (method, data_key), cell in ok.groupby(["method_key", "data_key"], sort=False):
        first = cell.iloc[0]
        rows.append({"method": f"{group_label(first, labels)}, {first['init']}", "dataset": names[data_key],
                     "metric": first["metric"], "mean": cell[column].mean(),
                     "values": json.dumps(cell[column].tolist())})
    return pd.DataFrame(rows)


def complete_table(found: pd.DataFrame) -> pd.DataFrame:
    """Methods x data sets of mean accuracy, only methods measured on every data set."""
    if found.empty or found["dataset"].nunique() < 2:
        return pd.DataFrame()
    table = found.pivot_table(index="method", columns="dataset", values="mean", aggfunc="first")
    return table.dropna()


def ranking(found: pd.DataFrame) -> pd.DataFrame:
    """Per method: accuracy and rank on each data set (1 = best, ties share the mean rank), the
    mean rank, and the aggregate mean accuracy with its bootstrap 95% interval; best mean rank first."""
    table = complete_table(found)
    if len(table) < 2:
        return pd.DataFrame()
    ranks = table.rank(axis=0, ascending=False, method="average")
    out = pd.DataFrame(index=table.index)
    for dataset in table.columns:
        out[f"{dataset} accuracy"] = table[dataset]
        out[f"{dataset} rank"] = ranks[dataset]
    out["mean rank"] = ranks.mean(axis=1)
    out["mean accuracy"] = table.mean(axis=1)
    low, high = _bootstrap_means(found, table)
    out["mean accuracy ci_low"], out["mean accuracy ci_high"] = low, high
    return out.sort_values(["mean rank", "mean accuracy"], ascending=[True, False]).reset_index()


def vtab_groups(found: pd.DataFrame) -> pd.DataFrame:
    """Per setting: the mean top-1 over the VTAB tasks of each group it was measured on, with how many of the
    group's tasks that is, and the mean over all 19 tasks only when every one is there (a partial suite is
    never a VTAB score). Cells in another metric than top-1 (a data set's own mean per-class accuracy) and
    data sets named twice (other roots) are left out. Empty when fewer than two VTAB tasks were run."""
    if found.empty:
        return pd.DataFrame()
    group_of = {task: group for group, tasks in VTAB_GROUPS.items() for task in tasks}
    kept = found[found["dataset"].isin(group_of) & found["metric"].isin(["top1", None])]
    if kept["dataset"].nunique() < 2:
        return pd.DataFrame()
    rows = []
    for method, cells_of in kept.groupby("method", sort=False):
        row = {"method": method}
        for group, tasks in VTAB_GROUPS.items():
            mine = cells_of[cells_of["dataset"].isin(tasks)]
            row[f"{group} mean"] = mine["mean"].mean() if len(mine) else np.nan
            row[f"{group} tasks"] = f"{len(mine)} of {len(tasks)}"
        row["VTAB score (mean of 19)"] = cells_of["mean"].mean() if len(cells_of) == VTAB_TASKS else np.nan
        row["tasks"] = len(cells_of)
        rows.append(row)
    return pd.DataFrame(rows)


def _bootstrap_means(found: pd.DataFrame, table: pd.DataFrame) -> tuple[list, list]:
    rng, lows, highs = np.random.default_rng(0), [], []
    values = {(m, d): np.array(json.loads(v)) for m, d, v in found[["method", "dataset", "values"]].itertuples(index=False)}
    for method in table.index:
        draws = np.zeros(BOOTSTRAP_DRAWS)
        for dataset in table.columns:
            seeds = values[(method, dataset)]
            draws += rng.choice(seeds, (BOOTSTRAP_DRAWS, len(seeds))).mean(axis=1)
        draws /= len(table.columns)
        lows.append(float(np.quantile(draws, 0.025)))
        highs.append(float(np.quantile(draws, 0.975)))
    return lows, highs


def tests(found: pd.DataFrame) -> dict:
    """Friedman over all ranked methods (needs 3 or more methods and 3 or more data sets) and
    pairwise two-sided Wilcoxon signed-rank tests over the data sets, BH-adjusted."""
    table = complete_table(found)
    if len(table) < 2 or table.shape[1] < 3:
        return {}
    friedman = stats.friedmanchisquare(*table.to_numpy()) if len(table) >= 3 else None
    pairs = []
    for a, b in itertools.combinations(table.index, 2):
        difference = table.loc[a] - table.loc[b]
        p = 1.0 if np.allclose(difference, 0) else float(stats.wilcoxon(table.loc[a], table.loc[b]).pvalue)
        pairs.append({"a": a, "b": b, "mean difference": float(difference.mean()),
                      "a better on": int((difference > 0).sum()), "data sets": table.shape[1], "p": p})
    pairs = pd.DataFrame(pairs)
    pairs["p adjusted (BH)"] = stats.false_discovery_control(pairs["p"].to_numpy(), method="bh")
    return {"friedman": None if friedman is None else {"statistic": float(friedman.statistic),
                                                       "p": float(friedman.pvalue),
                                                       "methods": len(table), "data sets": table.shape[1]},
            "pairs": pairs}


def ranking_text(ranked: pd.DataFrame) -> pd.DataFrame:
    """The ranking for people: percents and ranks."""
    shown = pd.DataFrame({"setting": ranked["method"]})
    for column in ranked.columns:
        if column.endswith(" accuracy") and column != "mean accuracy":
            dataset = column.removesuffix(" accuracy")
            shown[dataset] = [f"{100 * a:.1f}% ({r:g})" for a, r in zip(ranked[column], ranked[f"{dataset} rank"])]
    shown["mean rank"] = ranked["mean rank"].map("{:.2f}".format)
    shown["mean accuracy (95% CI)"] = [f"{100 * m:.1f}% ({100 * lo:.1f} to {100 * hi:.1f})" for m, lo, hi in zip(
        ranked["mean accuracy"], ranked["mean accuracy ci_low"], ranked["mean accuracy ci_high"])]
    return shown
