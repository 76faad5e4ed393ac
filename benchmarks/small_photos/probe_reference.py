"""The independent reference for tlbench's logistic-regression probe: scikit-learn's
LogisticRegressionCV on the very features tlbench extracted (its feature cache), beside each
freeze=logreg / knn run's test accuracy.

For every result.json below the given folders (probe runs), the features of its train, val and
test splits are found in `<cache_dir>/features` by what they were extracted from (the run's data
set identity and backbone weights fingerprint); the reference fits on train + val, raw features,
13 values of C from 1e-4 to 1e2, stratified 5-fold (shuffled, seed 0), lbfgs, and scores test. Grouped by
the probe's settings (incl. freeze.l2_grid) and the training size.

    python benchmarks/small_photos/probe_reference.py /tmp/ab/probes --cache /tmp/ab/data3/tensor-cache
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold


def feature_sets(cache: Path) -> dict:
    """{(dataset identity JSON, weights fingerprint): {split: (features, labels)}}."""
    found = {}
    for path in sorted((cache / "features").glob("*.pt")):
        stored = torch.load(path, map_location="cpu", weights_only=False)
        key = json.loads(stored["key"])
        group = (json.dumps(key["dataset"], sort_keys=True), key["weights"])
        found.setdefault(group, {})[key["split"]] = (stored["features"].numpy(), stored["labels"].numpy())
    return found


def reference_accuracy(splits: dict) -> tuple[float, float]:
    """(test accuracy, chosen C) of LogisticRegressionCV fit on train + val."""
    x = np.concatenate([splits["train"][0], splits["val"][0]])
    y = np.concatenate([splits["train"][1], splits["val"][1]])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    model = LogisticRegressionCV(Cs=np.logspace(-4, 2, 13), cv=folds, max_iter=5000).fit(x, y)
    test_x, test_y = splits["test"]
    return float((model.predict(test_x) == test_y).mean()), float(model.C_[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--cache", type=Path, required=True, help="the runs' data.cache_dir")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    sets, references, rows = feature_sets(args.cache), {}, []
    for path in sorted(p for folder in args.folders for p in folder.rglob("result.json")):
        result = json.loads(path.read_text())
        probe = result.get("probe") or {}
        if result.get("status") != "ok" or not probe:
            continue
        dataset = {k: v for k, v in result["identity"].items() if k.startswith("dataset.")}
        group = (json.dumps(dataset, sort_keys=True), probe["weights_fingerprint"])
        if group not in references and {"train", "val", "test"} <= set(sets.get(group, {})):
            references[group] = reference_accuracy(sets[group])
        config = result["config"]
        reference, chosen = references.get(group, (float("nan"), float("nan")))
        rows.append({"root": config["dataset"]["root"], "preprocess": config["dataset"].get("preprocess", "squash"),
                     "crop_fraction": config["dataset"].get("crop_fraction", "model"),
                     "method": probe["method"], "cv_folds": config["freeze"].get("cv_folds"),
                     "standardize": config["freeze"].get("standardize"),
                     "l2_grid": str(config["freeze"].get("l2_grid")), "train_per_class": config["dataset"].get("train_per_class"),
                     "subset_seed": config["dataset"].get("subset_seed"), "tlbench_test": result["summary"]["final_test_acc"],
                     "tlbench_C": probe.get("C"), "sklearn_lrcv_test": reference, "sklearn_C": chosen})
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False))
    keys = ["preprocess", "crop_fraction", "method", "cv_folds", "standardize", "l2_grid", "train_per_class"]
    table["minus_reference"] = table["tlbench_test"] - table["sklearn_lrcv_test"]
    means = table.groupby(keys, dropna=False)[["tlbench_test", "sklearn_lrcv_test", "minus_reference"]].agg(
        ["mean", "sem", "count"])
    print("\nmean test accuracy over draws (%; sem: standard error over draws; minus_reference: paired):\n",
          (means * [100, 100, 1, 100, 100, 1, 100, 100, 1]).round(2).to_string())


if __name__ == "__main__":
    main()
