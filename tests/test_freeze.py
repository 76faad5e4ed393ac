"""Freeze logic, proved on real training: frozen weights and BatchNorm statistics do not move by
one bit, the head does, the optimizer holds exactly the trainable set, and counts are recorded."""

import pytest
import torch
from conftest import TINY

from tlbench.training import engine, freeze, optim, schedules
from tlbench import models
from tlbench.runner import run
from tlbench.errors import ConfigError
from tlbench import specs
from tlbench.runner import build


def train_with_snapshots(make_cfg, *overrides):
    """Runs the shared core on a composed config; returns (model, head names, history, snapshots)."""
    cfg = make_cfg(*TINY, "pretrained=false", *overrides)
    splits, built = build.prepare(cfg)
    loaders = build.make_loaders(cfg, splits, built, torch.device("cpu"))
    train_loader, val_loader = loaders["train"], loaders["val"]
    snapshots = [{k: v.clone() for k, v in built.model.state_dict().items()}]

    def snapshot(record):
        snapshots.append({k: v.clone() for k, v in built.model.state_dict().items()})

    strategy = freeze.build_freeze(stages=built.stages, total_epochs=cfg.epochs, **cfg.freeze,
                                   input_size=splits.image_size)
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
    phase = freeze.LinearProbe(built.stages, specs.LinearProbeSettings(train_bn=False), input_size=224).phase(0)
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
    strategy = freeze.Gradual(stages, specs.GradualSettings(train_bn=False, epochs_per_stage=2))
    opened = [sorted(strategy.phase(e).trainable) for e in range(8)]
    assert opened[0] == opened[1] == ["head"]
    assert opened[2] == ["head", "top"]
    assert opened[4] == ["head", "mid", "top"]
    assert strategy.phase(6).name == "all" and len(opened[7]) == 4


def test_layer_decay_scales_lr_by_depth():
    stages = [["stem"], ["mid"], ["head"]]
    phase = freeze.LayerDecay(stages, specs.LayerDecaySettings(train_bn=True, decay=0.5)).phase(0)
    model = torch.nn.ParameterDict({n: torch.nn.Parameter(torch.zeros(1)) for n in ("stem", "mid", "head")})
    groups = optim.OptimizerFactory("sgd", lr=0.1).build(model, phase).param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.025, 0.05, 0.1])


def test_freeze_unfreeze_sets_backbone_lr_after_unfreezing():
    strategy = freeze.FreezeUnfreeze([["body"], ["head"]], specs.FreezeUnfreezeSettings(epochs=2, backbone_lr=None, backbone_lr_ratio=0.1))
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


@pytest.mark.parametrize("overrides, input_size, head_lr", [
    (["freeze=linear_probe", "optimizer.lr=1e-3"], 32, 1e-2),   # auto: 10 x lr for inputs under 64 px
    (["freeze=linear_probe", "optimizer.lr=1e-3"], 64, 1e-3),   # ... and 1 x lr from there
    (["freeze=linear_probe", "freeze.head_lr_ratio=10"], 224, 1e-2),
    (["freeze=linear_probe", "freeze.head_lr_ratio=1"], 32, 1e-3),
    (["experiment=seed_resnet18_food20"], 224, 5e-3)])
def test_a_linear_probe_trains_its_head_at_head_lr_ratio_times_lr(make_cfg, overrides, input_size, head_lr):
    cfg = make_cfg(*overrides)
    built = models.build_model(num_classes=3, pretrained=False, **cfg.model)
    strategy = freeze.build_freeze(stages=built.stages, total_epochs=cfg.epochs, **cfg.freeze, input_size=input_size)
    optimizer = optim.OptimizerFactory(**cfg.optimizer).build(built.model, strategy.phase(0))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([head_lr] * len(optimizer.param_groups))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == \
        sum(p.numel() for n, p in built.model.named_parameters() if n in set(built.head_params))


# ---------------------------------------------------------------- the write-ups' freeze code, as published

def writeup_b_preset(make_cfg, *overrides):
    """Write-up B's presets on 10-class synthetic data (CIFAR-10 is not needed to count parameters)."""
    return make_cfg(*overrides, "dataset=synthetic", "dataset.num_classes=10", "pretrained=false", "epochs=2",
                    "freeze.epochs=1", "dataset.train_size=40", "dataset.test_size=20")


@pytest.mark.parametrize("experiment, frozen_phase_trainable", [
    ("seed_efficientnet_b0_cifar10", 636_540),      # the SE layers fc1/fc2; the head classifier.1 frozen
    ("seed_efficientnet_b0_cifar10_fixed", 12_810),  # the head: 1280 x 10 + 10
])
def test_writeup_b_as_published_trains_the_se_layers_and_freezes_its_head(make_cfg, tmp_path, experiment,
                                                                          frozen_phase_trainable):
    result = run.run(writeup_b_preset(make_cfg, f"experiment={experiment}"), output_dir=tmp_path / "run")
    epochs = result["epochs"]
    assert result["model_info"]["total_params"] == 4_020_358
    assert [e["trainable_params"] for e in epochs] == [frozen_phase_trainable, 4_020_358]
    assert [e["freeze_phase"] for e in epochs] == ["head", "all"]


def test_freeze_by_name_selects_exactly_the_names_with_the_substring(make_cfg):
    cfg = writeup_b_preset(make_cfg, "experiment=seed_efficientnet_b0_cifar10")
    built = models.build_model(num_classes=10, pretrained=False, **cfg.model)
    strategy = freeze.as_published(freeze.build_freeze(stages=built.stages, total_epochs=2, **cfg.freeze), **cfg.defects)
    frozen_phase = strategy.phase(0)
    assert frozen_phase.trainable == {n for n, _ in built.model.named_parameters() if "fc" in n}
    assert not frozen_phase.trainable & set(built.head_params)
    assert strategy.phase(1).trainable == {n for n, _ in built.model.named_parameters()}
    # the preset's lrs: 1e-3 while frozen, 1e-4 for everything after the unfreeze (write-up A's script)
    factory = optim.OptimizerFactory(**cfg.optimizer)
    assert {g["lr"] for g in factory.build(built.model, frozen_phase).param_groups} == {1e-3}
    assert {g["lr"] for g in factory.build(built.model, strategy.phase(1)).param_groups} == {1e-4}


def test_freeze_noop_trains_every_parameter_in_every_phase(make_cfg):
    cfg = make_cfg("experiment=seed_resnet50_imagewoof", "model=resnet18")
    built = models.build_model(num_classes=10, pretrained=False, **cfg.model)
    strategy = freeze.as_published(freeze.build_freeze(stages=built.stages, total_epochs=10, **cfg.freeze), **cfg.defects)
    assert strategy.phase(0).trainable == {n for n, _ in built.model.named_parameters()}
    fixed = make_cfg("experiment=seed_resnet50_imagewoof_fixed", "model=resnet18")
    strategy = freeze.as_published(freeze.build_freeze(stages=built.stages, total_epochs=10, **fixed.freeze),
                                   **fixed.defects)
    assert strategy.phase(0).trainable == set(built.head_params)


def test_defects_are_off_unless_a_preset_or_the_user_switches_them_on(make_cfg):
    cfg = make_cfg()
    assert dict(cfg.defects) == {"freeze_by_name": None, "freeze_noop": False, "sigmoid_before_loss": False}
    strategy = freeze.build_freeze(stages=[["body"], ["head"]], total_epochs=2, **cfg.freeze)
    assert freeze.as_published(strategy, **cfg.defects) is strategy


def test_keep_optimizer_state_carries_the_heads_adam_moments_over_the_unfreeze(make_cfg):
    """One optimizer over every parameter (write-ups A and B): at the unfreeze the head keeps its
    step count and moments; the backbone starts fresh. Checked against a plain torch Adam run
    over the same batches with requires_grad switched as the write-ups' script does."""
    cfg = make_cfg(*TINY, "pretrained=false", "model=resnet18", "freeze=freeze_unfreeze", "freeze.epochs=1",
                   "epochs=2", "optimizer=adam", "optimizer.lr=1e-3", "optimizer.weight_decay=0",
                   "freeze.backbone_lr=1e-4", "freeze.head_lr=1e-4", "freeze.train_bn=true",
                   "freeze.keep_optimizer_state=true", "schedule=constant", "schedule.warmup_epochs=0",
                   "amp=false", "channels_last=false")
    splits, built = build.prepare(cfg)
    batches = list(build.make_loaders(cfg, splits, built, torch.device("cpu"))["train"])
    theirs = models.build_model(num_classes=len(splits.classes), pretrained=False, **cfg.model).model
    theirs.load_state_dict(built.model.state_dict())
    strategy = freeze.build_freeze(stages=built.stages, total_epochs=2, **cfg.freeze, input_size=splits.image_size)
    engine.fit(built.model, batches, batches[:1], strategy, optim.OptimizerFactory(**cfg.optimizer),
               schedules.build_schedule(epochs=2, steps_per_epoch=len(batches), **cfg.schedule), torch.device("cpu"),
               engine.TrainOptions(epochs=2))
    adam = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    head = set(built.head_params)
    for epoch in range(2):
        for name, param in theirs.named_parameters():
            param.requires_grad_(epoch == 1 or name in head)
        if epoch == 1:
            adam.param_groups[0]["lr"] = 1e-4
        theirs.train()
        for images, labels in batches:
            loss = torch.nn.functional.cross_entropy(theirs(images), labels)
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()
    for (name, ours), expected in zip(built.model.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_freeze_by_name_that_matches_nothing_fails_before_training(make_cfg, tmp_path):
    """tf_efficientnet_lite0 has no parameter named *fc*: write-up B's rule would freeze all of it
    (its script would then fail at loss.backward())."""
    with pytest.raises(ConfigError, match="defects.freeze_by_name='fc' matches no parameter name"):
        run.run(writeup_b_preset(make_cfg, "experiment=seed_efficientnet_b0_cifar10", "model=tf_efficientnet_lite0",
                                 "model.source=timm"), output_dir=tmp_path / "run")


def test_a_linear_probes_auto_head_lr_is_decided_by_the_input_size_and_recorded(make_cfg, tmp_path):
    """freeze.head_lr_ratio=auto (the default): 10 x lr for 32 px inputs, 1 x lr for 64 px ones, in result.json
    `resolved`; a number given is used as it is and nothing is resolved."""
    from tlbench.runner.run import run

    common = [*TINY, "pretrained=false", "freeze=linear_probe", "epochs=1", "schedule=constant", "optimizer.lr=0.01"]
    small = run(make_cfg(*common), output_dir=tmp_path / "small")  # synthetic: 32 px
    assert small["resolved"] == {"freeze.head_lr_ratio": 10.0} and small["config"]["freeze"]["head_lr_ratio"] == "auto"
    assert small["epochs"][0]["lr"] == pytest.approx(0.1)
    larger = run(make_cfg(*common, "input_size=64"), output_dir=tmp_path / "larger")
    assert larger["resolved"] == {"freeze.head_lr_ratio": 1.0} and larger["epochs"][0]["lr"] == pytest.approx(0.01)
    given = run(make_cfg(*common, "freeze.head_lr_ratio=1"), output_dir=tmp_path / "given")
    assert "resolved" not in given and given["epochs"][0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("stage", [0, 2, -1])
def test_surgical_trains_one_stage_and_the_head_and_leaves_the_rest_bit_identical(make_cfg, stage):
    built, history, snaps = train_with_snapshots(make_cfg, "freeze=surgical", f"freeze.stage={stage}",
                                                 "optimizer=adamw", "optimizer.weight_decay=0.5")
    stages = built.stages
    trained = set(stages[:-1][stage]) | set(stages[-1])
    everything = {n for s in stages for n in s}
    assert changed(snaps[0], snaps[-1], everything) == trained  # heavy decay would move any other weight
    index = stage % (len(stages) - 1)
    assert {e["freeze_phase"] for e in history.epochs} == {f"stage{index}"}
    assert history.epochs[0]["trainable_params"] == sum(built.model.get_parameter(n).numel() for n in trained)


def test_a_surgical_stage_the_model_lacks_fails_before_training_naming_its_range(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"freeze.stage=9 is not a stage of this model: it has \d+ before its head"):
        run.run(make_cfg(*TINY, "pretrained=false", "freeze=surgical", "freeze.stage=9"), output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="freeze.stage='top' must be a stage's index"):
        build.check_settings(make_cfg(*TINY, "freeze=surgical", "freeze.stage=top"))
