"""Validation apart from test: the val split is held out of train (never the test split unless
asked with dataset.val_split=0), and everything that selects reads val only."""

import json

import pytest
import safetensors.torch
import torch

from conftest import TINY
from tlbench import data
from tlbench.training import engine
from tlbench.runner.run import run


def sample_ids(dataset) -> set:
    """Identifies each image of a split by its pixels (in-memory sets) or its file (folders)."""
    if isinstance(dataset, data.TensorImages):
        return {hash(image.numpy().tobytes()) for image in dataset.images}
    if hasattr(dataset, "samples"):
        return {path for path, _ in dataset.samples}
    return {dataset.dataset.samples[i][0] for i in dataset.indices}


@pytest.mark.parametrize("name, kwargs", [
    ("synthetic", dict(train_size=200, test_size=40)),
    ("digits", {}),
    ("imagefolder", None),
])
def test_val_is_held_out_of_train_stratified_and_fixed(name, kwargs, image_tree):
    kwargs = dict(root=image_tree, image_size=32) if kwargs is None else kwargs
    splits = data.build_dataset(name, val_split=0.25, split_seed=0, **kwargs)
    assert not splits.val_is_test and splits.val is not splits.test
    train, val, test = (sample_ids(s) for s in (splits.train, splits.val, splits.test))
    assert val and not val & train and not val & test, "val must be its own images"
    assert sorted(set(data.targets_of(splits.val))) == sorted(set(data.targets_of(splits.train)))
    again = data.build_dataset(name, val_split=0.25, split_seed=0, **kwargs)
    assert sample_ids(again.val) == val, "the held-out images must not depend on anything but split_seed"
    other = data.build_dataset(name, val_split=0.25, split_seed=1, **kwargs)
    assert name == "imagefolder" or sample_ids(other.val) != val  # 6 images: seed 1 may draw the same


def test_val_is_test_only_when_asked_and_the_run_says_so(make_cfg, tmp_path):
    held_out = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=tmp_path / "a")
    assert held_out["data_info"]["val_is_test"] is False
    asked = run(make_cfg(*TINY, "pretrained=false", "epochs=1", "dataset.val_split=0"), output_dir=tmp_path / "b")
    info = asked["data_info"]
    assert info["val_is_test"] is True and info["val_size"] == info["test_size"] == 64
    assert "dataset.val_split=0" in info["val_source"]
    epoch = asked["epochs"][0]
    assert (epoch["val_acc"], epoch["val_loss"]) == (epoch["test_acc"], epoch["test_loss"])


def test_best_epoch_best_pt_and_plateau_read_val_even_when_test_disagrees(make_cfg, tmp_path, monkeypatch):
    """Scripted evaluation: val peaks at epoch 2, test rises but for epoch 2. Every selection must
    follow val: best_epoch, best.pt (the weights after epoch 2), and the plateau rule."""
    scripted = {"val": iter([(1.0, 0.50), (0.5, 0.90), (0.9, 0.60), (0.8, 0.70)]),
                "test": iter([(0.2, 0.95), (0.9, 0.40), (0.1, 0.97), (0.1, 0.98)])}
    snapshots = []
    real_fit = engine.fit

    def fit(model, train_loader, val_loader, *args, test_loader=None, on_epoch_end=None, **kwargs):
        assert test_loader is not None and test_loader is not val_loader
        names = {id(val_loader): "val", id(test_loader): "test"}
        # (loss, top-1, mean per-class): synthetic's metric is top1, so the per-class value must select nothing
        monkeypatch.setattr(engine, "evaluate", lambda m, loader, d, o: (*next(scripted[names[id(loader)]]), 0.5))

        def record(epoch_record):
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
            on_epoch_end(epoch_record)
        return real_fit(model, train_loader, val_loader, *args, test_loader=test_loader, on_epoch_end=record, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    result = run(make_cfg(*TINY, "pretrained=false", "epochs=4", "save_best=true", "schedule=plateau",
                          "schedule.monitor=val_acc", "schedule.patience=0"), output_dir=tmp_path / "run")
    summary = result["summary"]
    assert (summary["best_epoch"], summary["best_val_acc"], summary["test_acc_at_best_val"]) == (2, 0.90, 0.40)
    assert summary["final_test_acc"] == 0.98
    best = safetensors.torch.load_file(tmp_path / "run" / "best.safetensors")
    assert all(torch.equal(best[k], snapshots[1][k]) for k in best), "best is not the val-best epoch's weights"
    assert json.loads((tmp_path / "run" / "best.json").read_text())["epoch"] == 2
    # plateau on val_acc, patience 0: val falls after epoch 3, so epoch 4 runs at half the lr; had it
    # read test (which falls after epoch 2), epoch 3 would have been halved instead
    lrs = [e["lr"] for e in result["epochs"]]
    assert lrs[2] == lrs[1] and lrs[3] == pytest.approx(lrs[2] * 0.5)
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["summary"] == summary
