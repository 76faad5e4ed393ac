"""The defaults-across-sizes table (issue 22 item 2) from the result.json files of one or more sweep folders:
mean test accuracy per strategy, candidate and training size over the draws, and each candidate's paired
difference from the strategy's default on the same draws (mean and its standard error across draws).

    python benchmarks/small_photos/grid_table.py /tmp/m22/c_ft /tmp/m22/c_bitfit ... [--value chosen|final]

A draw is `dataset.subset_seed` (CIFAR-10 subsets) or the last folder of `dataset.root` (ants-bees draws).
`chosen` is the test accuracy at the val-chosen epoch (the run's `select_epoch` rule), `final` the last epoch's.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

# the default candidate of each strategy (conf/: optimizer.lr, freeze.*lr_ratio, epochs)
DEFAULTS = {"none": "lr=0.001", "linear_probe": "head_lr_ratio=auto", "bitfit": "lr_ratio=3", "lora": "lr_ratio=auto"}


def candidate(config: dict, steps: int | None = None) -> tuple[str, str]:
    """(strategy, candidate); `steps`: label the budget by the optimizer steps the run took (--by-steps)
    instead of its epochs, batch size and min_steps, so budgets compare across training sizes."""
    freeze = config["freeze"]
    name = freeze["name"] if config["pretrained"] else f"{freeze['name']} (random init)"
    key = {"linear_probe": "head_lr_ratio", "bitfit": "lr_ratio", "lora": "lr_ratio"}.get(freeze["name"])
    knob = f"{key}={freeze[key]:g}" if key and freeze[key] != "auto" else f"{key}=auto" if key else \
        f"lr={config['optimizer']['lr']:g}"
    if steps is not None:
        return name, f"{knob} steps={steps:04d}"
    if config["epochs"] != 10:
        knob += f" epochs={config['epochs']}"
    if config["batch_size"] != 64:
        knob += f" batch_size={config['batch_size']}"
    if config.get("min_steps"):
        knob += f" min_steps={config['min_steps']}"
    return name, knob


def completed(folders: list[Path]):
    """The result.json of every complete run under `folders` (also used by val_holdout.py)."""
    for path in (p for folder in folders for p in folder.rglob("result.json")):
        result = json.loads(path.read_text())
        if result.get("status") == "ok":
            yield result


def rows(folders: list[Path], by_steps: bool = False) -> pd.DataFrame:
    found = []
    for result in completed(folders):
        config, summary = result["config"], result["summary"]
        data = config["dataset"]
        root = data.get("root")
        draw = Path(root).name if data["name"] == "imagefolder" else f"subset_seed={data.get('subset_seed', 0)}"
        steps = len(result["epochs"]) * result["iters_per_epoch"] if by_steps else None
        strategy, knob = candidate(config, steps)
        found.append(dict(strategy=strategy, candidate=knob, size=str(data.get("train_per_class") or "all"), draw=draw,
                          final=100 * summary["final_test_acc"], chosen=100 * summary["test_acc_at_best_val"]))
    return pd.DataFrame(found)


def table(frame: pd.DataFrame, value: str, by_steps: bool = False) -> pd.DataFrame:
    lines = []
    for (strategy, size), cell in frame.groupby(["strategy", "size"]):
        default = DEFAULTS.get(strategy.split(" ")[0])
        if by_steps:  # the default budget: the fewest steps of the default's knob at this size
            default = min(k for k in cell.candidate if k.startswith(default + " steps="))
        for knob, runs in cell.groupby("candidate"):
            # paired with the default's knob at the same budget (min_steps, epochs...), else the default itself
            budget = "" if by_steps or " " not in knob else " " + knob.split(" ", 1)[1]
            base = cell[cell.candidate == default + budget].set_index("draw")[value]
            paired = (runs.set_index("draw")[value] - base).dropna()
            lines.append(dict(strategy=strategy, candidate=knob, size=size, draws=len(runs), mean=runs[value].mean(),
                              vs_default=paired.mean() if len(paired) else float("nan"),
                              se=paired.std(ddof=1) / len(paired) ** 0.5 if len(paired) > 1 else float("nan")))
    return pd.DataFrame(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--value", choices=["chosen", "final"], default="chosen")
    parser.add_argument("--by-steps", action="store_true",
                        help="candidates by the optimizer steps each run took; the default is the fewest at each size")
    parser.add_argument("--default", action="append", default=[], metavar="STRATEGY=KNOB",
                        help="pair with this candidate instead of the default, e.g. bitfit=lr_ratio=10")
    args = parser.parse_args()
    DEFAULTS.update(item.split("=", 1) for item in args.default)
    result = table(rows(args.folders, args.by_steps), args.value, args.by_steps)
    if args.by_steps:
        print(result.sort_values(["strategy", "size", "candidate"], key=lambda c: c.map(
            lambda v: int(v) if str(v).isdigit() else v)).round(2).to_string(index=False))
        return
    sizes = sorted(result["size"].unique(), key=lambda s: (s == "all", int(s) if s.isdigit() else 0))
    for column in ("mean", "vs_default", "se"):
        wide = result.pivot_table(index=["strategy", "candidate"], columns="size", values=column).reindex(columns=sizes)
        print(f"\n{args.value} test accuracy, {column} (%):\n{wide.round(2).to_string()}")
    print("\ndraws per cell:\n" + result.pivot_table(index=["strategy", "candidate"], columns="size",
                                                     values="draws").reindex(columns=sizes).to_string())


if __name__ == "__main__":
    main()
