"""The LR finder, fastai's `Learner.lr_find` (fastai/callback/schedule.py: `LRFinder`, `valley`):
a short mock training whose learning rate grows exponentially, step by step, from `start_lr` to
`end_lr`; the loss is smoothed and the suggestion read off the curve; then every weight, BN
statistic, optimizer state and random state is put back exactly as it was.

This module is the algorithm and the optimizer factory that runs it before each freeze phase
(FindingOptimizers); it takes objects. The run layer builds them from the config:
`optimizer.lr=find` (runner/build.py) and `python -m tlbench.lr_find` (runner/lr_find.py).

The rules, as fastai's (its defaults are the `lr_find` block of conf/config.yaml):
- Ramp: the ramp value x stands for `optimizer.lr`. Every param group whose lr follows
  optimizer.lr gets x times its own scale (head ratio, layer decay, backbone ratio), as a schedule's
  factor would set it, so the curve at x is the optimizer `optimizer.lr=x` builds; a group with an
  absolute lr (`freeze.backbone_lr`, `freeze.head_lr`) keeps it. Step i of n uses
  start_lr * (end_lr / start_lr) ** (i / (n - 1)), so the last step is at end_lr (fastai: i / n).
- Loss: fastai's AvgSmoothLoss, an exponential moving average with beta 0.98 divided by
  1 - beta ** (step + 1) (bias correction), so the first points are not pulled towards 0.
- Stop: once the smoothed loss exceeds `stop_factor` (4) times its minimum so far, or the loss is
  not finite (the point that crossed 4x is kept, as fastai's Recorder keeps it).
- Suggestion: fastai's "valley" rule (the default of its `lr_find` since 2.5) on the smoothed
  curve without its first `steps // 10` and last 5 points (fastai's trimming): the longest valley
  is the longest strictly decreasing subsequence of the losses (not necessarily contiguous),
  found by dynamic programming; it spans from `end - length` to its last point `end`, and the
  suggestion is the point about halfway along it, index start + int(span / 3) + int(span / 6).
  Where fastai's index would be -1 (a valley of 1-2 points at the very start; Python then reads
  the last point) it is 0 here."""

import copy
import json
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tlbench.training import checkpoint, engine
from tlbench.specs import LrFind
from tlbench.errors import ConfigError
from tlbench.training.freeze import Phase, set_train_mode
from tlbench.training.optim import OptimizerFactory, carry_state
from tlbench.training.step import train_step

log = logging.getLogger("tlbench")
RULE = "valley"
RULE_SOURCE = ("fastai's valley (fastai/callback/schedule.py): the longest strictly decreasing subsequence of the "
               "smoothed loss, the point about halfway along it")
SKIP_END = 5  # fastai drops the last 5 points (and the first steps // 10) before suggesting


@dataclass
class Curve:
    lrs: list[float] = field(default_factory=list)         # the optimizer.lr of each step
    losses: list[float] = field(default_factory=list)      # smoothed, bias-corrected
    raw_losses: list[float] = field(default_factory=list)  # each step's training loss
    stopped: str = ""                                      # why the ramp ended


@dataclass
class Suggestion:
    lr: float
    index: int   # into Curve.lrs
    loss: float  # the smoothed loss there


def ramp(step: int, steps: int, start_lr: float, end_lr: float) -> float:
    return start_lr * (end_lr / start_lr) ** (step / (steps - 1))


class Smoother:
    """fastai's AvgSmoothLoss: an exponential moving average, bias-corrected, one loss at a time."""

    def __init__(self, beta: float):
        self.beta, self.average, self.count = beta, 0.0, 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.average = self.beta * self.average + (1 - self.beta) * loss
        return self.average / (1 - self.beta ** self.count)


def smoothed(losses: list[float], beta: float) -> list[float]:
    """The Smoother over a whole list (the finder applies it step by step)."""
    smoother = Smoother(beta)
    return [smoother.update(loss) for loss in losses]


def valley(losses: list[float]) -> int:
    """The index fastai's valley rule suggests (see the module's docstring)."""
    length = [1] * len(losses)  # length[i]: the longest strictly decreasing subsequence ending at i
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and length[j] + 1 > length[i]:
                length[i] = length[j] + 1
        if length[i] > length[end]:
            end = i
    start = end - length[end]
    span = (end - start) / 3
    return max(0, start + int(span) + int(span / 2))


def suggest(curve: Curve, steps: int) -> Suggestion:
    """The valley rule on the curve without its first `steps // 10` and last 5 points (fastai)."""
    first, last = steps // 10, len(curve.losses) - SKIP_END
    if last - first < 2:
        raise ConfigError(f"the LR finder stopped after {len(curve.losses)} of {steps} steps ({curve.stopped}), too "
                          f"few to suggest an lr (the first {first} and the last {SKIP_END} points are left out); "
                          f"lower lr_find.start_lr, or set optimizer.lr to a number")
    index = first + valley(curve.losses[first:last])
    return Suggestion(curve.lrs[index], index, curve.losses[index])


def find_lr(model: nn.Module, optimizer: torch.optim.Optimizer, loader, device: torch.device,
            options: engine.TrainOptions, ramp_settings: LrFind, follows: list[bool] | None = None,
            train_mode=None) -> Curve:
    """Trains `model` with `optimizer` for up to `ramp_settings.steps` batches of `loader` (again
    from its start when it runs out), the lr of each param group set to its `base_lr` times the
    ramp value (the groups where `follows` is False keep their base_lr), and returns the curve.
    The loss and step are the training core's (label smoothing, bf16 autocast, clipping).
    `train_mode(model)` sets train/eval modes as training would (default: model.train()).
    Everything is restored afterwards, bit for bit: weights, buffers (BN statistics), gradients,
    each module's train/eval mode, the optimizer's state and lrs, and the random states
    (Python, NumPy, torch, CUDA, the loader's generators)."""
    follows = follows if follows is not None else [True] * len(optimizer.param_groups)
    curve, best, smoother = Curve(), math.inf, Smoother(ramp_settings.beta)
    with restored(model, optimizer, loader, device):
        (train_mode or nn.Module.train)(model)
        for step, (images, labels) in enumerate(_cycled(loader, ramp_settings.steps)):
            lr = ramp(step, ramp_settings.steps, ramp_settings.start_lr, ramp_settings.end_lr)
            for group, follow in zip(optimizer.param_groups, follows):
                group["lr"] = group["base_lr"] * lr if follow else group["base_lr"]
            loss = train_step(model, optimizer, images, labels, device, options)[0].item()
            if not math.isfinite(loss):
                curve.stopped = f"the loss was {loss} at lr {lr:.3g}"
                break
            smooth = smoother.update(loss)
            curve.lrs.append(lr)
            curve.raw_losses.append(loss)
            curve.losses.append(smooth)
            best = min(best, smooth)
            if smooth > ramp_settings.stop_factor * best:
                curve.stopped = f"the smoothed loss passed {ramp_settings.stop_factor:g} x its minimum at lr {lr:.3g}"
                break
        else:
            curve.stopped = f"all {ramp_settings.steps} steps"
    return curve


def _cycled(loader, steps: int):
    taken = 0
    while taken < steps:
        batches = iter(loader)
        try:
            for batch in batches:
                yield batch
                taken += 1
                if taken == steps:
                    return
        finally:
            getattr(batches, "close", lambda: None)()  # the tensor path's generators release their buffers
        if taken == 0:
            raise ValueError("the LR finder's train loader yields no batches")


@contextmanager
def restored(model: nn.Module, optimizer: torch.optim.Optimizer, loader, device: torch.device):
    """Puts the model, the optimizer and the random states back as they were on entry."""
    weights = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {p: None if p.grad is None else p.grad.detach().clone() for p in model.parameters()}
    modes = {module: module.training for module in model.modules()}
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    rng = checkpoint.rng_state(loader)
    try:
        yield
    finally:
        with torch.no_grad():
            model.load_state_dict(weights)
        for param, grad in grads.items():
            param.grad = grad
        for module, training in modes.items():
            module.training = training
        optimizer.load_state_dict(optimizer_state)
        checkpoint.restore_rng(rng, loader, device)


def plot(curve: Curve, suggestion: Suggestion, path: Path, title: str) -> Path:
    """The loss against the lr on a log axis, the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(curve.lrs, curve.raw_losses, color="0.75", linewidth=0.8, label="loss per step")
    ax.plot(curve.lrs, curve.losses, color="C0", label="smoothed (beta 0.98, bias-corrected)")
    ax.axvline(suggestion.lr, color="C3", linestyle="--", linewidth=0.8)
    ax.plot([suggestion.lr], [suggestion.loss], "o", color="C3", label=f"valley: lr {suggestion.lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("optimizer.lr")
    ax.set_ylabel("training loss")
    top = max(curve.losses[: max(1, len(curve.losses) - SKIP_END)])
    ax.set_ylim(min(curve.losses + curve.raw_losses) * 0.9, top * 1.15)  # the last steps diverge: keep the valley
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(curve: Curve, suggestion: Suggestion, folder: Path, phase: str, ramp_settings: LrFind,
          title: str, base: Path | None = None) -> dict:
    """`<folder>/<phase>.png` and `<phase>.json`; returns the JSON's summary (result.json's entry),
    which names the files relative to `base` (the run folder), or as written."""
    png, data = plot(curve, suggestion, folder / f"{phase}.png", title), folder / f"{phase}.json"
    entry = {"phase": phase, "lr": suggestion.lr, "rule": RULE, "steps": len(curve.lrs), "stopped": curve.stopped,
             "curve": str(png.relative_to(base) if base else png),
             "data": str(data.relative_to(base) if base else data)}
    details = {**entry, "rule_source": RULE_SOURCE, "suggestion": vars(suggestion),
               "settings": vars(ramp_settings), "lrs": curve.lrs, "losses": curve.losses,
               "raw_losses": curve.raw_losses}
    data.write_text(json.dumps(details, indent=1))
    return entry


def follows_optimizer_lr(model: nn.Module, optimizer: torch.optim.Optimizer, phase: Phase) -> list[bool]:
    """Per param group: whether its lr is a multiple of optimizer.lr (not an absolute lr)."""
    pinned = {name for group in phase.groups if group.lr is not None for name in group.names}
    names = {param: name for name, param in model.named_parameters()}
    return [not any(names[p] in pinned for p in group["params"]) for group in optimizer.param_groups]


class FindingOptimizers(OptimizerFactory):
    """The optimizer factory of `optimizer.lr=find`. The training core calls `build(model, phase)`
    at every freeze phase change, after the phase's requires_grad is set and before it trains:
    there it runs the finder from the state the run is in (the start for the first phase, the
    trained head at freeze_unfreeze's unfreeze), sets `lr` to the suggestion and builds the
    phase's optimizer with it. With `keep_optimizer_state` the finder's optimizer starts from
    (copies of) the state the new optimizer will be handed. `found`: result.json's `lr_find`
    list, appended to; a phase already in it (a resumed run) takes its recorded lr unmeasured.
    `base`: the run folder, which the recorded file names are relative to."""

    def __init__(self, optimizer_settings: dict, fused: bool, loader, device: torch.device,
                 options: engine.TrainOptions, strategy, total_epochs: int, ramp_settings: LrFind,
                 folder: Path, found: list[dict], base: Path | None = None):
        super().__init__(**{**optimizer_settings, "lr": 1.0}, fused=fused)
        self.loader, self.device, self.options, self.strategy = loader, device, options, strategy
        self.total_epochs, self.ramp_settings, self.folder, self.found = total_epochs, ramp_settings, folder, found
        self.base, self.last = base, None  # last: the optimizer built last, whose state keep_optimizer_state carries

    def build(self, model: nn.Module, phase: Phase) -> torch.optim.Optimizer:
        recorded = next((entry for entry in self.found if entry["phase"] == phase.name), None)
        if recorded is None:
            recorded = self.find(model, phase)
            self.found.append(recorded)
        if recorded["lr"] is not None:
            self.lr = recorded["lr"]
        self.last = super().build(model, phase)
        return self.last

    def find(self, model: nn.Module, phase: Phase) -> dict:
        previous, self.lr = self.lr, 1.0  # so a group's base_lr is its scale, and the ramp value is optimizer.lr
        probe = super().build(model, phase)
        self.lr = previous
        epoch = next((e for e in range(self.total_epochs) if self.strategy.phase(e).name == phase.name), 0)
        follows = follows_optimizer_lr(model, probe, phase)
        if not any(follows):
            log.warning("lr_find: in phase %s every param group has an absolute lr; nothing to find", phase.name)
            return {"phase": phase.name, "lr": None, "rule": RULE, "before_epoch": epoch + 1,
                    "skipped": "every param group has an absolute lr (freeze.backbone_lr, freeze.head_lr)"}
        if self.strategy.keep_optimizer_state and self.last is not None:
            carry_state(self.last, probe)
            probe.state.update({p: copy.deepcopy(s) for p, s in probe.state.items()})  # never step the run's own
        curve = find_lr(model, probe, self.loader, self.device, self.options, self.ramp_settings, follows,
                        lambda m: set_train_mode(m, self.strategy.train_bn, self.strategy.bn_eval))
        suggestion = suggest(curve, self.ramp_settings.steps)
        entry = write(curve, suggestion, self.folder, phase.name, self.ramp_settings,
                      f"LR finder, phase {phase.name} (before epoch {epoch + 1})", self.base)
        group_lrs = [g["base_lr"] * suggestion.lr if f else g["base_lr"] for g, f in zip(probe.param_groups, follows)]
        log.info("lr_find: phase %s, optimizer.lr=%.3g (%s rule, %d steps, %s); curve in %s", phase.name,
                 suggestion.lr, RULE, len(curve.lrs), curve.stopped, entry["curve"])
        return {**entry, "before_epoch": epoch + 1, "group_lrs": group_lrs}
