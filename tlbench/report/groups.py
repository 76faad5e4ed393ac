"""Which runs belong together: the same experiment (tlbench.records.identity) but for the seed.

Each result.json records its `identity`: the config less where files live and speed-only
settings, with local data and weights named by their content. A group is the set of runs whose
identity differs only in seed; its runs are the samples behind a mean and CI. A pair group
additionally ignores `pretrained`, so it holds both sides of the pretrained-vs-random comparison.
Older files get their identity computed from their config when they are read (load.py).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from tlbench.records.identity import IDLE_UNLESS, LATER_SETTINGS

IDENTITY_PREFIX = "identity."
# Top-level fields the training core writes for people; they name each group in tables.
DESCRIPTIVE = ["model", "dataset", "pretrained", "freeze", "optimizer", "schedule"]


# The draw of the training subset, a replicate like the seed when it follows it (`dataset.subset_seed: ${seed}`,
# as experiment=robust_cifar10 sets it: each seed its own draw).
DRAW = IDENTITY_PREFIX + "dataset.subset_seed"


def group_columns(runs: pd.DataFrame) -> list[str]:
    """Columns whose values must match for two runs to be seeds of one experiment: every identity key but the
    seed, and but the subset draw where every run's draw is its seed."""
    replicates = {IDENTITY_PREFIX + "seed"} | ({DRAW} if _draw_follows_seed(runs) else set())
    identity = [c for c in runs.columns if c.startswith(IDENTITY_PREFIX) and c not in replicates]
    return [c for c in DESCRIPTIVE if c in runs.columns] + identity


def _draw_follows_seed(runs: pd.DataFrame) -> bool:
    seed = IDENTITY_PREFIX + "seed"
    if DRAW not in runs.columns or seed not in runs.columns or not len(runs):
        return False
    # a draw at its older default (0) is left out of the identity: read back as that default
    draws = runs[DRAW].fillna(LATER_SETTINGS[DRAW.removeprefix(IDENTITY_PREFIX)])
    seeds = runs[seed]
    return bool(seeds.notna().all() and draws.nunique() > 1 and (draws.astype(float) == seeds.astype(float)).all())


def is_pretrained_column(column: str) -> bool:
    return column.split(".")[-1] == "pretrained"


# Settings that act only from random weights (random_init_lr_ratio, random_init_select_epoch, BitFit's own ratio):
# a random-init run's own recipe, so they do not keep it from pairing with its pretrained twin.
RANDOM_INIT_ONLY = frozenset(key for key, (switch, value) in IDLE_UNLESS.items()
                             if switch == "pretrained" and value is False)


def is_init_column(column: str) -> bool:
    """`pretrained`, or a setting that acts only from random weights: left out of the pair key."""
    return is_pretrained_column(column) or column.removeprefix(IDENTITY_PREFIX).removeprefix("config.") \
        in RANDOM_INIT_ONLY


def key_of(row: pd.Series, columns: list[str]) -> str:
    """A hashable, NaN-safe identity for the given columns (JSON text)."""
    def plain(value):
        if missing(value):
            return None
        return value.item() if hasattr(value, "item") else value
    return json.dumps([plain(row[c]) for c in columns], default=str)


def add_group_keys(runs: pd.DataFrame) -> pd.DataFrame:
    """Add `group_key` (all but seed) and `pair_key` (all but seed, pretrained and the settings that act only
    from random weights, so a pretrained run pairs with its random-init twin trained by random init's recipe)."""
    columns = group_columns(runs)
    pair = [c for c in columns if not is_init_column(c)]
    runs = runs.copy()
    runs["group_key"] = runs.apply(key_of, axis=1, columns=columns) if len(runs) else []
    runs["pair_key"] = runs.apply(key_of, axis=1, columns=pair) if len(runs) else []
    runs["init"] = runs["pretrained"].map({True: "pretrained", False: "random"}) \
        if "pretrained" in runs.columns else "unknown"
    return runs


def short_name(column: str) -> str:
    """identity.optimizer.lr -> optimizer.lr; identity.model.name -> model."""
    name = column.removeprefix(IDENTITY_PREFIX).removeprefix("config.")
    return name.removesuffix(".name") if name.endswith(".name") else name


def label_columns(runs: pd.DataFrame, always=("model",)) -> list[str]:
    """Group columns worth showing: `model`, the descriptive fields that vary, and any other
    setting that varies among runs sharing the descriptive fields (a setting only one freeze
    option has, such as freeze.C_grid of logreg, names nothing the word `logreg` does not)."""
    descriptive = [c for c in DESCRIPTIVE if c in runs.columns]
    shown = []
    for column in group_columns(runs):
        if column.startswith(IDENTITY_PREFIX) and short_name(column) in DESCRIPTIVE:
            continue
        values = runs[column].astype(str)
        if column in descriptive:
            varies = values.nunique(dropna=False) > 1
        else:
            varies = bool(len(runs)) and values.groupby(
                [runs[c].astype(str) for c in descriptive] or [pd.Series(0, index=runs.index)]).nunique(dropna=False).gt(1).any()
        if column in always or varies:
            shown.append(column)
    return shown


def missing(value) -> bool:
    """None or NaN: no value (the one test the report's tables and labels use)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def label_value(row: pd.Series, column: str):
    """The run's value of a group column. An identity leaves out a setting at the value runs
    had before it existed (tlbench.records.identity.LATER_SETTINGS: dataset.val_split=0, defects off), so
    a missing one reads as that value; null as the YAML spells it."""
    value, key = row[column], column.removeprefix(IDENTITY_PREFIX)
    if missing(value) and column.startswith(IDENTITY_PREFIX) and key in LATER_SETTINGS:
        value = LATER_SETTINGS[key]
        return "null" if value is None else value
    return value


def setting_text(row: pd.Series, column: str) -> str:
    """How a table prints the run's value of a group column (label_value): a setting the run's options do not
    have (freeze.lr_ratio of a freeze=none run in a sweep with BitFit) as "–", not "nan"."""
    value = label_value(row, column)
    return "–" if missing(value) else str(value)


def group_label(row: pd.Series, columns: list[str]) -> str:
    """Human label such as "resnet18, freeze=linear_probe" for chart axes and findings; a setting the run's
    options do not have is left out."""
    parts = []
    for column in columns:
        value = label_value(row, column)
        if missing(value) and column != "model":
            continue
        value = f"{value:.4g}" if isinstance(value, float) else value  # a searched lr is 0.01296, not 17 digits
        parts.append(str(value) if column == "model" else f"{short_name(column)}={value}")
    return ", ".join(parts)
