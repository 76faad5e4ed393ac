"""Hyperparameters chosen on val: `python -m tlbench.report <dirs> --tune optimizer.lr,freeze.lr_ratio`.

A sweep that tries several values of a setting (a learning rate, BitFit's and LoRA's `lr_ratio`,
a weight decay) answers "which strategy wins" only once each strategy gets its best value, and a
value picked by its test accuracy flatters the setting that had more values to pick from. So, as
Kornblith et al. 2019 tune theirs: within each cell (the runs that share every identity setting
but the seed and the tuned ones: model, data set, size, init, freeze strategy, ...) the values of
the tuned settings whose mean val accuracy at the val-best epoch (`best_val_acc`, in the data
set's metric) over the finished seeds is highest are kept, and every other run of the cell leaves
the report. Pretrained and random init are separate cells, so each side of a comparison gets its
own best value. Ties go to the value with the lower mean val loss at that epoch, then to the smallest
value. The test split plays no part in the choice.

The tuned settings leave the identity columns (kept as `tuned.<setting>`), so the chosen runs of
both inits pair up, curves join sizes that chose different values, and every table and chart reads
one row per cell. `choices` lists what was tried and chosen, for the report's "Tuned on val".
"""

from __future__ import annotations

import json

import pandas as pd

from tlbench.report import selection
from tlbench.report.compare import any_val_is_test, finished
from tlbench.report.groups import IDENTITY_PREFIX, add_group_keys, group_columns, group_label, is_pretrained_column, \
    key_of, label_columns, short_name
from tlbench.report.tables import chosen_on

VAL_SCORE = "best_val_acc"
VAL_LOSS = "best_val_loss"
TUNED_PREFIX = "tuned."


def parse_keys(text: str | None) -> list[str]:
    """"optimizer.lr, freeze.lr_ratio" -> ["optimizer.lr", "freeze.lr_ratio"] (identity. allowed)."""
    keys = [key.strip().removeprefix(IDENTITY_PREFIX) for key in (text or "").split(",")]
    return [key for key in keys if key]


def tune(runs: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs of the chosen values only, with fresh group keys; one row per cell of choices)."""
    if not keys:
        return runs, pd.DataFrame()
    columns = [IDENTITY_PREFIX + key for key in keys]
    _check_keys(runs, keys, columns)
    cells = [c for c in group_columns(runs) if c not in columns]
    runs = runs.assign(cell_key=[key_of(row, cells) for _, row in runs.iterrows()],
                       tuned_key=[key_of(row, columns) for _, row in runs.iterrows()])
    ok = finished(runs)
    labels = [c for c in label_columns(ok) if c in cells and not is_pretrained_column(c)]  # init has a column
    chosen, rows = {}, []
    for cell_key, cell in ok.groupby("cell_key", sort=False):
        scores = cell.groupby("tuned_key").agg(val=(VAL_SCORE, "mean"), loss=(VAL_LOSS, "mean"), n=(VAL_SCORE, "size"))
        scores = scores.loc[sorted(scores.index, key=_in_value_order)]
        ranked = scores.assign(order=range(len(scores))).sort_values(["val", "loss", "order"],
                                                                     ascending=[False, True, True])
        best = ranked.index[0]
        chosen[cell_key] = best
        if all(value is None for value in json.loads(best)):
            continue  # a strategy without these settings (freeze=none has no lr_ratio): nothing was tuned
        first = cell.iloc[0]
        rows.append({"setting": group_label(first, labels), "init": first.get("init"),
                     **{key: value for key, value in zip(keys, json.loads(best))},
                     "tried": len(scores), "val_acc_chosen": scores.loc[best, "val"], "n": int(scores.loc[best, "n"]),
                     "val_is_test": any_val_is_test(cell),  # then "val" was the test split: the choice saw test
                     **_chosen_on_how_many(cell[cell["tuned_key"] == best], scores.loc[best, "val"]),
                     "val_acc_by_value": "; ".join(f"{_value_text(k)}: {100 * v:.1f}" for k, v in
                                                   scores["val"].items())})
    chosen_value = runs["cell_key"].map(chosen)
    kept = runs[(runs["tuned_key"] == chosen_value)
                | chosen_value.isna()]  # a cell with no finished run keeps its runs (listed as unfinished)
    kept = kept.rename(columns={c: TUNED_PREFIX + k for c, k in zip(columns, keys)})
    kept = add_group_keys(kept.drop(columns=["cell_key", "tuned_key"]))
    return kept, pd.DataFrame(rows)


def _chosen_on_how_many(chosen: pd.DataFrame, val_acc: float) -> dict:
    """The choice's val images (the fewest over its seeds), the binomial standard error of its mean val
    accuracy on that many, and whether that is a small-val selection (selection.py)."""
    if "val_size" not in chosen.columns:
        return {}
    facts = selection.group_columns(chosen)
    return {**facts, "val_acc_se": selection.standard_error(val_acc, facts["val_size"])}


def _check_keys(runs: pd.DataFrame, keys: list[str], columns: list[str]) -> None:
    missing = [key for key, column in zip(keys, columns) if column not in runs.columns]
    if missing:
        varying = [short_name(c) for c in group_columns(runs) if c.startswith(IDENTITY_PREFIX)
                   and runs[c].astype(str).nunique() > 1]
        raise ValueError(f"--tune {','.join(missing)}: no run has that setting; settings that vary among these runs: "
                         f"{', '.join(varying) or 'none'} (spell them as in the config, e.g. optimizer.lr)")
    if VAL_SCORE not in runs.columns or finished(runs)[VAL_SCORE].isna().all():
        raise ValueError("--tune chooses on val accuracy, and none of these runs recorded one")


def _in_value_order(tuned_key: str) -> list:
    """Numbers by value (1, 3, 10, not "1", "10", "3"), then other values by their text."""
    return [(0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))
            for value in json.loads(tuned_key)]


def _shown(value) -> str:
    """0.001 as 0.001, a searched 0.012963 as 0.01296 (as group labels show floats)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _value_text(tuned_key: str) -> str:
    return ", ".join(_shown(value) for value in json.loads(tuned_key))


def choices_text(choices: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The choices for people: percents, one column per tuned setting."""
    shown = choices[["setting", "init", *keys]].copy()
    for key in keys:
        shown[key] = shown[key].map(_shown)
    shown["val accuracy of the choice (%)"] = choices["val_acc_chosen"].map(lambda v: f"{100 * v:.1f}")
    if "val_size" in choices.columns:
        shown["val accuracy of the choice (%)"] = [selection.marked(text, small) for text, small in zip(
            shown["val accuracy of the choice (%)"], choices["small_val"])]
        shown["val images (SE, points)"] = [selection.chosen_by(n, se, small) for n, se, small in zip(
            choices["val_size"], choices["val_acc_se"], choices["small_val"])]
    shown["seeds"] = choices["n"]
    shown["chosen on"] = choices["val_is_test"].map(chosen_on)
    shown["val accuracy per value tried (%)"] = choices["val_acc_by_value"]
    return shown
