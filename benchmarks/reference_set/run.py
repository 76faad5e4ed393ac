"""Behaviour-unchanged check for refactors (issue 21 item 8): trains a fixed reference set with
threads=1 and deterministic=true and writes {name: {run_id, summary, epochs}} as JSON, or compares
two such files.

    python benchmarks/reference_set/run.py record OUT.json      # in a worktree of the commit to record
    python benchmarks/reference_set/run.py compare A.json B.json

The set: quick start (digits, real lite0 weights from the `offline` extra) pretrained and random
init, freeze_unfreeze, gradual, layer_decay, logreg, knn, bitfit, lora, a run killed after its
first epoch then resumed, and a write-up preset (its protocol on synthetic data: no network here).
Two epochs each, digits at 32 px, so the whole set takes a few minutes on one CPU thread."""

import importlib
import json
import math
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from tlbench.configs import CONFIG_NAME, config_dir

SMALL = ["epochs=2", "dataset.image_size=32", "threads=1", "deterministic=true", "checkpoint_every_s=0",
         "save_model=false"]
QUICK = ["experiment=quickstart", *SMALL]
SET = {
    "quickstart_pretrained": QUICK,
    "quickstart_random_init": [*QUICK, "pretrained=false"],
    "freeze_unfreeze": [*QUICK, "freeze=freeze_unfreeze", "freeze.epochs=1"],
    "gradual": [*QUICK, "freeze=gradual"],
    "layer_decay": [*QUICK, "freeze=layer_decay"],
    "logreg": [*QUICK, "freeze=logreg"],
    "knn": [*QUICK, "freeze=knn"],
    "bitfit": [*QUICK, "freeze=bitfit"],
    "lora": [*QUICK, "freeze=lora"],
    "resumed_after_kill": QUICK,  # same command: trained again after a kill, must equal quickstart_pretrained
    "writeup_preset": ["experiment=seed_resnet18_cifar10_fixed", "dataset=synthetic", "model.name=resnet18",
                       "pretrained=false", "batch_size=32", "freeze.epochs=1", *SMALL],
}
EPOCH_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def _module(*names):
    """The first of `names` (the module's home after and before the regrouping) that this checkout
    has: an editable install elsewhere may answer for a name this tree lacks, so the file must be
    under the `tlbench` package that was imported."""
    import tlbench

    home = Path(tlbench.__file__).parent
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if Path(module.__file__).is_relative_to(home):
            return module
    raise ImportError(f"none of {names} in {home}")


def _compose(overrides, root: Path):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=[f"results_dir={root / 'results'}", f"data_dir={root / 'data'}",
                                               f"weights_dir={root / 'weights'}", *overrides])


def _killed_then_resumed(run, cfg, folder: Path) -> dict:
    engine = _module("tlbench.training.engine", "tlbench.engine")
    save = engine.checkpoint.save

    def save_then_stop(state, path):
        save(state, path)
        raise KeyboardInterrupt

    engine.checkpoint.save = save_then_stop
    try:
        run(cfg, output_dir=folder)
    except KeyboardInterrupt:
        pass
    finally:
        engine.checkpoint.save = save
    return run(cfg, output_dir=folder)


def record(out: Path) -> None:
    run = _module("tlbench.runner.run", "tlbench.run").run
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in SET.items():
            cfg = _compose(overrides, Path(tmp))
            folder = Path(tmp) / name
            result = _killed_then_resumed(run, cfg, folder) if name == "resumed_after_kill" else run(cfg, folder)
            found[name] = {"run_id": result["run_id"],
                           "summary": {k: v for k, v in result["summary"].items() if "time_s" not in k},
                           "epochs": [{k: e.get(k) for k in EPOCH_FIELDS} for e in result["epochs"]],
                           "resumes": len(result.get("resumes", []))}
            print(name, result["run_id"], result["summary"]["final_test_acc"], flush=True)
    out.write_text(json.dumps(found, indent=1, sort_keys=True))


def compare(a: Path, b: Path) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for name in sorted(set(left) | set(right)):
        if left.get(name) == right.get(name):
            print(f"{name}: identical")
            continue
        bad += 1
        one, two = left.get(name) or {}, right.get(name) or {}
        for key in ("run_id", "resumes"):
            if one.get(key) != two.get(key):
                print(f"{name}: {key} {one.get(key)} != {two.get(key)}")
        for x, y in zip(one.get("epochs", []), two.get("epochs", [])):
            worst = max((abs(x[k] - y[k]) for k in EPOCH_FIELDS if x.get(k) is not None and y.get(k) is not None
                         and not (math.isnan(x[k]) and math.isnan(y[k]))), default=0.0)
            print(f"{name}: epoch max |diff| {worst:.3g}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
