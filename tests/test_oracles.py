"""Oracles: tlbench's hand-written maths checked against the library that defines it.

Schedules are compared with torch.optim.lr_scheduler step by step, the plateau rule with
ReduceLROnPlateau epoch by epoch, the per-group lrs through the real training step, and the batch
augmentations with torchvision's functional ops. Images have a distinct value in every pixel, so a
flip along the wrong axis or a crop one pixel off cannot pass by symmetry."""

import copy
import random
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as S
from torchvision.transforms.v2 import functional as TF

from tlbench.data import batch_augment as ops
from tlbench.training import engine
from tlbench.data import tensor_data
from tlbench.training.schedules import build_schedule
from tlbench.runner import build

# ---------------------------------------------------------------- schedules vs torch schedulers


def torch_lrs(make_scheduler, steps: int) -> list[float]:
    """The lr torch uses at each of `steps` optimizer steps, for an optimizer at lr 1.0 (so the lr
    is the factor on the base lr, tlbench's convention)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with warnings.catch_warnings():  # SequentialLR's and ChainedScheduler's deprecation chatter
        warnings.simplefilter("ignore")
        scheduler = make_scheduler(optimizer)
        lrs = []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    return lrs


def assert_same_every_step(schedule, theirs: list[float], rel=1e-9):
    ours = [schedule.factor(step) for step in range(len(theirs))]
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert a == pytest.approx(b, rel=rel, abs=0), f"step {step}: tlbench {a!r}, torch {b!r}"


@pytest.mark.parametrize("epochs, steps_per_epoch", [(5, 8), (3, 7)])
@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_cosine_without_warmup_equals_cosine_annealing_lr(epochs, steps_per_epoch, min_lr_ratio):
    total = epochs * steps_per_epoch
    schedule = build_schedule("cosine", epochs, steps_per_epoch, warmup_epochs=0, min_lr_ratio=min_lr_ratio)
    assert_same_every_step(schedule, torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=total, eta_min=min_lr_ratio),
                                               total))


def linear_warmup(optimizer, warmup_steps):
    """tlbench's warm-up factor is (step + 1) / W: 1/W at step 0, full lr at step W - 1. That is
    LinearLR from 1/W reaching 1 after W - 1 iterations (torch's own convention, no shift)."""
    return S.LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)


@pytest.mark.parametrize("warmup_epochs, min_lr_ratio", [(1, 0.0), (0.5, 0.2), (2, 0.05)])
def test_cosine_with_warmup_equals_linear_lr_then_cosine_annealing_lr(warmup_epochs, min_lr_ratio):
    epochs, steps_per_epoch = 5, 8
    total, warmup = epochs * steps_per_epoch, round(warmup_epochs * steps_per_epoch)
    schedule = build_schedule("cosine", epochs, steps_per_epoch, warmup_epochs=warmup_epochs,
                              min_lr_ratio=min_lr_ratio)
    # The cosine starts at step W from the full lr and reaches min_lr at the end of the run.
    theirs = torch_lrs(lambda o: S.SequentialLR(o, [linear_warmup(o, warmup),
                                                    S.CosineAnnealingLR(o, T_max=total - warmup,
                                                                        eta_min=min_lr_ratio)],
                                                milestones=[warmup]), total)
    assert_same_every_step(schedule, theirs)


def test_constant_with_warmup_equals_linear_lr():
    schedule = build_schedule("constant", 4, 6, warmup_epochs=1)
    assert_same_every_step(schedule, torch_lrs(lambda o: linear_warmup(o, 6), 24))


def test_constant_without_warmup_equals_lambda_lr_of_one():
    schedule = build_schedule("constant", 3, 5, warmup_epochs=0)
    assert_same_every_step(schedule, torch_lrs(lambda o: S.LambdaLR(o, lambda step: 1.0), 15))


def test_step_decay_equals_step_lr():
    schedule = build_schedule("step", 7, 4, step_epochs=2, gamma=0.3)
    assert_same_every_step(schedule, torch_lrs(lambda o: S.StepLR(o, step_size=2 * 4, gamma=0.3), 28))


def test_step_decay_with_warmup_equals_linear_lr_chained_with_step_lr():
    # ChainedScheduler multiplies the two factors, as tlbench's warm-up x decay does.
    schedule = build_schedule("step", 6, 5, step_epochs=2, gamma=0.5, warmup_epochs=1)
    theirs = torch_lrs(lambda o: S.ChainedScheduler([linear_warmup(o, 5), S.StepLR(o, step_size=10, gamma=0.5)]), 30)
    assert_same_every_step(schedule, theirs)


def test_multistep_is_vtabs_piecewise_constant_with_warmup_from_zero():
    """VTAB's schedule (task_adaptation trainer.py): tf.train.piecewise_constant keeps a boundary step at the
    earlier value, which is torch's MultiStepLR with each milestone one step later; the warm-up is
    lr x step / W from step 0 (torch's LambdaLR of that), and replaces the decayed lr while it lasts."""
    milestones, warmup, total = [300, 600, 900], 80, 1000
    schedule = build_schedule("multistep", 80, 13, total_steps=total, milestones=milestones, gamma=0.1,
                              warmup_steps=warmup)
    decayed = torch_lrs(lambda o: S.MultiStepLR(o, milestones=[m + 1 for m in milestones], gamma=0.1), total)
    warming = torch_lrs(lambda o: S.LambdaLR(o, lambda step: step / warmup), warmup)
    assert_same_every_step(schedule, warming + decayed[warmup:])
    assert [schedule.factor(s) for s in (0, 40, 80, 300, 301, 600, 601, 900, 901, 999)] == pytest.approx(
        [0.0, 0.5, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


@pytest.mark.parametrize("epochs, steps_per_epoch, pct_start, div_factor, final_div_factor", [
    (5, 8, 0.3, 25.0, 1e4),    # pct_start * total an integer: 12
    (3, 7, 0.3, 25.0, 1e4),    # 6.3: torch does not round the end of the rise
    (2, 5, 0.45, 10.0, 100.0),  # 4.5
    (4, 9, 0.25, 5.0, 50.0),
    (1, 10, 0.3, 25.0, 1e4),
])
def test_onecycle_equals_one_cycle_lr(epochs, steps_per_epoch, pct_start, div_factor, final_div_factor):
    total = epochs * steps_per_epoch
    schedule = build_schedule("onecycle", epochs, steps_per_epoch, pct_start=pct_start, div_factor=div_factor,
                              final_div_factor=final_div_factor)
    theirs = torch_lrs(lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=total, pct_start=pct_start,
                                              anneal_strategy="cos", cycle_momentum=False, div_factor=div_factor,
                                              final_div_factor=final_div_factor, three_phase=False), total)
    assert_same_every_step(schedule, theirs)


@pytest.mark.parametrize("optimizer_name", ["adam", "sgd"])
@pytest.mark.parametrize("epochs, steps_per_epoch, pct_start", [(5, 8, 0.3), (3, 7, 0.3), (2, 5, 0.45)])
def test_onecycle_cycles_momentum_and_lr_as_one_cycle_lr(optimizer_name, epochs, steps_per_epoch, pct_start):
    """torch's default cycle_momentum=True: beta1 (Adam) or momentum (SGD) at every step, with the lr."""
    total = epochs * steps_per_epoch
    schedule = build_schedule("onecycle", epochs, steps_per_epoch, pct_start=pct_start)
    make = {"adam": lambda p: torch.optim.Adam(p, lr=1e-3), "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)}
    key = "betas" if optimizer_name == "adam" else "momentum"
    ours_opt, their_opt = make[optimizer_name]([nn.Parameter(torch.zeros(1))]), make[optimizer_name]([nn.Parameter(torch.zeros(1))])
    ours_opt.param_groups[0]["base_lr"] = 1e-3
    theirs = S.OneCycleLR(their_opt, max_lr=1e-3, total_steps=total, pct_start=pct_start)
    for step in range(total):
        schedule.apply(ours_opt, step)
        ours, torch_group = ours_opt.param_groups[0], their_opt.param_groups[0]
        assert ours["lr"] == pytest.approx(torch_group["lr"], rel=1e-9), f"lr at step {step}"
        assert ours[key] == pytest.approx(torch_group[key], rel=1e-12), f"{key} at step {step}"
        their_opt.step()
        theirs.step()


def test_onecycle_without_cycle_momentum_leaves_momentum_alone():
    schedule = build_schedule("onecycle", 2, 5, cycle_momentum=False)
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.8, 0.99))
    optimizer.param_groups[0]["base_lr"] = 1.0
    for step in range(10):
        schedule.apply(optimizer, step)
        assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)


def test_writeup_c_training_steps_equal_a_plain_torch_loop():
    """Write-up C's step (Adam, OneCycleLR with beta1 cycling, gradient values clipped at 0.1,
    cross-entropy on sigmoid outputs) through tlbench's training core gives the same weights as a
    plain torch loop after every step."""
    torch.manual_seed(0)
    images, labels = torch.randn(24, 5), torch.randint(0, 3, (24,))
    batches = [(images[i:i + 6], labels[i:i + 6]) for i in range(0, 24, 6)]
    epochs = 3
    ours_model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    their_model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    their_model.load_state_dict(ours_model.state_dict())
    their_opt = torch.optim.Adam(their_model.parameters(), lr=1e-2, weight_decay=1e-4)
    their_sched = S.OneCycleLR(their_opt, max_lr=1e-2, epochs=epochs, steps_per_epoch=len(batches))
    for _ in range(epochs):
        for x, y in batches:
            loss = nn.functional.cross_entropy(torch.sigmoid(their_model(x)), y)
            their_opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_value_(their_model.parameters(), 0.1)
            their_opt.step()
            their_sched.step()
    groups = [{"params": list(ours_model.parameters()), "lr": 1e-2, "base_lr": 1e-2, "weight_decay": 1e-4}]
    ours_opt = torch.optim.Adam(groups, lr=1e-2, weight_decay=1e-4)
    schedule = build_schedule("onecycle", epochs, len(batches))
    options = engine.TrainOptions(epochs=epochs, clip_grad_value=0.1, sigmoid_before_loss=True)
    for epoch in range(epochs):
        engine.train_one_epoch(ours_model, batches, ours_opt, schedule, epoch * len(batches), torch.device("cpu"), options)
    for (name, ours), theirs in zip(ours_model.state_dict().items(), their_model.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7, msg=name)


# ---------------------------------------------------------------- plateau vs ReduceLROnPlateau

MODES = {"val_loss": "min", "val_acc": "max"}


def assert_plateau_matches_torch(monitor, values, factor, patience):
    """Feeds the same metric to tlbench's plateau schedule and to ReduceLROnPlateau (lr 1.0, so
    its lr is the scale) and compares after every epoch."""
    schedule = build_schedule("plateau", 10, 3, monitor=monitor, factor=factor, patience=patience)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    # eps=0: torch skips reductions smaller than eps; tlbench has no such floor.
    theirs = S.ReduceLROnPlateau(optimizer, mode=MODES[monitor], factor=factor, patience=patience,
                                 threshold=1e-4, threshold_mode="rel", eps=0.0)
    for epoch, value in enumerate(values):
        schedule.epoch_end({monitor: value})
        optimizer.step()
        theirs.step(value)
        ours, torch_scale = schedule.factor(3 * (epoch + 1)), optimizer.param_groups[0]["lr"]
        assert ours == pytest.approx(torch_scale, rel=1e-12), f"after epoch {epoch} of {values}: {ours} != {torch_scale}"


def worse(monitor, start, epochs):
    """A metric that only gets worse: torch must reduce after every patience + 1 epochs."""
    step = 0.01 if monitor == "val_loss" else -0.01
    return [start + step * i for i in range(epochs)]


HAND_WRITTEN = [
    [1.0] * 12,                              # flat: reduce again and again
    [0.0] * 8,                               # stuck at zero (accuracy of a dead run): ties at 0 too
    [0.5, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4],  # ties are not improvements
    [1.0, 0.99995, 1.00005, 0.99991, 0.5],   # within and just outside the 1e-4 relative threshold
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3],     # steadily lower
    [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],     # steadily higher
    [0.6, 0.7, 0.6, 0.5, 0.7, 0.5, 0.4, 0.4, 0.8, 0.3, 0.3, 0.3, 0.3],
]


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
@pytest.mark.parametrize("patience", [0, 1, 2])
def test_plateau_equals_reduce_lr_on_plateau_on_hand_written_sequences(monitor, patience):
    for values in HAND_WRITTEN + [worse(monitor, 0.5, 15)]:
        assert_plateau_matches_torch(monitor, values, factor=0.5, patience=patience)


def test_plateau_reduces_repeatedly_on_a_worsening_metric():
    # Guards the oracle itself: the hand-written sequences really do make torch reduce.
    for monitor in MODES:
        schedule = build_schedule("plateau", 10, 1, monitor=monitor, factor=0.5, patience=1)
        for value in worse(monitor, 0.5, 7):  # best at epoch 0, reductions after epochs 2, 4 and 6
            schedule.epoch_end({monitor: value})
        assert schedule.factor(0) == 0.125


@pytest.mark.parametrize("monitor", ["val_loss", "val_acc"])
def test_plateau_equals_reduce_lr_on_plateau_on_random_sequences_with_ties(monitor):
    rng = random.Random(0)
    for _ in range(60):
        levels = [round(rng.uniform(0.05, 1.0), 2) for _ in range(4)]  # few levels: many ties
        values = [rng.choice(levels) for _ in range(rng.randint(5, 25))]
        assert_plateau_matches_torch(monitor, values, factor=rng.choice([0.5, 0.3, 0.1]),
                                     patience=rng.randint(0, 3))


# ---------------------------------------------------------------- every param group follows the schedule


def test_every_param_group_follows_the_schedule_at_every_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    base_lrs = (0.1, 0.02, 0.005)
    params = (model[1].parameters(), [model[3].weight], [model[3].bias])
    optimizer = torch.optim.SGD([{"params": list(p), "lr": lr, "base_lr": lr} for p, lr in zip(params, base_lrs)])
    schedule = build_schedule("cosine", epochs=2, steps_per_epoch=5, warmup_epochs=0.4, min_lr_ratio=0.1)
    loader = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(5)]
    seen = []  # the lrs each optimizer step actually uses
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups]))
    options = engine.TrainOptions(epochs=2)
    for epoch in range(2):  # the second epoch checks the global step (first_step), not the epoch's
        engine.train_one_epoch(model, loader, optimizer, schedule, epoch * len(loader), torch.device("cpu"), options)
    assert len(seen) == 10
    for step, lrs in enumerate(seen):
        expected = [base * schedule.factor(step) for base in base_lrs]
        assert lrs == pytest.approx(expected, rel=1e-12), f"step {step}"
    assert len({schedule.factor(step) for step in range(10)}) >= 9  # it moves (one tie at the peak): stale lrs fail


# ---------------------------------------------------------------- batch ops vs torchvision


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def distinct_images(n=3, h=5, w=7, seed=0) -> torch.Tensor:
    """uint8 (n, 3, h, w), each image a different permutation of 1..255: every pixel distinct and
    none 0, so the constant padding never looks like image content."""
    g = gen(seed)
    return torch.stack([(torch.randperm(255, generator=g)[:3 * h * w] + 1).reshape(3, h, w)
                        for _ in range(n)]).to(torch.uint8)


def test_flip_along_the_last_dim_is_torchvision_horizontal_flip():
    images = distinct_images()
    assert torch.equal(ops.flip(images, 1.0, -1, gen()), TF.horizontal_flip(images))


def test_flip_along_dim_minus_two_is_torchvision_vertical_flip():
    images = distinct_images()
    assert torch.equal(ops.flip(images, 1.0, -2, gen()), TF.vertical_flip(images))


@pytest.mark.parametrize("dim", [-1, -2])
def test_flip_with_p_zero_leaves_images_unchanged(dim):
    images = distinct_images()
    assert torch.equal(ops.flip(images, 0.0, dim, gen()), images)


def torchvision_pad_crops(image, pad, mode, h, w) -> dict:
    """Every crop RandomCrop(padding=pad, padding_mode=mode) can return, by (top, left)."""
    padded = TF.pad(image, [pad], padding_mode=mode)
    return {(top, left): TF.crop(padded, top, left, h, w) for top in range(2 * pad + 1) for left in range(2 * pad + 1)}


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "symmetric"])
def test_pad_crop_returns_one_of_torchvision_padded_crops(mode):
    pad, (h, w) = 2, (5, 6)
    images = distinct_images(n=64, h=h, w=w)
    out = ops.pad_crop(images, pad, mode, gen(1))
    offsets = set()
    for image, result in zip(images, out):
        crops = torchvision_pad_crops(image, pad, mode, h, w)
        matches = [at for at, crop in crops.items() if torch.equal(crop, result)]
        assert matches, f"pad_mode={mode}: the output is no crop of torchvision's padded image"
        offsets.update(matches)
    # RandomCrop draws top and left independently over 0..2 pad; 64 draws miss none (p < 1e-5)
    assert {top for top, _ in offsets} == {left for _, left in offsets} == set(range(2 * pad + 1))
    assert len(offsets) > 2 * pad + 1, "top and left drawn together"


@pytest.mark.parametrize("h, w, size", [(7, 7, 4), (8, 6, 5), (7, 9, 2), (6, 6, 6)])
def test_center_crop_equals_torchvision(h, w, size):
    # odd margins (7 - 4 = 3) are where a floor and torchvision's round() disagree
    images = distinct_images(h=h, w=w)
    assert torch.equal(ops.center_crop(images, size), TF.center_crop(images, [size, size]))


@pytest.mark.parametrize("h, w, size", [(12, 12, 6), (12, 10, 5), (5, 7, 9), (16, 8, 9), (7, 5, 6)])
def test_resize_equals_torchvision_bilinear_antialias(h, w, size):
    images = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=gen(2))
    theirs = TF.resize(images, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    ours = ops.resize(images, size)
    assert (ours.int() - theirs.int()).abs().max() <= 1  # uint8 kernels round differently by one level
    floats = images.float() / 255
    assert torch.allclose(ops.resize(floats, size), TF.resize(floats, [size, size], antialias=True), atol=1e-5)


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_normalized(images: torch.Tensor) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(MEAN), list(STD))


@pytest.mark.parametrize("setting, reference", [("hflip", TF.horizontal_flip), ("vflip", TF.vertical_flip)])
def test_batch_transform_flips_along_torchvision_axes(setting, reference):
    # The wiring, not only the op: hflip must reach flip(dim=-1), vflip flip(dim=-2).
    images = distinct_images(n=4, h=6, w=6)
    transform = tensor_data.BatchTransform(6, 6, MEAN, STD, **{setting: 1.0})
    assert torch.allclose(transform(images, gen()), torchvision_normalized(reference(images)), atol=1e-5)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "symmetric"])
def test_batch_transform_pads_with_the_configured_mode(mode):
    images = distinct_images(n=6, h=6, w=6)
    out = tensor_data.BatchTransform(6, 6, MEAN, STD, pad=2, pad_mode=mode)(images, gen(3))
    for image, result in zip(images, out):
        crops = torchvision_pad_crops(image, 2, mode, 6, 6).values()
        assert any(torch.allclose(result, torchvision_normalized(crop), atol=1e-5) for crop in crops), mode


@pytest.mark.parametrize("name", ["resnet18", "deit_tiny_patch16_224"])
def test_no_weight_decay_groups_match_timm(name):
    """optimizer.filter_bias_and_bn: the same split as timm's own param_groups_weight_decay."""
    import timm
    from timm.optim._param_groups import param_groups_weight_decay

    from tlbench.training import freeze, optim

    with torch.device("meta"):
        model = timm.create_model(name, num_classes=3)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {g["weight_decay"]: {names[id(p)] for p in g["params"]}
                for g in param_groups_weight_decay(model, 0.05, no_weight_decay_list=getattr(model, "no_weight_decay", set)())}
    phase = freeze.Phase("all", (freeze.ParamGroup(tuple(n for n, _ in model.named_parameters())),))
    factory = optim.OptimizerFactory("adamw", lr=1e-3, weight_decay=0.05)
    built = {g["weight_decay"]: {names[id(p)] for p in g["params"]}
             for g in factory.build(model, phase).param_groups}
    assert built == expected and expected[0.0] and expected[0.05]


# ---------------------------------------------------------------- the training step vs a plain torch step

STEP_CASES = {  # StepOptions fields; each case is one thing the step must do as torch does it
    "plain": {},
    "label_smoothing": {"label_smoothing": 0.1},
    "clip_value": {"label_smoothing": 0.1, "clip_grad_value": 0.01},
    "clip_norm": {"label_smoothing": 0.1, "clip_grad_norm": 0.05},
    "clip_both": {"clip_grad_value": 0.02, "clip_grad_norm": 0.03},
    "sigmoid_before_loss": {"label_smoothing": 0.1, "sigmoid_before_loss": True},
}


def tiny_model_and_batches(seed=0, batches=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))
    data = [(torch.randn(6, 3, 2, 2), torch.randint(0, 4, (6,))) for _ in range(batches)]
    return model, data


def plain_step(model, optimizer, images, labels, label_smoothing=0.0, clip_grad_value=None, clip_grad_norm=None,
               sigmoid_before_loss=False) -> float:
    """The textbook step, written out with nothing from tlbench."""
    logits = model(images)
    if sigmoid_before_loss:
        logits = torch.sigmoid(logits)
    loss = nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad()
    loss.backward()
    if clip_grad_value is not None:
        nn.utils.clip_grad_value_(model.parameters(), clip_grad_value)
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return loss.item()


def assert_same_parameters(ours, theirs, **tolerance):
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, **tolerance)


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_train_step_equals_a_plain_torch_step(case):
    """Same loss, same parameters after each step (SGD, so a lost clip or smoothing moves the weights)."""
    from tlbench.training.step import StepOptions, train_step

    settings = STEP_CASES[case]
    ours, batches = tiny_model_and_batches()
    theirs = copy.deepcopy(ours)
    ours_opt, their_opt = (torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9) for m in (ours, theirs))
    options = StepOptions(**settings)
    for step, (images, labels) in enumerate(batches):
        loss, correct = train_step(ours, ours_opt, images, labels, torch.device("cpu"), options)
        their_loss = plain_step(theirs, their_opt, images, labels, **settings)
        assert loss.item() == pytest.approx(their_loss, rel=1e-6, abs=1e-7), f"loss at step {step}"
        assert_same_parameters(ours, theirs, rtol=1e-6, atol=1e-7)
    assert not torch.equal(ours[1].weight, tiny_model_and_batches()[0][1].weight), "the step did not move"


def test_the_step_cases_are_not_all_the_same_step():
    """Guards the oracle: every switch changes the loss or the weights, so dropping one cannot pass."""
    from tlbench.training.step import StepOptions, train_step

    after = {}
    for case, settings in STEP_CASES.items():
        model, batches = tiny_model_and_batches()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        losses = [train_step(model, optimizer, x, y, torch.device("cpu"), StepOptions(**settings))[0].item()
                  for x, y in batches]
        after[case] = (losses, torch.cat([p.detach().flatten() for p in model.parameters()]))
    cases = list(after)
    for i, a in enumerate(cases):
        for b in cases[i + 1:]:
            assert after[a][0] != pytest.approx(after[b][0], rel=1e-4) or \
                not torch.allclose(after[a][1], after[b][1], rtol=1e-4), (a, b)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_train_one_epoch_loss_equals_a_plain_loop(label_smoothing):
    """The epoch's loss, per-step losses and accuracy are the plain loop's at the default smoothing (0.1)."""
    ours, batches = tiny_model_and_batches(batches=4)
    theirs = copy.deepcopy(ours)
    ours_opt = torch.optim.Adam([{"params": list(ours.parameters()), "lr": 1e-2, "base_lr": 1e-2}])
    their_opt = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    their_losses, correct = [], 0
    for images, labels in batches:
        with torch.no_grad():
            correct += (theirs(images).argmax(1) == labels).sum().item()
        their_losses.append(plain_step(theirs, their_opt, images, labels, label_smoothing=label_smoothing))
    options = engine.TrainOptions(epochs=1, label_smoothing=label_smoothing)
    out = engine.train_one_epoch(ours, batches, ours_opt, build_schedule("constant", 1, len(batches)), 0,
                                 torch.device("cpu"), options)
    assert out["iter_loss"] == pytest.approx(their_losses, rel=1e-6)
    assert out["loss"] == pytest.approx(sum(their_losses) / len(their_losses), rel=1e-6)
    assert out["acc"] == correct / sum(len(y) for _, y in batches)
    assert_same_parameters(ours, theirs, rtol=1e-6, atol=1e-7)


def test_the_run_passes_loss_and_clipping_settings_to_the_step(make_cfg):
    """cfg -> TrainOptions (build.core_options): what the oracles above check is what the run steps with."""

    cfg = make_cfg("label_smoothing=0.15", "clip_grad_value=0.3", "clip_grad_norm=2.5",
                   "defects.sigmoid_before_loss=true", "amp=false", "channels_last=false")
    options = build.core_options(cfg, torch.device("cpu"), nn.Linear(2, 2), 2)
    assert (options.label_smoothing, options.clip_grad_value, options.clip_grad_norm, options.sigmoid_before_loss) \
        == (0.15, 0.3, 2.5, True)
    default = build.core_options(make_cfg(), torch.device("cpu"), nn.Linear(2, 2), 2)
    assert default.label_smoothing == 0.1 and not default.sigmoid_before_loss and default.mix is None
    mixed = build.core_options(make_cfg("mix.cutmix_alpha=1.0", "mix.prob=0.5", "label_smoothing=0.2"),
                               torch.device("cpu"), nn.Linear(2, 2), 7).mix
    assert (mixed.cutmix_alpha, mixed.mix_prob, mixed.label_smoothing, mixed.num_classes) == (1.0, 0.5, 0.2, 7)


def test_decay_per_lr_decays_weight_decay_over_lr_in_torchs_update():
    """optimizer.decay_per_lr (Kornblith et al.'s grid): torch's SGD with weight_decay / lr, so one step of
    a zero gradient shrinks a weight by lr x (weight_decay / lr) = weight_decay, whatever the lr."""
    from tlbench.training import optim
    from tlbench.training.freeze import Phase, ParamGroup

    for lr in (0.1, 0.001):
        model = nn.Linear(1, 1, bias=False)
        nn.init.ones_(model.weight)
        factory = optim.OptimizerFactory("sgd", lr=lr, weight_decay=1e-3, decay_per_lr=True, momentum=0.0)
        optimizer = factory.build(model, Phase("all", (ParamGroup(("weight",)),)))
        model.weight.grad = torch.zeros_like(model.weight)
        optimizer.step()
        assert model.weight.item() == pytest.approx(1 - 1e-3)
