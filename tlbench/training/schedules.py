"""Learning-rate schedules (the `schedule` group) as a factor on each param group's base lr.

Epoch-based shapes are pure functions of the global step, stepped every iteration; the plateau
schedule is the one stateful kind (it watches a validation metric at each epoch end)."""

import math
from dataclasses import dataclass
from functools import partial

from tlbench.errors import ConfigError


@dataclass(frozen=True)
class Budget:
    """How long a run trains. Either exactly `steps` optimizer steps (a protocol's budget, e.g. VTAB's
    1,000: the epochs are as many as those steps take, the last one stopping part-way), or `epochs` as
    configured, raised when the training split is so small that they would be fewer than `min_steps`
    optimizer steps (issue 22: 10 epochs of 100 images at batch 64 are 20 steps). What is counted in
    epochs (warm-up epochs, step decay points, freeze.epochs) keeps its count; a schedule shaped over
    the whole run (cosine, onecycle) spans the steps the run takes."""
    configured_epochs: int
    min_steps: int
    steps_per_epoch: int
    configured_steps: int | None = None  # `steps`: an exact budget in optimizer steps, replacing epochs

    @property
    def epochs(self) -> int:
        """The epochs the run trains (the last may be partial under `steps`): at least
        `configured_epochs`, and enough for `min_steps` steps."""
        per_epoch = max(1, self.steps_per_epoch)
        if self.configured_steps is not None:
            return math.ceil(self.configured_steps / per_epoch)
        return max(self.configured_epochs, math.ceil(self.min_steps / per_epoch))

    @property
    def steps(self) -> int:
        """The optimizer steps the run takes."""
        return self.configured_steps if self.configured_steps is not None else self.epochs * self.steps_per_epoch

    @property
    def raised(self) -> bool:
        """min_steps raised the configured epochs."""
        return self.configured_steps is None and self.epochs > self.configured_epochs

    @property
    def changed(self) -> bool:
        """The run trains other epochs than configured (raised, or set by `steps`)."""
        return self.epochs != self.configured_epochs

    def note(self) -> str:
        """The log line of a budget that changed the configured epochs."""
        if self.configured_steps is None:
            return (f"min_steps={self.min_steps}: {self.configured_epochs} epochs of {self.steps_per_epoch} steps "
                    f"raised to {self.epochs} epochs ({self.steps} steps)")
        last = self.steps - (self.epochs - 1) * self.steps_per_epoch
        return f"steps={self.steps}: {self.epochs} epochs of {self.steps_per_epoch} steps, the last {last}"

    def describe(self) -> dict:
        """result.json `budget`."""
        return {"epochs": self.epochs, "steps": self.steps, "steps_per_epoch": self.steps_per_epoch,
                "min_steps": self.min_steps, "configured_epochs": self.configured_epochs,
                "configured_steps": self.configured_steps, "raised": self.raised}


def _warmup(step, warmup_steps):
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def constant(step, total_steps, warmup_steps=0):
    return _warmup(step, warmup_steps)


def cosine(step, total_steps, warmup_steps=0, min_lr_ratio=0.0):
    if step < warmup_steps:
        return _warmup(step, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def step_decay(step, total_steps, steps_per_epoch, step_epochs, gamma, warmup_steps=0):
    return _warmup(step, warmup_steps) * gamma ** (step // (steps_per_epoch * step_epochs))


def multistep(step, total_steps, milestones, gamma=0.1, warmup_steps=0):
    """VTAB's schedule (google-research/task_adaptation trainer.py: tf.train.piecewise_constant, then
    apply_warmup_lr): the lr is multiplied by gamma once for each milestone the step is past (step 300
    still at the earlier value, 301 decayed), and over the first `warmup_steps` it rises linearly from
    0 (step 0 trains at lr 0, as there) to lr, ignoring the decay. Steps count from 0."""
    if step < warmup_steps:
        return step / warmup_steps
    return gamma ** sum(step > milestone for milestone in milestones)


def one_cycle(step, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
    """torch OneCycleLR's cosine shape (two phases), as a factor of max_lr (the optimizer's lr).
    As torch, the rise ends at the unrounded step pct_start * total_steps - 1."""
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)
    peak = float(pct_start * total_steps) - 1
    if step <= peak:
        return _cos_anneal(start, 1.0, step / peak if peak > 0 else 1.0)  # torch divides by zero at peak 0
    fall = total_steps - 1 - peak
    return _cos_anneal(1.0, end, min(1.0, (step - peak) / fall) if fall > 0 else 1.0)


def one_cycle_momentum(step, total_steps, pct_start=0.3, base_momentum=0.85, max_momentum=0.95):
    """torch OneCycleLR's momentum (Adam's beta1) with `cycle_momentum=True`: the mirror image of
    the lr, from max_momentum down to base_momentum while the lr rises, then back up."""
    peak = float(pct_start * total_steps) - 1
    if step <= peak:
        return _cos_anneal(max_momentum, base_momentum, step / peak if peak > 0 else 1.0)
    fall = total_steps - 1 - peak
    return _cos_anneal(base_momentum, max_momentum, min(1.0, (step - peak) / fall) if fall > 0 else 1.0)


def _cos_anneal(start, end, pct):
    """OneCycleLR._annealing_cos: from `start` at pct 0 to `end` at pct 1."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class Plateau:
    """ReduceLROnPlateau's rule (relative threshold 1e-4): after more than `patience` epochs
    without improvement of `monitor`, the scale is multiplied by `factor`."""

    def __init__(self, monitor="val_loss", factor=0.5, patience=2):
        # val_mean_class_acc: what run.py watches for val_acc where the data set reports mean per-class accuracy
        if monitor not in ("val_loss", "val_acc", "val_mean_class_acc"):
            raise ConfigError(f"schedule.monitor={monitor!r}; use val_loss (lower is better) or val_acc")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.best, self.bad_epochs, self.scale = None, 0, 1.0

    def update(self, metrics: dict) -> None:
        value = metrics[self.monitor]
        sign = 1 if self.monitor == "val_loss" else -1
        if self.best is None or sign * value < sign * self.best - abs(self.best) * 1e-4:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.scale *= self.factor
            self.bad_epochs = 0

    def state_dict(self):
        return dict(best=self.best, bad_epochs=self.bad_epochs, scale=self.scale)

    def load_state_dict(self, state):
        self.best, self.bad_epochs, self.scale = state["best"], state["bad_epochs"], state["scale"]


class LrSchedule:
    """`momentum`: None, or a function of the step giving the momentum (SGD) or beta1 (Adam,
    AdamW) to set before that step, as torch's OneCycleLR does with `cycle_momentum=True`."""

    def __init__(self, name: str, shape, plateau: Plateau | None = None, momentum=None):
        self.name, self.shape, self.plateau, self.momentum = name, shape, plateau, momentum

    def factor(self, step: int) -> float:
        return self.shape(step) * (self.plateau.scale if self.plateau else 1.0)

    def apply(self, optimizer, step: int) -> None:
        """Sets every param group's lr (and momentum or beta1, when the schedule cycles it) for `step`."""
        factor = self.factor(step)
        momentum = self.momentum(step) if self.momentum else None
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
            if momentum is None:
                continue
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum

    def epoch_end(self, metrics: dict) -> None:
        if self.plateau:
            self.plateau.update(metrics)

    def state_dict(self) -> dict:
        """Epoch-based shapes are functions of the step; only the plateau rule has state."""
        return {"plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict) -> None:
        if self.plateau:
            self.plateau.load_state_dict(state["plateau"])

    def phase_changed(self) -> None:
        """Write-up A sets a fresh lr at unfreezing; earlier plateau reductions do not carry over."""
        if self.plateau:
            self.plateau.scale = 1.0


def build_schedule(name: str, epochs: int, steps_per_epoch: int, total_steps: int | None = None,
                   **kwargs) -> LrSchedule:
    """`total_steps`: the run's optimizer steps when a `steps` budget stops the last epoch part-way
    (Budget.steps); None = epochs x steps_per_epoch."""
    total = total_steps if total_steps is not None else epochs * steps_per_epoch
    warmup = round(kwargs.pop("warmup_epochs", 0) * steps_per_epoch)
    try:
        schedule = _make(name, total, steps_per_epoch, warmup, kwargs)
        schedule.factor(0)  # a wrong keyword fails here, before training
        if schedule.momentum:
            schedule.momentum(0)
    except TypeError as err:
        raise ConfigError(f"schedule={name}: {err}") from err
    return schedule


def _make(name, total, steps_per_epoch, warmup, kwargs) -> LrSchedule:
    if name == "constant":
        return LrSchedule(name, partial(constant, total_steps=total, warmup_steps=warmup, **kwargs))
    if name == "cosine":
        return LrSchedule(name, partial(cosine, total_steps=total, warmup_steps=warmup, **kwargs))
    if name == "step":
        return LrSchedule(name, partial(step_decay, total_steps=total, steps_per_epoch=steps_per_epoch,
                                        warmup_steps=warmup, **kwargs))
    if name == "multistep":
        return LrSchedule(name, partial(multistep, total_steps=total, **kwargs))
    if name == "onecycle":
        momentum = {k: kwargs.pop(k) for k in ("base_momentum", "max_momentum") if k in kwargs}
        cycled = kwargs.pop("cycle_momentum", True)
        return LrSchedule(name, partial(one_cycle, total_steps=total, **kwargs),
                          momentum=partial(one_cycle_momentum, total_steps=total, pct_start=kwargs.get("pct_start", 0.3),
                                           **momentum) if cycled else None)
    if name == "plateau":
        return LrSchedule(name, partial(constant, total_steps=total, warmup_steps=warmup), Plateau(**kwargs))
    raise ConfigError(f"schedule.name={name!r} is not known; use constant, cosine, step, multistep, onecycle or plateau")
