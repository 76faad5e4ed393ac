"""The LR finder (tlbench/lr_find.py): fastai's rules, exact restoration, and optimizer.lr=find in a run."""

import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import TINY, run_interrupted
from torch import nn

from tlbench.runner import lr_find as lr_find_command
from tlbench.training import engine, lr_find
from tlbench.runner import settings
from tlbench.errors import ConfigError
from tlbench.runner.run import run

# test_resnet (timm, 0.37 M parameters, BatchNorm) trains ~10x faster than resnet18 on this CPU;
# one thread, since the CPUs may be shared. 60 ramp steps keep the curve's shape at half the cost.
SMALL = [*TINY, "model.name=test_resnet", "pretrained=false", "threads=1", "lr_find.steps=60"]


pytestmark = pytest.mark.usefixtures("one_thread")


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))


def separable_loader(seed=0):
    """Two classes told apart by the mean brightness of the image."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(64) % 2
    images = torch.randn(64, 3, 8, 8, generator=generator) + (2 * labels - 1).view(-1, 1, 1, 1) * 0.5
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=16, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def snapshot(model, optimizer, loader):
    return {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "optimizer": json.dumps(optimizer.state_dict()["param_groups"]),
            "state": {i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
                      for i, s in optimizer.state_dict()["state"].items()},
            "modes": [m.training for m in model.modules()], "grads": [p.grad is None for p in model.parameters()],
            "rng": (random.random(), float(np.random.rand()), torch.rand(3), loader.generator.get_state())}


def assert_bit_identical(before, after):
    assert before["model"].keys() == after["model"].keys()
    for key, value in before["model"].items():  # weights and BN running_mean / running_var / num_batches_tracked
        assert torch.equal(value, after["model"][key]), key
    assert before["optimizer"] == after["optimizer"]  # lrs, base_lrs, betas, weight decay
    assert before["state"].keys() == after["state"].keys()
    for index, state in before["state"].items():
        for key, value in state.items():
            assert torch.equal(value, after["state"][index][key]) if torch.is_tensor(value) else \
                value == after["state"][index][key], (index, key)
    assert before["modes"] == after["modes"] and before["grads"] == after["grads"]
    assert before["rng"][:2] == after["rng"][:2]
    assert torch.equal(before["rng"][2], after["rng"][2]) and torch.equal(before["rng"][3], after["rng"][3])


def test_the_finder_restores_weights_optimizer_state_bn_statistics_and_rng_bit_for_bit():
    torch.manual_seed(0)
    model, loader = small_cnn(), separable_loader()
    optimizer = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-3, "base_lr": 1e-3}])
    for images, labels in loader:  # some Adam state and moved BN statistics to restore
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()  # a mode the finder must put back (it trains in train mode)
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    before = snapshot(model, optimizer, loader)  # draws the next random numbers, then puts the states back:
    random.setstate(rng[0]), np.random.set_state(rng[1]), torch.set_rng_state(rng[2])  # after must draw the same

    curve = lr_find.find_lr(model, optimizer, loader, torch.device("cpu"), engine.TrainOptions(epochs=1),
                            settings.LrFind(steps=30))
    assert len(curve.lrs) >= 10 and curve.losses[0] != curve.losses[-1]  # it did train
    assert_bit_identical(before, snapshot(model, optimizer, loader))


def test_the_loss_is_smoothed_as_fastai_smooths_it_with_bias_correction():
    assert lr_find.smoothed([2.0, 2.0, 2.0], beta=0.98) == pytest.approx([2.0, 2.0, 2.0])
    # by hand: (0.02 * 1) / 0.02 = 1; (0.98 * 0.02 + 0.02 * 3) / (1 - 0.98 ** 2) = 0.0796 / 0.0396
    assert lr_find.smoothed([1.0, 3.0], beta=0.98) == pytest.approx([1.0, 0.0796 / 0.0396])


def test_the_valley_rule_picks_halfway_along_the_longest_decreasing_run():
    # 20 low, rising points (each below the valley: no decreasing run through them), then a valley
    # of 30 points from 2.0 down to 0.5 (indices 20-49), then a climb. fastai's rule: the valley
    # ends at 49 with length 30, starts at 49 - 30 = 19, span 30: index 19 + 10 + 5 = 34.
    losses = [0.1 + 0.005 * i for i in range(20)] + list(np.linspace(2.0, 0.5, 30)) + [3.0 + i for i in range(10)]
    assert lr_find.valley(losses) == 34
    lrs = [10 ** (-7 + 8 * i / 59) for i in range(60)]
    curve = lr_find.Curve(lrs=lrs, losses=losses, raw_losses=losses)
    # suggest() first leaves out steps // 10 = 6 points and the last 5, as fastai does: the same point
    suggestion = lr_find.suggest(curve, steps=60)
    assert suggestion.index == 34 and suggestion.lr == lrs[34] and suggestion.loss == losses[34]
    assert lr_find.valley([3.0, 2.0]) == 0  # fastai's index would be -1, i.e. the last point
    with pytest.raises(ConfigError, match="too few"):
        lr_find.suggest(lr_find.Curve(lrs=lrs[:8], losses=losses[:8], raw_losses=losses[:8], stopped="x"), steps=60)


@pytest.mark.parametrize("lr", ["fnd", "-1", "0", "null", "true", "inf"])
def test_a_bad_optimizer_lr_fails_before_training_naming_the_choices(make_cfg, tmp_path, lr):
    with pytest.raises(ConfigError, match=r"optimizer\.lr=.* must be a positive number \(e\.g\. 1e-3\) or find"):
        run(make_cfg(*SMALL, f"optimizer.lr={lr}"), output_dir=tmp_path / "run")
    failed = json.loads((tmp_path / "run" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["epochs"] == [] and failed["model_info"] is None


def test_bad_finder_settings_fail_before_training(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="lr_find.start_lr"):
        run(make_cfg(*SMALL, "optimizer.lr=find", "lr_find.start_lr=20"), output_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="lr_find does not take"):
        run(make_cfg(*SMALL, "+lr_find.num_it=5"), output_dir=tmp_path / "b")


def test_lr_find_runs_before_training_and_the_run_trains_exactly_as_with_that_lr(make_cfg, tmp_path, capsys):
    # The standalone tool on the same overrides measures the same curve (same builders, same seed).
    assert lr_find_command.main([*SMALL, f"results_dir={tmp_path / 'results'}", f"data_dir={tmp_path / 'data'}",
                         "--out", str(tmp_path / "tool")]) == 0
    printed = capsys.readouterr().out
    tool = json.loads((tmp_path / "tool" / "all.json").read_text())
    assert f"optimizer.lr={tool['lr']:.3g}" in printed and (tmp_path / "tool" / "all.png").stat().st_size > 10_000

    found = run(make_cfg(*SMALL, "optimizer.lr=find"), output_dir=tmp_path / "find")
    on_disk = json.loads((tmp_path / "find" / "result.json").read_text())
    (entry,) = on_disk["lr_find"]
    assert entry["phase"] == "all" and entry["before_epoch"] == 1 and entry["rule"] == "valley"
    assert (tmp_path / "find" / "lr_find" / "all.png").is_file() and entry["curve"] == "lr_find/all.png"
    curve = json.loads((tmp_path / "find" / "lr_find" / "all.json").read_text())
    assert curve["lrs"] == tool["lrs"] and curve["losses"] == tool["losses"] and entry["lr"] == tool["lr"]
    assert entry["steps"] == len(curve["lrs"]) and entry["group_lrs"] == [entry["lr"]] * len(entry["group_lrs"])

    # Where the loss decreases (measured 2026-11-25: the raw loss leaves ln 4 near 1e-4, the
    # smoothed loss bottoms out near 0.1; the valley rule gave 3e-4 at 100 steps, 5e-4 at 60).
    lrs, losses = curve["lrs"], curve["losses"]
    assert 1e-4 < entry["lr"] < lrs[int(np.argmin(losses))] < 1
    assert curve["losses"][curve["suggestion"]["index"]] < losses[0]

    # Training afterwards is exactly a run with optimizer.lr set to the found value: the finder
    # left the weights, BN statistics and every random state (data order included) as they were.
    fixed = run(make_cfg(*SMALL, f"optimizer.lr={entry['lr']!r}"), output_dir=tmp_path / "fixed")
    assert found["iter_loss"] == fixed["iter_loss"] and "lr_find" not in fixed
    assert [e["lr"] for e in found["epochs"]] == [e["lr"] for e in fixed["epochs"]]
    assert fixed["iter_loss"][-1] < math.log(4)  # it learns at that lr


@pytest.mark.e2e  # two LR-finder ramps and a training, ~8 s: the default command's budget
def test_freeze_unfreeze_finds_one_lr_per_phase_the_second_at_the_unfreeze(make_cfg, tmp_path, monkeypatch):
    overrides = [*SMALL, "optimizer.lr=find", "freeze=freeze_unfreeze", "freeze.epochs=1"]
    result = run(make_cfg(*overrides), output_dir=tmp_path / "run")
    head, after = result["lr_find"]
    assert (head["phase"], head["before_epoch"], after["phase"], after["before_epoch"]) == ("head", 1, "all", 2)
    for entry in (head, after):
        assert (tmp_path / "run" / "lr_find" / f"{entry['phase']}.png").is_file()
    # the backbone keeps freeze.backbone_lr_ratio (0.1) of the head's lr after unfreezing
    assert sorted(set(after["group_lrs"])) == pytest.approx(sorted({0.1 * after["lr"], after["lr"]}))
    assert [e["freeze_phase"] for e in result["epochs"]] == ["head", "all"]
    # measured from the state the run is in at the unfreeze: the zero-initialised head makes the
    # first loss exactly ln 4 from the starting weights, in any phase; after the head epoch it is lower
    first = {e["phase"]: json.loads((tmp_path / "run" / "lr_find" / f"{e['phase']}.json").read_text())["raw_losses"][0]
             for e in (head, after)}
    assert first["head"] == pytest.approx(math.log(4), abs=1e-5) and first["all"] < math.log(4) - 1e-3

    # Stopped after the head epoch and resumed: the head phase keeps its recorded lr (not measured
    # again from the restored weights), the unfreeze measures the same curve, training is the same.
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 1)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert resumed["resumes"] and resumed["lr_find"] == result["lr_find"]
    assert resumed["iter_loss"] == result["iter_loss"]
