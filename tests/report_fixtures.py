"""Hand-made result.json files (schema_version 2, or 1 via as_schema_1) for report tests:
no training, no torch."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from tlbench.records import identity


def make_result(model="resnet18", pretrained=True, seed=0, test_acc=(0.5, 0.7, 0.8),
                val_acc=None, train_acc=None, val_loss=None, test_loss=None, train_loss=None,
                time_s=10.0, phases=None, status="ok", lr=0.001, freeze="freeze_unfreeze",
                iters_per_epoch=20, val_is_test=False, dataset_extra=None, trainable_params=None,
                **config_extra) -> dict:
    """A schema-2 result dict whose epochs follow the given per-epoch lists. val_acc defaults
    to test_acc (the val-best and test-best epochs agree unless a test says otherwise);
    val_is_test=True is a run with dataset.val_split=0, whose val is the test split.
    dataset_extra: more `dataset.*` settings (e.g. root); trainable_params: {phase: count} in
    the per-epoch history; config_extra: top-level settings such as published or defects."""
    test_acc = list(test_acc)
    n = len(test_acc)
    val_acc = list(test_acc if val_is_test or val_acc is None else val_acc)
    assert len(val_acc) == n, "one val_acc per epoch"
    train_acc = train_acc or [min(1.0, v + 0.05) for v in test_acc]
    test_loss = test_loss or [2.0 - v for v in test_acc]
    val_loss = test_loss if val_is_test else val_loss or [2.0 - v for v in val_acc]
    train_loss = train_loss or [2.0 - t for t in train_acc]
    phases = phases or ["head"] + ["all"] * (n - 1)
    params = {"head": 5130, "all": 11_181_642, **(trainable_params or {})}
    config = {
        "model": {"name": model, "source": "torchvision"},
        "dataset": {"name": "cifar10", "image_size": 32, "val_split": 0 if val_is_test else 0.1,
                    "split_seed": 0, **(dataset_extra or {})},
        "optimizer": {"name": "adam", "lr": lr, "weight_decay": 0.0},
        "schedule": {"name": "plateau"}, "freeze": {"name": freeze, "epochs": 1},
        "augment": {"flip": True, "mean": [0.5, 0.5, 0.5]},
        "epochs": n, "batch_size": 64, "seed": seed, "pretrained": pretrained,
        "device": "cpu", "results_dir": f"/tmp/out/{model}/{seed}", **config_extra,
    }
    run_id = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    epochs = [{"epoch": i + 1, "train_loss": train_loss[i], "train_acc": train_acc[i],
               "val_loss": val_loss[i], "val_acc": val_acc[i], "test_loss": test_loss[i],
               "test_acc": test_acc[i], "lr": lr, "time_s": time_s,
               "images_per_s": 1000.0 + 100 * i, "trainable_params": params[phases[i]],
               "freeze_phase": phases[i]}
              for i in range(n)]
    # Each step's loss wobbles around its epoch's train_loss, like a real noisy curve.
    iter_loss = [train_loss[k // iters_per_epoch] + 0.1 * ((k * 7919) % 13) / 13
                 for k in range(n * iters_per_epoch)]
    best = val_acc.index(max(val_acc)) if n else None  # first epoch wins a tie, as in training
    summary = {"final_val_acc": val_acc[-1], "best_val_acc": val_acc[best], "best_epoch": best + 1,
               "final_test_acc": test_acc[-1], "test_acc_at_best_val": test_acc[best],
               "final_train_acc": train_acc[-1], "final_val_loss": val_loss[-1],
               "final_test_loss": test_loss[-1], "overfit_gap": train_acc[-1] - test_acc[-1],
               "total_time_s": time_s * n} if n else None
    data_info = {"source": "torchvision", "num_classes": 10, "train_size": 45_000,
                 "val_size": 10_000 if val_is_test else 5_000, "test_size": 10_000,
                 "val_is_test": val_is_test,
                 "val_source": "test split (dataset.val_split=0)" if val_is_test
                 else "10% of train, stratified (split_seed 0)"}
    return {
        "schema_version": 2, "run_id": run_id, "status": status, "config": config,
        "model": model, "dataset": "cifar10", "pretrained": pretrained, "freeze": freeze,
        "optimizer": "adam", "schedule": "plateau", "seed": seed,
        "epochs": epochs, "iter_loss": iter_loss, "iters_per_epoch": iters_per_epoch,
        "summary": summary, "data_info": data_info,
        "env": {"python": "3.11.7", "torch": "2.3.0", "torchvision": "0.18.0", "timm": None,
                "device": "cpu", "device_name": "cpu", "git_sha": None, "hostname": "test"},
        "error": None if status == "ok" else {"type": "RuntimeError", "message": "CUDA OOM"},
    }


def published_block(writeup="A", variant="as_published", numbers=None, setting=None,
                    notes=("One run per number in the write-up: no seeds, no interval.",)) -> dict:
    """A write-up preset's `published` config block, write-up A's unless told otherwise."""
    return {
        "writeup": writeup, "title": f"write-up {writeup}", "variant": variant,
        "setting": setting or [
            {"key": "model.name", "value": "resnet18"},
            {"key": "dataset.name", "value": "cifar10"},
            {"key": "dataset.root", "value": None, "means": "torchvision's pickled CIFAR-10"}],
        "numbers": numbers or [
            {"metric": "test_acc", "epoch": 10, "pretrained": True, "value": 0.7985,
             "what": "test accuracy at epoch 10 (run on CPU)"}],
        "notes": list(notes),
    }


def defects_block(freeze_by_name=None, freeze_noop=False, sigmoid_before_loss=False) -> dict:
    """The `defects` config block; all off by default, as in conf/config.yaml."""
    return {"freeze_by_name": freeze_by_name, "freeze_noop": freeze_noop,
            "sigmoid_before_loss": sigmoid_before_loss}


def as_schema_1(result: dict) -> dict:
    """The same run as tlbench wrote it before schema 2: epochs carry only val_*, and that
    "val" was the test split (so the test curve is stored as val_*); no val_split setting."""
    old = copy.deepcopy(result)
    old["schema_version"] = 1
    old["config"]["dataset"].pop("val_split", None)
    old["config"]["dataset"].pop("split_seed", None)
    for epoch in old["epochs"]:
        epoch["val_loss"], epoch["val_acc"] = epoch.pop("test_loss"), epoch.pop("test_acc")
    info = old["data_info"]
    old["data_info"] = {"source": info["source"], "num_classes": info["num_classes"],
                        "train_size": info["train_size"], "val_size": info["test_size"]}
    if old["summary"]:
        accs = [e["val_acc"] for e in old["epochs"]]
        final = old["epochs"][-1]
        old["summary"] = {"final_val_acc": accs[-1], "best_val_acc": max(accs),
                          "best_epoch": accs.index(max(accs)) + 1,
                          "final_train_acc": final["train_acc"],
                          "final_val_loss": final["val_loss"],
                          "overfit_gap": final["train_acc"] - accs[-1],
                          "total_time_s": old["summary"]["total_time_s"]}
    return old


def write_run(folder: Path, result: dict, name: str | None = None) -> Path:
    """Write `result` as <folder>/<name or run_id>/result.json, like one Hydra job folder."""
    job_dir = Path(folder) / (name or result["run_id"])
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "result.json"
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return path


# Pretrained gains exactly 0.10, 0.12, 0.08 in final test_acc over random for seeds 0, 1, 2.
# val_acc follows test_acc, so the val-best epoch is the last one and both headlines agree.
SWEEP = [
    dict(model="resnet18", pretrained=True, seed=0, test_acc=[0.60, 0.80, 0.90, 0.92]),
    dict(model="resnet18", pretrained=True, seed=1, test_acc=[0.62, 0.82, 0.91, 0.93]),
    dict(model="resnet18", pretrained=True, seed=2, test_acc=[0.58, 0.79, 0.88, 0.89]),
    dict(model="resnet18", pretrained=False, seed=0, test_acc=[0.30, 0.55, 0.75, 0.82]),
    dict(model="resnet18", pretrained=False, seed=1, test_acc=[0.32, 0.57, 0.74, 0.81]),
    dict(model="resnet18", pretrained=False, seed=2, test_acc=[0.31, 0.60, 0.78, 0.81]),
    dict(model="mobilenet_v3_small", pretrained=True, seed=0, test_acc=[0.50, 0.70, 0.78, 0.80]),
    dict(model="mobilenet_v3_small", pretrained=False, seed=0, test_acc=[0.25, 0.45, 0.60, 0.66]),
]


def write_sweep(folder: Path, runs=SWEEP, failed: bool = True) -> Path:
    """A sweep folder with the SWEEP runs (+ one failed run); returns the folder."""
    for kwargs in runs:
        write_run(folder, make_result(**kwargs))
    if failed:
        write_run(folder, make_result(model="resnet18", pretrained=True, seed=3,
                                      test_acc=[0.4], status="failed"))
    return Path(folder)


def write_efficiency_sweep(folder: Path) -> Path:
    """A data-efficiency sweep (dataset.train_per_class=10,100,1000, 3 seeds, one setting). Random init:
    30% at 100 images, 50% at 1,000, 70% at 10,000; pretrained 60%, 75%, 80%."""
    means = {True: {10: 0.60, 100: 0.75, 1000: 0.80}, False: {10: 0.30, 100: 0.50, 1000: 0.70}}
    for pretrained, by_k in means.items():
        for k, mean in by_k.items():
            for seed, wobble in enumerate((-0.01, 0.0, 0.01)):
                result = make_result(pretrained=pretrained, seed=seed, test_acc=[mean + wobble], freeze="none",
                                     dataset_extra={"train_per_class": k})
                result["identity"] = identity.experiment(result["config"])
                result["data_info"]["train_size"] = 10 * k
                write_run(folder, result)
    return Path(folder)
