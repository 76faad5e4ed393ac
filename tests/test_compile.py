"""compile=true (issue #12): static shapes, a recompile limit sized to the freeze phases, a loud
fallback to eager, compile time kept out of the timed epochs.

These runs use torch.compile's "aot_eager" backend (compiled.BACKEND): dynamo captures, guards and
recompiles exactly as with inductor, which is what tlbench controls, without inductor's C++ build
(over a minute per graph of even a tiny model on this project's busy 2-core CPU). Graph counts come
from dynamo's own counter (compiled.compiled_graphs), never from timing."""

import json
import logging

import pytest
import torch
from conftest import TINY, run_interrupted

from tlbench.training import compiled, engine
from tlbench.data import tensor_data
from tlbench.runner.run import run

# timm's smallest ResNet, narrowed: 6 depth stages (stem, 4 layers, head), 21k parameters.
TINY_RESNET = ["pretrained=false", "model.name=test_resnet",
               "+model.kwargs={channels:[8,8,8,8],stem_width:8,stem_type:''}", "save_model=false"]


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")


def graphs_inside(monkeypatch, function_name: str) -> list[int]:
    """Wraps engine.<function_name> (train_one_epoch, evaluate): the graphs dynamo compiled during
    each call, which are the timed parts of an epoch."""
    counts, inner = [], getattr(engine, function_name)

    def counted(*args, **kwargs):
        before = compiled.compiled_graphs()
        out = inner(*args, **kwargs)
        counts.append(compiled.compiled_graphs() - before)
        return out

    monkeypatch.setattr(engine, function_name, counted)
    return counts


def test_gradual_compiles_each_phase_once_before_its_epoch_is_timed(make_cfg, tmp_path, monkeypatch, aot_eager):
    in_training, in_evaluation = graphs_inside(monkeypatch, "train_one_epoch"), graphs_inside(monkeypatch, "evaluate")
    before = compiled.compiled_graphs()
    # 48 train images in batches of 20 (8 dropped), val 16 and test 32 in eval batches of 20 (both padded)
    cfg = make_cfg(*TINY, *TINY_RESNET, "dataset.train_size=64", "dataset.test_size=32", "compile=true",
                   "freeze=gradual", "epochs=3", "batch_size=20", "eval_batch_size=20")
    # torch's default limit lowered to 4: three phases need 6 graphs, so without the raise dynamo would give up
    with torch._dynamo.config.patch({compiled.limit_setting(): 4}):
        result = run(cfg, output_dir=tmp_path / "run")
    assert result["status"] == "ok"
    info = result["compile"]
    assert compiled.compiled_graphs() - before == 6 == info["graphs_needed"] == info["recompile_limit"]
    assert [(p["epoch"], p["phase"], p["graphs"]) for p in info["phases"]] == [(1, "head", 2), (2, "top2", 2),
                                                                              (3, "top3", 2)]
    assert in_training == [0, 0, 0] and in_evaluation == [0] * 6, "a graph compiled inside a timed epoch"
    assert info["graphs_in_timed_epochs"] == 0 and info["fell_back_to_eager"] is False
    assert info["fallback_reason"] is None
    assert all(p["compile_s"] > 0 for p in info["phases"])
    assert info["compile_s"] == pytest.approx(sum(p["compile_s"] for p in info["phases"]))
    assert [e["compile_s"] for e in result["epochs"]] == [p["compile_s"] for p in info["phases"]]
    # the partial last training batch is dropped and recorded; every val and test image is scored
    assert result["iters_per_epoch"] == 2 and len(result["iter_loss"]) == 6
    assert info["dropped_train_images"] == 8 and [e["train_images"] for e in result["epochs"]] == [40] * 3
    for epoch in result["epochs"]:  # counted over all 32 test and 16 val images, none of the padding
        assert (epoch["test_acc"] * 32) == pytest.approx(round(epoch["test_acc"] * 32), abs=1e-9)
        assert (epoch["val_acc"] * 16) == pytest.approx(round(epoch["val_acc"] * 16), abs=1e-9)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["compile"] == info


def test_a_compiled_run_gives_the_eager_metrics(make_cfg, tmp_path, aot_eager):
    # 96 train images in batches of 32: nothing dropped, so both runs train on the same batches;
    # the test split's 64 images in eval batches of 40: compiled pads the last one, eager runs it short
    common = [*TINY, *TINY_RESNET, "freeze=freeze_unfreeze", "freeze.epochs=1", "eval_batch_size=40",
              "test_shift.corruptions=[contrast]", "test_shift.severities=[5]", "test_shift.images=16"]
    eager = run(make_cfg(*common), output_dir=tmp_path / "eager")
    fast = run(make_cfg(*common, "compile=true"), output_dir=tmp_path / "compiled")
    assert eager["compile"] is None and fast["compile"]["graphs_in_timed_epochs"] == 0
    assert fast["test_shift"]["acc"] == eager["test_shift"]["acc"]  # scored on the split inside the static batches
    assert [e["freeze_phase"] for e in fast["epochs"]] == ["head", "all"]
    assert fast["iter_loss"] == pytest.approx(eager["iter_loss"], abs=1e-4)
    for ours, theirs in zip(fast["epochs"], eager["epochs"]):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-4), key
        for key in ("train_acc", "val_acc", "test_acc"):
            assert ours[key] == theirs[key], key
        assert ours["train_images"] == theirs["train_images"] == 96


def test_hitting_the_recompile_limit_falls_back_to_eager_loudly(make_cfg, tmp_path, monkeypatch, caplog, aot_eager):
    monkeypatch.setattr(compiled, "graphs_needed", lambda freeze, epochs: 1)  # train and eval need 2
    cfg = make_cfg(*TINY, *TINY_RESNET, "compile=true", "epochs=1")
    with torch._dynamo.config.patch({compiled.limit_setting(): 1}), caplog.at_level(logging.WARNING, logger="tlbench"):
        result = run(cfg, output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["epochs"][0]["test_acc"] is not None
    info = json.loads((tmp_path / "run" / "result.json").read_text())["compile"]
    assert info["fell_back_to_eager"] is True and "recompile" in info["fallback_reason"].lower()
    assert any("EAGERLY" in record.getMessage() for record in caplog.records)


@pytest.mark.e2e  # two trainings and a resume, ~9 s: the default command's budget (issue 22 session 34)
def test_a_resumed_compiled_run_warms_up_again_and_keeps_the_earlier_warm_ups(make_cfg, tmp_path, monkeypatch,
                                                                               aot_eager):
    overrides = [*TINY, *TINY_RESNET, "compile=true", "freeze=freeze_unfreeze", "freeze.epochs=1", "epochs=3"]
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "run", 2)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "run")  # epoch 3: mid-phase, in a new process state
    info = resumed["compile"]
    assert resumed["status"] == "ok" and [p["epoch"] for p in info["phases"]] == [1, 2, 3]
    assert [p["phase"] for p in info["phases"]] == ["head", "all", "all"] and info["graphs_in_timed_epochs"] == 0
    assert [e["compile_s"] > 0 for e in resumed["epochs"]] == [True, True, True]


def test_static_batches_drop_the_short_training_batch_and_pad_evaluation_exactly():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 4))
    split = tensor_data.CachedSplit(torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8),
                                    torch.randint(0, 4, (37,)), None, False)
    cpu = torch.device("cpu")
    transform = tensor_data.BatchTransform(8, 8, (0.5,) * 3, (0.25,) * 3, train=False)
    plain = tensor_data.DeviceBatches(split, 8, transform, cpu, False, 0, 2**30)
    train = compiled.StaticBatches(plain, 8, 37, train=True)
    assert len(train) == 4 == len(list(train)) and train.dropped == 5 and train.generators == list(plain.generators)
    padded = compiled.StaticBatches(plain, 8, 37, train=False)
    assert [len(labels) for _, labels in padded] == [8] * 5
    options = engine.TrainOptions(epochs=1)
    loss, acc, mean_class_acc = engine.evaluate(model, padded, cpu, options)
    plain_loss, plain_acc, plain_mean_class_acc = engine.evaluate(model, plain, cpu, options)
    assert acc == plain_acc and mean_class_acc == plain_mean_class_acc and loss == pytest.approx(plain_loss, rel=1e-6)
    with pytest.raises(Exception, match="batch_size=64"):
        compiled.StaticBatches(plain, 64, 37, train=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (inductor on this CPU: about a minute per phase)")
def test_inductor_on_cuda_gives_the_eager_metrics(make_cfg, tmp_path):
    common = [*TINY, *TINY_RESNET, "device=cuda", "amp=false", "channels_last=false", "deterministic=true",
              "freeze=freeze_unfreeze", "freeze.epochs=1", "eval_batch_size=40"]
    eager = run(make_cfg(*common), output_dir=tmp_path / "eager")
    fast = run(make_cfg(*common, "compile=true"), output_dir=tmp_path / "compiled")
    info = fast["compile"]
    assert info["backend"] == "inductor" and info["graphs_in_timed_epochs"] == 0 and not info["fell_back_to_eager"]
    for ours, theirs in zip(fast["epochs"], eager["epochs"]):  # fused kernels round differently: a looser bound
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ours[key] == pytest.approx(theirs[key], abs=1e-2), key
        assert abs(ours["test_acc"] - theirs["test_acc"]) <= 2 / 64 + 1e-9
