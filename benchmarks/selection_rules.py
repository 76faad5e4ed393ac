"""Which rule should pick the val-chosen epoch (`select_epoch`)? Measured after the fact on runs
already trained: no training, no torch.

    python benchmarks/selection_rules.py results/sweeps/A [more folders] \
        [--by dataset.name,dataset.train_per_class,freeze.name,pretrained] [--csv rows.csv]

Every result.json below the folders (recursively) that is a completed fine-tuning run (status ok,
val and test metrics at every epoch) counts; probes (freeze=knn / logreg: one "epoch") and runs whose
val split was the test split (val_is_test) are skipped. For each run and each rule of
specs.SELECT_RULES, the epoch the rule chooses (records/results.py chosen_position: the same function
training and the report use) and the test metric there, in the data set's metric. The table: per
group of the --by config keys and rule, the mean test metric (%), the mean difference from the final
epoch's (points) and the number of runs. --csv writes one row per run and rule."""

import argparse
import sys

import pandas as pd

from tlbench.records import identity, results
from tlbench.report.load import read_results, val_is_test
from tlbench.specs import PROBES, SELECT_RULES

DEFAULT_BY = ("dataset.name", "dataset.train_per_class", "freeze.name", "pretrained")


def rule_rows(result: dict, by: list[str]) -> list[dict]:
    """One row per rule for a completed fine-tuning run; [] for anything else (why: `skipped`)."""
    if skipped(result):
        return []
    epochs = result["epochs"]
    config = identity.flatten(result.get("config") or {})
    values, losses = [e["val_acc"] for e in epochs], [e.get("val_loss") for e in epochs]
    final = epochs[-1]["test_acc"]
    data_info = result.get("data_info") or {}
    about = {**{key: "-" if config.get(key) is None else config[key] for key in by}, "seed": config.get("seed"),
             "run_id": result.get("run_id"), "path": result["path"], "metric": result.get("metric"),
             "val_size": data_info.get("val_size"), "epochs": len(epochs)}
    rows = []
    for rule in SELECT_RULES:
        chosen = epochs[results.chosen_position(values, losses, rule)]
        rows.append({**about, "rule": rule, "epoch": chosen["epoch"], "test_metric": chosen["test_acc"],
                     "final_test_metric": final, "vs_final": chosen["test_acc"] - final})
    return rows


def skipped(result: dict) -> str | None:
    """Why a run does not count, or None."""
    config = result.get("config") or {}
    if result.get("status") != "ok":
        return f"status {result.get('status')}"
    if (config.get("freeze") or {}).get("name") in PROBES:
        return "a probe"
    if val_is_test(result):
        return "val is the test split"
    epochs = result.get("epochs") or []
    if not epochs or any(e.get("val_acc") is None or e.get("test_acc") is None for e in epochs):
        return "no val and test metric at every epoch"
    return None


def table(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group and rule: mean test metric (%), mean difference from the final epoch (points), runs."""
    order = {rule: i for i, rule in enumerate(SELECT_RULES)}
    grouped = rows.astype({key: str for key in by}).groupby([*by, "rule"], sort=False)
    summary = grouped.agg(test_pct=("test_metric", "mean"), vs_final_pts=("vs_final", "mean"),
                          runs=("test_metric", "size")).reset_index()
    summary[["test_pct", "vs_final_pts"]] = (100 * summary[["test_pct", "vs_final_pts"]]).round(2)
    summary = summary.sort_values([*by, "rule"], key=lambda c: c.map(order) if c.name == "rule" else c)
    return summary.reset_index(drop=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="sweep or run folders (searched for result.json)")
    parser.add_argument("--by", default=",".join(DEFAULT_BY), help="config keys to group by, comma-separated")
    parser.add_argument("--csv", help="write one row per run and rule here")
    args = parser.parse_args(argv)
    by = [key.strip() for key in args.by.split(",") if key.strip()]
    try:
        found = read_results(args.folders)
    except FileNotFoundError as err:
        parser.error(str(err))
    rows = pd.DataFrame([row for result in found for row in rule_rows(result, by)])
    skips = pd.Series([skipped(result) for result in found]).dropna().value_counts()
    print(f"{len(found)} result.json files, {len(found) - int(skips.sum())} fine-tuning runs counted" +
          "".join(f"; {n} skipped ({why})" for why, n in skips.items()))
    if rows.empty:
        print("nothing to compare")
        return 1
    print(table(rows, by).to_string(index=False))
    if args.csv:
        rows.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
