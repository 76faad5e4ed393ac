"""How much val to hold out (issue 22 item 3), from the result.json files of sweeps over `dataset.val_split` on
the ants-bees draws: per folder size and val_split, the mean test accuracy of the headline a user gets (the
val-chosen epoch; with val_split=0 the final epoch, since there the "val" is the test split) and of the final
epoch, with the paired difference from val_split=0.1 (and min_steps=0) on the same draws (mean and its
standard error). Runs with another `min_steps` are their own rows.

    python benchmarks/small_photos/val_holdout.py /tmp/m22/ab_val20 /tmp/m22/ab_valall
"""

import argparse
from pathlib import Path

import pandas as pd
from grid_table import completed  # the same folder: python puts a script's folder on sys.path


def rows(folders: list[Path]) -> pd.DataFrame:
    found = []
    for result in completed(folders):
        data, summary, info = result["config"]["dataset"], result["summary"], result["data_info"]
        split = float(data["val_split"])
        final = 100 * summary["final_test_acc"]
        name = Path(data["root"]).name
        folder = name.rstrip("0123456789")
        found.append(dict(folder=folder, draw=name[len(folder):], val_split=split,
                          min_steps=result["config"].get("min_steps", 0),
                          train=info.get("train_size"), val=info.get("val_size") if split else 0,
                          headline=final if split == 0 else 100 * summary["test_acc_at_best_val"], final=final))
    return pd.DataFrame(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    frame = rows(args.folders)
    lines = []
    for (folder, split, floor), cell in frame.groupby(["folder", "val_split", "min_steps"]):
        base = frame[(frame.folder == folder) & (frame.val_split == 0.1) & (frame.min_steps == 0)].set_index("draw")
        line = dict(folder=folder, val_split=split, min_steps=floor, draws=len(cell), train=cell.train.mean(),
                    val=cell.val.mean())
        for value in ("headline", "final"):
            paired = (cell.set_index("draw")[value] - base[value]).dropna()
            line[value] = cell[value].mean()
            line[f"{value}_vs_0.1"] = paired.mean()
            line[f"{value}_se"] = paired.std(ddof=1) / len(paired) ** 0.5 if len(paired) > 1 else float("nan")
        lines.append(line)
    pd.set_option("display.width", 200)
    print(pd.DataFrame(lines).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
