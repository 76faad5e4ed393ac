"""The write-ups' published numbers beside what tlbench measured, and what their defects cost.

A write-up preset (conf/experiment/seed_*.yaml) records a `published` block (which write-up,
its own setting, its numbers, caveats) and a `defects` block (the write-up's bugs, on in the
as-published variant, off in its `fixed` twin). Both reach result.json under `config` like every
setting, so they are read here from the runs table's `config.published.*` (lists as JSON text,
see load.flatten) and `config.defects.*` columns. `published` is not part of a run's identity:
it never splits a group, while defects and dataset.val_split do (they change what is trained).

Percentages and points in these tables: published numbers are quoted in percent, so the rows
keep that unit (columns named `_pct` and `_points`).
"""

from __future__ import annotations

import json
import math

import pandas as pd

from tlbench.report.compare import delta, finished, first_column, setting_columns
from tlbench.report.groups import IDENTITY_PREFIX, group_columns, group_label, key_of
from tlbench.report.metrics import trainable_params_by_phase
from tlbench.report.stats import mean_ci

PUBLISHED = "config.published."
DEFECTS = "config.defects."
AS_PUBLISHED, FIXED = "as_published", "fixed"
# What the two variants of a write-up may differ in and still be compared: the defects
# themselves and the selection on the test split (val_split 0) that the write-ups used.
TWIN_DIFFERENCES = (IDENTITY_PREFIX + "defects.", IDENTITY_PREFIX + "dataset.val_split",
                    IDENTITY_PREFIX + "published.")


def plain(value):
    """A runs-table cell as the config held it: NaN (absent) as None, JSON list text as a list."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def same(a, b) -> bool:
    """Config values equal, 1 and 1.0 included."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(a, b) if numbers else a == b


def as_text(value) -> str:
    """A config value as the YAML would spell it: null, true, 1.0, [..]; strings unquoted."""
    return value if isinstance(value, str) else json.dumps(value)


def cited_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs whose config carries a published block."""
    ok = finished(runs)
    column = PUBLISHED + "writeup"
    return ok[ok[column].notna()] if column in ok.columns else ok.iloc[:0]


def pretrained_of(runs: pd.DataFrame) -> pd.Series:
    return first_column(runs, ("config.pretrained", "pretrained"),
                        pd.Series(None, index=runs.index, dtype=object))


def variant_of(cited: pd.DataFrame) -> pd.Series:
    """as_published or fixed; a block that does not say is the write-up as published."""
    column = PUBLISHED + "variant"
    variant = cited[column] if column in cited.columns else pd.Series(None, index=cited.index)
    return variant.fillna(AS_PUBLISHED)


def _presets(cited: pd.DataFrame):
    """(writeup, variant, runs) per preset, write-ups in order, as-published before fixed."""
    if cited.empty:
        return
    by = [cited[PUBLISHED + "writeup"], variant_of(cited)]
    for (writeup, variant), runs in cited.groupby(by, sort=True):
        yield writeup, variant, runs


def setting_differences(group: pd.DataFrame, setting: list) -> str:
    """The write-up's setting entries that this group's runs do not share, e.g.
    "dataset.root = /x/cifar10-jpg (write-up: null, torchvision's pickled CIFAR-10)"."""
    found = []
    for entry in setting:
        key, wanted = entry["key"], entry.get("value")
        column = f"config.{key}"
        values = [plain(v) for v in group[column]] if column in group.columns else None
        if values is not None and all(same(v, wanted) for v in values):
            continue
        ran = "not recorded" if values is None else \
            " / ".join(dict.fromkeys(as_text(v) for v in values))
        means = f", {entry['means']}" if entry.get("means") else ""
        found.append(f"{key} = {ran} (write-up: {as_text(wanted)}{means})")
    return "; ".join(found)


def measured_at(group: pd.DataFrame, epochs: pd.DataFrame, number: dict) -> dict:
    """Mean over seeds of the number's metric at its epoch, with the 95% t interval; a note
    instead when the runs never got to that epoch or never recorded that metric."""
    metric, epoch, published = number["metric"], number["epoch"], number["value"]
    history = epochs[epochs["path"].isin(group["path"])]
    last = history["epoch"].max() if len(history) else 0
    if last < epoch:
        return {"n_seeds": 0, "note": f"run stopped at epoch {int(last)}"}
    values = history.loc[history["epoch"] == epoch, metric] if metric in history.columns else []
    estimate = mean_ci(values)
    if estimate.n == 0:
        return {"n_seeds": 0, "note": f"{metric} not recorded at epoch {epoch}"}
    return {"measured_mean_pct": 100 * estimate.mean, "ci_low_pct": 100 * estimate.ci_low,
            "ci_high_pct": 100 * estimate.ci_high, "n_seeds": estimate.n,
            "difference_points": 100 * (estimate.mean - published),
            "published_inside_ci": _inside(estimate, published)}


def _inside(estimate, value: float) -> str:
    if not estimate.has_interval:
        return "n/a"
    return "yes" if estimate.ci_low <= value <= estimate.ci_high else "no"


def _matching(runs: pd.DataFrame, number: dict) -> pd.DataFrame:
    """Runs with the number's init: a pretrained number is never compared with random runs."""
    if number.get("pretrained") is None:
        return runs
    return runs[pretrained_of(runs).map(lambda v: plain(v) == number["pretrained"])]


def published_vs_measured(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per write-up, variant, published number and group (runs differing only in seed)
    with the number's init: the published value, the measured mean and 95% CI at the number's
    epoch, the difference in points, whether the interval holds the published value, and the
    write-up setting entries these runs differ from."""
    rows = []
    for writeup, variant, preset in _presets(cited_runs(runs)):
        first = preset.iloc[0]
        setting = plain(first.get(PUBLISHED + "setting")) or []
        for number in plain(first.get(PUBLISHED + "numbers")) or []:
            cell = {"writeup": writeup, "variant": variant, "what": number.get("what", ""),
                    "metric": number["metric"], "epoch": number["epoch"],
                    "published_pct": 100 * number["value"]}
            matching = _matching(preset, number)
            if matching.empty:
                init = "pretrained" if number["pretrained"] else "random"
                rows.append({**cell, "n_seeds": 0, "note": f"no finished {init}-init run"})
            for _, group in matching.groupby("group_key", sort=False):
                rows.append({**cell, "setting": group["setting"].iloc[0],
                             "init": group["init"].iloc[0],
                             **measured_at(group, epochs, number),
                             "differs_from_writeup": setting_differences(group, setting)})
    columns = ["writeup", "variant", "setting", "init", "what", "metric", "epoch",
               "published_pct", "measured_mean_pct", "ci_low_pct", "ci_high_pct", "n_seeds",
               "difference_points", "published_inside_ci", "differs_from_writeup", "note"]
    return pd.DataFrame(rows, columns=columns)


def preset_notes(runs: pd.DataFrame) -> list[str]:
    """One line per preset: the write-up's title and its caveats."""
    lines = []
    for writeup, variant, preset in _presets(cited_runs(runs)):
        first = preset.iloc[0]
        notes = " ".join(plain(first.get(PUBLISHED + "notes")) or [])
        title = plain(first.get(PUBLISHED + "title")) or "untitled"
        lines.append(f"{writeup} ({variant.replace('_', ' ')}): {title}." + (f" {notes}" if notes else ""))
    return lines


def defects_switched_on(as_published: pd.Series, fixed: pd.Series) -> str:
    """"freeze_by_name=fc, selection on test (val_split=0)": what the as-published runs have
    that their fixed twin does not."""
    found = []
    for column in sorted(c for c in as_published.index if c.startswith(DEFECTS)):
        value = plain(as_published[column])
        if value in (None, False) or same(value, plain(fixed.get(column))):
            continue
        found.append(f"{column.removeprefix(DEFECTS)}={as_text(value)}")
    split = "config.dataset.val_split"
    if plain(as_published.get(split)) == 0 and plain(fixed.get(split)) not in (0, None):
        found.append("selection on test (val_split=0)")
    return ", ".join(found) or "none recorded"


def first_phase_params(group: pd.DataFrame, epochs: pd.DataFrame) -> tuple:
    """(phase, trainable parameters) of the first freeze phase, the largest count over seeds."""
    firsts = [next(iter(trainable_params_by_phase(run).items()), None)
              for _, run in epochs[epochs["path"].isin(group["path"])].groupby("path")]
    firsts = [f for f in firsts if f is not None]
    if not firsts:
        return None, math.nan
    return firsts[0][0].removeprefix("trainable_params."), max(count for _, count in firsts)


def _twin_columns(cited: pd.DataFrame) -> list[str]:
    return [c for c in group_columns(cited) if not c.startswith(TWIN_DIFFERENCES)]


def _estimate(prefix: str, estimate, unit: str = "pct") -> dict:
    """Mean and CI bounds scaled to percent (or points, for a difference), and n."""
    return {f"{prefix}_mean_{unit}": 100 * estimate.mean,
            f"{prefix}_ci_low_{unit}": 100 * estimate.ci_low,
            f"{prefix}_ci_high_{unit}": 100 * estimate.ci_high, f"{prefix}_n": estimate.n}


def cost_row(as_published: pd.DataFrame, fixed: pd.DataFrame, epochs: pd.DataFrame,
             column: str) -> dict:
    """Both variants' mean and CI of `column`, fixed − as published (paired by seed when both
    ran the same seeds, else Welch), the defects, and each variant's first-phase trainables."""
    row = {"defects": defects_switched_on(as_published.iloc[0], fixed.iloc[0])}
    row.update(_estimate("as_published", mean_ci(as_published[column])))
    row.update(_estimate("fixed", mean_ci(fixed[column])))
    difference = delta(fixed, as_published, column)
    row.update(_estimate("difference", difference, "points"), method=difference.method)
    for name, group in (("as_published", as_published), ("fixed", fixed)):
        phase, count = first_phase_params(group, epochs)
        row.update({f"{name}_first_phase": phase, f"{name}_first_phase_trainable_params": count})
    return row


def defect_cost(runs: pd.DataFrame, epochs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per pair of groups, the as-published and the fixed variant of one write-up, that
    differ only in defects and dataset.val_split (same init, model, data, epochs, ...): the final
    `metric` of each, fixed minus as published with its 95% CI, and first-phase trainables."""
    cited = cited_runs(runs)
    if cited.empty:
        return pd.DataFrame()
    twin, labels = _twin_columns(cited), setting_columns(finished(runs))
    shown = [c for c in labels if c in twin]
    keys, variant = cited.apply(key_of, axis=1, columns=twin), variant_of(cited)
    rows = []
    for (writeup, _), pair in cited.groupby([cited[PUBLISHED + "writeup"], keys], sort=True):
        sides = [pair[variant.loc[pair.index] == name] for name in (AS_PUBLISHED, FIXED)]
        for _, published_group in sides[0].groupby("group_key", sort=False):
            for _, fixed_group in sides[1].groupby("group_key", sort=False):
                first = published_group.iloc[0]
                rows.append({"writeup": writeup, "setting": group_label(first, shown),
                             "init": first["init"], "metric": f"final_{metric}",
                             **cost_row(published_group, fixed_group, epochs, f"final_{metric}")})
    return pd.DataFrame(rows)


def _texts(values: pd.Series) -> set:
    return {as_text(plain(v)) for v in values}


def uncompared_writeups(runs: pd.DataFrame, costs: pd.DataFrame) -> list[str]:
    """Why a write-up has no defect-cost row: a variant did not run, or the two variants' runs
    differ in more than their defects (those settings are named)."""
    lines = []
    cited = cited_runs(runs)
    if cited.empty:
        return lines
    compared = set(costs["writeup"]) if len(costs) else set()
    twin = _twin_columns(cited)
    for writeup, preset in cited.groupby(PUBLISHED + "writeup", sort=True):
        if writeup in compared:
            continue
        sides = [preset[variant_of(preset) == name] for name in (AS_PUBLISHED, FIXED)]
        missing = [name for name, side in zip(("as published", "fixed"), sides) if side.empty]
        if missing:
            lines.append(f"{writeup}: no finished {missing[0]} run, so nothing to compare.")
            continue
        differ = [c.removeprefix(IDENTITY_PREFIX) for c in twin
                  if _texts(sides[0][c]) != _texts(sides[1][c])]
        lines.append(f"{writeup}: the as-published and fixed runs also differ in "
                     f"{', '.join(differ) or 'their settings'}, so they are not compared.")
    return lines
