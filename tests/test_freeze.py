"""Freeze logic, proved on real training: frozen weights and BatchNorm statistics do not move by
one bit, the head does, the optimizer holds exactly the trainable set, and counts are recorded."""

import pytest
import torch
from conftest import TINY

from tlbench import engine, freeze, models, optim, run, schedules


def train_with_snapshots(make_cfg, *overrides):
    """Runs the shared core on a composed config; returns (model, head names, history, snapshots)."""
    cfg = make_cfg(*TINY, "pretrained=false", *overrides)
    splits, built = run.prepare(cfg)
    loaders = run.make_loaders(cfg, splits, built, torch.device("cpu"))
    train_loader, val_loader = loaders["train"], loaders["val"]
    snapshots = [{k: v.clone() for k, v in built.model.state_dict().items()}]

    def snapshot(record):
        snapshots.append({k: v.clone() for k, v in built.model.state_dict().items()})

    strategy = freeze.build_freeze(stages=built.stages, total_epochs=cfg.epochs, **cfg.freeze)
    history = engine.fit(built.model, train_loader, val_loader, strategy, optim.OptimizerFactory(**cfg.optimizer),
                         schedules.build_schedule(epochs=cfg.epochs, steps_per_epoch=len(train_loader), **cfg.schedule),
                         torch.device("cpu"), engine.TrainOptions(epochs=cfg.epochs), on_epoch_end=snapshot)
    return built, history, snapshots


def changed(before, after, names):
    return {n for n in names if not torch.equal(before[n], after[n])}


@pytest.mark.parametrize("model", ["resnet18", "efficientnet_b0"])
def test_freeze_unfreeze_keeps_backbone_and_bn_stats_bit_identical_then_trains_them(make_cfg, model):
    built, history, snaps = train_with_snapshots(
        make_cfg, f"model={model}", "freeze=freeze_unfreeze", "freeze.epochs=1",
        "optimizer=adamw", "optimizer.weight_decay=0.5")  # heavy decay: it would move frozen weights
    head = set(built.head_params)
    body_state = [k for k in snaps[0] if not any(k == h or k.startswith(h.rsplit(".", 1)[0] + ".") for h in head)]
    assert any("running_mean" in k for k in body_state)
    assert changed(snaps[0], snaps[1], body_state) == set(), "frozen weights or BN statistics moved"
    assert changed(snaps[0], snaps[1], head) == head
    assert changed(snaps[1], snaps[2], body_state), "the backbone did not train after unfreezing"
    phases = [e["freeze_phase"] for e in history.epochs]
    counts = [e["trainable_params"] for e in history.epochs]
    assert phases == ["head", "all"]
    assert counts == [sum(built.model.get_parameter(n).numel() for n in head), models.count_params(built.model)]


@pytest.mark.parametrize("source, head", [("timm", ["classifier.weight", "classifier.bias"]),
                                          ("torchvision", ["classifier.1.weight", "classifier.1.bias"])])
def test_efficientnet_head_phase_trains_exactly_the_classifier(make_cfg, source, head):
    """Write-up B froze every name lacking 'fc': its head, while the SE layers (fc1/fc2) trained."""
    cfg = make_cfg("model=efficientnet_b0", f"model.source={source}", "pretrained=false")
    built = models.build_model(num_classes=10, pretrained=False, weights_dir=None, **cfg.model)
    phase = freeze.LinearProbe(built.stages, train_bn=False).phase(0)
    assert sorted(phase.trainable) == sorted(head)
    trainable = freeze.apply_phase(built.model, phase)
    assert trainable == 1280 * 10 + 10
    assert {n for n, p in built.model.named_parameters() if p.requires_grad} == set(head)
    squeeze_excitation = [n for n, _ in built.model.named_parameters() if ".fc1." in n or ".se." in n]
    assert squeeze_excitation and not any(built.model.get_parameter(n).requires_grad for n in squeeze_excitation)
    optimizer = optim.OptimizerFactory("adam", lr=1e-3, weight_decay=1e-4).build(built.model, phase)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in built.model.parameters() if p.requires_grad}


def test_linear_probe_with_train_bn_lets_running_stats_move(make_cfg):
    built, _, snaps = train_with_snapshots(make_cfg, "model=resnet18", "freeze=linear_probe", "freeze.train_bn=true",
                                           "epochs=1")
    assert changed(snaps[0], snaps[1], ["bn1.running_mean"]) == {"bn1.running_mean"}
    assert changed(snaps[0], snaps[1], ["conv1.weight", "bn1.weight"]) == set()


def test_gradual_opens_one_stage_per_epoch_from_the_top():
    stages = [["stem"], ["mid"], ["top"], ["head"]]
    strategy = freeze.Gradual(stages, train_bn=False, epochs_per_stage=2)
    opened = [sorted(strategy.phase(e).trainable) for e in range(8)]
    assert opened[0] == opened[1] == ["head"]
    assert opened[2] == ["head", "top"]
    assert opened[4] == ["head", "mid", "top"]
    assert strategy.phase(6).name == "all" and len(opened[7]) == 4


def test_layer_decay_scales_lr_by_depth():
    stages = [["stem"], ["mid"], ["head"]]
    phase = freeze.LayerDecay(stages, train_bn=True, decay=0.5).phase(0)
    model = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.zeros(1)) for n in ("stem", "mid", "head")})
    groups = optim.OptimizerFactory("sgd", lr=0.1).build(model, phase).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.025, 0.05, 0.1])


def test_freeze_unfreeze_sets_backbone_lr_after_unfreezing():
    strategy = freeze.FreezeUnfreeze([["body"], ["head"]], False, epochs=2, backbone_lr=None, backbone_lr_ratio=0.1)
    model = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.zeros(1)) for n in ("body", "head")})
    factory = optim.OptimizerFactory("adam", lr=1e-3)
    assert [g["lr"] for g in factory.build(model, strategy.phase(1)).param_groups] == [1e-3]
    assert [g["lr"] for g in factory.build(model, strategy.phase(2)).param_groups] == pytest.approx([1e-4, 1e-3])


def test_bn_eval_keeps_every_batchnorm_statistic_fixed_while_all_weights_train(make_cfg):
    built, history, snaps = train_with_snapshots(make_cfg, "freeze=freeze_unfreeze", "freeze.epochs=1",
                                                 "freeze.bn_eval=true")
    stats = [k for k in snaps[0] if k.endswith(("running_mean", "running_var"))]
    weights = [k for k, _ in built.model.named_parameters()]
    assert [e["freeze_phase"] for e in history.epochs] == ["head", "all"]
    assert changed(snaps[0], snaps[2], stats) == set(), "a BatchNorm statistic moved under bn_eval"
    assert changed(snaps[1], snaps[2], weights) == set(weights), "after unfreezing every weight must train"


@pytest.mark.parametrize("overrides, head_lr", [(["freeze=linear_probe", "optimizer.lr=1e-3"], 1e-2),
                                                (["freeze=linear_probe", "freeze.head_lr_ratio=1"], 1e-3),
                                                (["experiment=seed_resnet18_food20"], 5e-3)])
def test_a_linear_probe_trains_its_head_at_head_lr_ratio_times_lr(make_cfg, overrides, head_lr):
    cfg = make_cfg(*overrides)
    built = models.build_model(num_classes=3, pretrained=False, **cfg.model)
    strategy = freeze.build_freeze(stages=built.stages, total_epochs=cfg.epochs, **cfg.freeze)
    optimizer = optim.OptimizerFactory(**cfg.optimizer).build(built.model, strategy.phase(0))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([head_lr] * len(optimizer.param_groups))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for n, p in built.model.named_parameters() if n in set(built.head_params))
