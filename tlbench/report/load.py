"""Read result.json files (one per run) into pandas tables.

The report only ever reads these JSON files, never the training code, so it runs
without torch and can be tested on hand-written files.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd

from tlbench.records import identity
from tlbench.records.results import METRIC_FIELDS, RESULT_FILE, SCHEMA_VERSION, select_rule

# Schema 1 had no separate val split: its "val" WAS the test split, and its best epoch was
# chosen on it. How such a file reads in schema-2 terms (see upgrade_schema_1).
SCHEMA_1_VAL_SOURCE = "test split (schema 1: val was the test split)"
# Per-epoch and per-step series get their own long tables instead of run columns.
SERIES_FIELDS = ("epochs", "iter_loss")
# The per-epoch fields the report reads in each data set's own metric (result.json `metric`): a
# mean_per_class run's val_acc / test_acc hold its val_mean_class_acc / test_mean_class_acc, its top-1
# moves to val_top1_acc / test_top1_acc (every run has those), so each data set is ranked on its own metric.
DATASET_METRIC_FIELDS = ("val_acc", "test_acc")


def find_result_files(paths) -> list[Path]:
    """Every result.json under the given folders (recursively) or given directly."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist; pass a sweep folder (e.g. multirun/<date>/<time>) "
                f"or a {RESULT_FILE} file")
        if path.is_file():
            files.append(path)
            continue
        found = sorted(path.rglob(RESULT_FILE))
        if not found:
            raise FileNotFoundError(
                f"no {RESULT_FILE} found under {path} (searched recursively); "
                "is this the folder the sweep wrote to?")
        files.extend(found)
    # The same file reached through two given folders counts once.
    return list(dict.fromkeys(f.resolve() for f in files))


def read_results(paths) -> list[dict]:
    """Parsed result dicts, each with `path` added; unreadable files are skipped with a warning."""
    results = []
    for file in find_result_files(paths):
        result = _read_one(file)
        if result is not None:
            results.append(result)
    return _drop_duplicate_runs(results)


def _read_one(file: Path) -> dict | None:
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        # A run killed while writing leaves a broken file; the other runs still deserve a report.
        warnings.warn(f"skipping {file}: not readable JSON ({error})", stacklevel=3)
        return None
    if not isinstance(result, dict):
        warnings.warn(f"skipping {file}: expected a JSON object, got {type(result).__name__}",
                      stacklevel=3)
        return None
    version = result.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        warnings.warn(
            f"{file} has schema_version {version} but this report knows version "
            f"{SCHEMA_VERSION}; unknown fields are ignored. Update tlbench to read "
            "everything.", stacklevel=3)
    result["path"] = str(file)
    result.setdefault("status", "failed" if result.get("error") else "ok")
    if not isinstance(version, int) or version < 2:
        upgrade_schema_1(result)
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    result.setdefault("identity", identity.experiment(config))  # hand-written files may lack it
    return in_dataset_metric(result)


def follows_dataset_metric(column: str) -> bool:
    """Whether a report column (test_acc, final_test_acc, test_acc_at_best_val) is read in each
    data set's metric."""
    return column.removesuffix("_at_best_val").removeprefix("final_") in DATASET_METRIC_FIELDS


def dataset_metric(result: dict) -> str:
    """The run's data set's metric: `metric`, else data_info.metric; files from before either are top1."""
    data_info = result.get("data_info") if isinstance(result.get("data_info"), dict) else {}
    return result.get("metric") or data_info.get("metric") or "top1"


def in_dataset_metric(result: dict) -> dict:
    """Read the run in its data set's metric, in place (DATASET_METRIC_FIELDS): `metric` set, and
    every epoch's val_acc / test_acc the metric's value, with top-1 kept as val_top1_acc / test_top1_acc."""
    metric = dataset_metric(result)
    if metric not in METRIC_FIELDS:
        warnings.warn(f"{result['path']}: metric {metric!r} is not one this report knows "
                      f"({', '.join(METRIC_FIELDS)}); read as top1. Update tlbench to read it.", stacklevel=4)
        metric = "top1"
    result["metric"] = metric
    for epoch in result.get("epochs") or []:
        if not isinstance(epoch, dict):
            continue
        for shown, value in zip(DATASET_METRIC_FIELDS, METRIC_FIELDS[metric]):
            if shown in epoch:
                top1 = epoch.setdefault(shown.replace("_acc", "_top1_acc"), epoch[shown])  # once: read twice, same
                epoch[shown] = top1 if value == shown else epoch.get(value)
    return result


def upgrade_schema_1(result: dict) -> dict:
    """Read a schema-1 result as schema 2, in place: its val split was the test split, so
    test_* = val_* in every epoch and val_is_test is true. This is the one place that knows;
    everything downstream reads test_* and val_is_test as if the file had been schema 2."""
    for epoch in result.get("epochs") or []:
        if isinstance(epoch, dict):
            for field in ("loss", "acc"):
                if f"val_{field}" in epoch:
                    epoch.setdefault(f"test_{field}", epoch[f"val_{field}"])
    data_info = result.get("data_info") if isinstance(result.get("data_info"), dict) else {}
    data_info["val_is_test"] = True
    data_info.setdefault("val_source", SCHEMA_1_VAL_SOURCE)
    if "val_size" in data_info:
        data_info.setdefault("test_size", data_info["val_size"])
    result["data_info"] = data_info
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    result.setdefault("identity", identity.experiment(identity.upgrade_schema_1_config(config)))
    summary = result.get("summary")
    if isinstance(summary, dict):
        # Same numbers under schema-2 names, so summary.* columns line up across schemas.
        for test_name, val_name in (("final_test_acc", "final_val_acc"),
                                    ("test_acc_at_best_val", "best_val_acc"),
                                    ("final_test_loss", "final_val_loss")):
            if val_name in summary:
                summary.setdefault(test_name, summary[val_name])
    return result


def _drop_duplicate_runs(results: list[dict]) -> list[dict]:
    """Keep one result per run_id, preferring a finished run over a failed one.

    Merging a sweep with its re-run would otherwise count the same seed twice and
    shrink every confidence interval for no reason.
    """
    kept: dict[str, dict] = {}
    unnamed = []
    for result in results:
        run_id = result.get("run_id")
        if not run_id:
            unnamed.append(result)
            continue
        if run_id in kept:
            old = kept[run_id]
            better = result if old.get("status") != "ok" and result.get("status") == "ok" else old
            other = old if better is result else result
            warnings.warn(f"run_id {run_id} appears twice; using {better['path']}, "
                          f"ignoring {other['path']}", stacklevel=3)
            kept[run_id] = better
        else:
            kept[run_id] = result
    return list(kept.values()) + unnamed


def flatten(mapping: dict, prefix: str = "") -> dict:
    """Nested dicts to dot-joined keys (identity.flatten, the run_id's own); lists become JSON
    text so they stay hashable, and empty sections leave no column."""
    return {name: json.dumps(value) if isinstance(value, (list, tuple)) else value
            for name, value in identity.flatten(_without_empty_sections(mapping), prefix).items()}


def _without_empty_sections(mapping: dict) -> dict:
    """`mapping` less every dict that is empty or holds only empty dicts, at any depth."""
    kept = {}
    for key, value in mapping.items():
        value = _without_empty_sections(value) if isinstance(value, dict) else value
        if not (isinstance(value, dict) and not value):
            kept[key] = value
    return kept


def val_is_test(result: dict):
    """True when the run's val split was its test split and it chose something there, so its
    val-selected numbers were selected on the reported split: its epoch (any select_epoch but final)
    or a probe's C on val (not by cross-validation; knn chooses nothing). False when not: a run with
    no val split (dataset.val_split=0) and select_epoch=final chose nothing and is not optimistic
    (runs.csv keeps the data fact as data_info.val_is_test). None when the run never recorded its data."""
    data_info = result.get("data_info")
    flag = data_info.get("val_is_test") if isinstance(data_info, dict) else None
    if not flag:
        return None if flag is None else False
    probe = result.get("probe")
    if isinstance(probe, dict):
        return str(probe.get("C_chosen_on", "")).startswith("val_")
    return select_rule(result.get("config")) != "final"


def runs_table(results: list[dict]) -> pd.DataFrame:
    """One row per run: top-level fields (`metric`: the data set's, top1 for older files),
    `val_is_test`, `config.*`, `summary.*`, `env.*`, `data_info.*`, `error.*`, `identity.*` (what
    groups runs: groups.py), `path`."""
    rows = []
    for result in results:
        fields = {k: v for k, v in result.items() if k not in SERIES_FIELDS}
        row = flatten(fields)
        row["n_epochs"] = len(result.get("epochs") or [])
        row["val_is_test"] = val_is_test(result)
        rows.append(row)
    table = pd.DataFrame(rows)
    first = [c for c in ("run_id", "status", "val_is_test", "path") if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def epochs_table(results: list[dict]) -> pd.DataFrame:
    """One row per run x epoch, keyed by `path` (run_id may be absent in old files)."""
    rows = []
    for result in results:
        for epoch in result.get("epochs") or []:
            rows.append({"path": result["path"], "run_id": result.get("run_id"), **epoch})
    table = pd.DataFrame(rows, columns=None if rows else ["path", "run_id", "epoch"])
    return table.sort_values(["path", "epoch"], kind="stable").reset_index(drop=True)


def iter_loss_table(results: list[dict]) -> pd.DataFrame:
    """One row per optimizer step: `path`, `iteration` (from 1), `train_loss`, `epoch`."""
    frames = []
    for result in results:
        losses = [math.nan if v is None else v for v in result.get("iter_loss") or []]
        if not losses:
            continue
        per_epoch = result.get("iters_per_epoch") or 0
        frame = pd.DataFrame({"iteration": range(1, len(losses) + 1), "train_loss": losses})
        frame["epoch"] = (frame["iteration"] - 1) // per_epoch + 1 if per_epoch else math.nan
        frame.insert(0, "path", result["path"])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["path", "iteration", "train_loss", "epoch"])
    return pd.concat(frames, ignore_index=True)


def load_runs(paths) -> pd.DataFrame:
    """One row per result.json found under `paths` (folders searched recursively, or files).

    Config is flattened into `config.<group>.<key>` columns; failed runs are kept with
    their `status`. Raises FileNotFoundError naming a path that is missing or empty.
    """
    return runs_table(read_results(paths))


def load_epochs(paths) -> pd.DataFrame:
    """Per-epoch long table (one row per run x epoch) for the runs under `paths`."""
    return epochs_table(read_results(paths))


def load_iter_loss(paths) -> pd.DataFrame:
    """Per-optimizer-step training loss (one row per run x step) for the runs under `paths`."""
    return iter_loss_table(read_results(paths))
