"""Each option of the freeze, optimizer and schedule groups, and the two probes: one dataclass per
option, holding its defaults and range checks (conf/<group>/<option>.yaml has exactly its keys:
tests/test_defaults.py)."""

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from tlbench.errors import ConfigError
from tlbench.specs.checks import closed, require

@dataclass
class Freeze:
    """What every freeze option that trains takes (conf/freeze/*.yaml; training/freeze.py)."""
    train_bn: bool = False               # frozen BatchNorm layers train (batch statistics) or stay in eval mode
    bn_eval: bool = False                # every BatchNorm layer in eval mode in every phase (wins over train_bn)
    keep_optimizer_state: bool = False   # a phase change carries the state of parameters already training


@dataclass
class NoFreezeSettings(Freeze):
    train_bn: bool = True


# freeze.head_lr_ratio=auto (issue 22, docs/results/a-linear-probes-head-by-size.md): a linear probe's head at
# 10 x lr when the model sees inputs smaller than HEAD_LR_INPUT px (CIFAR-10 at 32 px: the features are far from
# the weights' own, and 10 x lr was 4.8 points ahead at ~495 images per class), else at 1 x lr (ahead by 2.4-5.9
# points at 10-500 images per class at 96 px, within 0.6 of 10 x lr on digits at 64 px from 50 per class up).
HEAD_LR_INPUT = 64
HEAD_LR_SMALL_INPUT, HEAD_LR_OTHERWISE = 10.0, 1.0


@dataclass
class LinearProbeSettings(Freeze):
    head_lr_ratio: Any = "auto"          # the head trains at this multiple of optimizer.lr; auto: by input size

    def __post_init__(self):
        number = isinstance(self.head_lr_ratio, (int, float)) and not isinstance(self.head_lr_ratio, bool)
        require(self.head_lr_ratio == "auto" or (number and self.head_lr_ratio > 0), "freeze.head_lr_ratio",
                self.head_lr_ratio, f"must be a positive number, or auto (10 for inputs under {HEAD_LR_INPUT} px, "
                "else 1)")

    def ratio_for(self, input_size: int | None) -> float:
        """The head's multiple of the lr for a model fed `input_size` px squares (auto's rule)."""
        if self.head_lr_ratio != "auto":
            return float(self.head_lr_ratio)
        if input_size is None:
            raise ValueError("freeze.head_lr_ratio=auto needs the model's input size")
        return HEAD_LR_SMALL_INPUT if input_size < HEAD_LR_INPUT else HEAD_LR_OTHERWISE


@dataclass
class FreezeUnfreezeSettings(Freeze):
    epochs: float = 5                    # epochs with the backbone frozen (a whole number; 2.0 from a search is fine)
    backbone_lr: Optional[float] = None  # the backbone's lr after unfreezing; None = backbone_lr_ratio x lr
    backbone_lr_ratio: float = 0.1
    head_lr: Optional[float] = None      # the head's lr after unfreezing; None = the optimizer's lr


@dataclass
class GradualSettings(Freeze):
    epochs_per_stage: float = 1

    def __post_init__(self):
        require(self.epochs_per_stage >= 1, "freeze.epochs_per_stage", self.epochs_per_stage, "must be at least 1")


@dataclass
class LayerDecaySettings(Freeze):
    train_bn: bool = True
    decay: float = 0.7                   # each stage below the head trains at decay x the lr of the one above

    def __post_init__(self):
        require(0 < self.decay <= 1, "freeze.decay", self.decay, "must be in (0, 1]")


# freeze=bitfit's lr_ratio (issue 22, seventh pass; docs/results/bitfit-lr-by-input-size.md): 3 under the step floor
# (min_steps=60) at 32, 64 and 96 px inputs and 10-100 images per class; 10 (the default of 2026-12-02, chosen
# without the floor) overfit the smallest splits (4.7 points behind 3 at 10 per class, 96 px).
# BitFit's own random_init_lr_ratio (issue 22, tenth pass; docs/results/defaults-on-lite1-and-random-init.md): from
# random weights BitFit trains biases on random features, and the 3 x lr that full fine-tuning, the linear probe and
# LoRA gain from overshoots there: BitFit keeps its lr (1), in place of the top-level ratio.
@dataclass
class BitFitSettings(Freeze):
    lr_ratio: float = 3.0                # biases, norm parameters and head at lr_ratio x optimizer.lr
    random_init_lr_ratio: Any = 1.0      # pretrained=false: optimizer.lr x this (in place of the top-level key)

    def __post_init__(self):
        require(self.lr_ratio > 0, "freeze.lr_ratio", self.lr_ratio, "must be positive")
        ratio = self.random_init_lr_ratio
        require(isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0,
                "freeze.random_init_lr_ratio", ratio,
                "must be a positive multiple of optimizer.lr for BitFit from random weights (it replaces the "
                "top-level random_init_lr_ratio for freeze=bitfit)")


# freeze=lora's lr_ratio: auto (issue 22, eleventh pass; docs/results/defaults-on-lite1-and-random-init.md): LoRA's
# best step grows with the data. Pretrained lite0 at 96 px: 1 x lr ahead of 3 x by ~3 points at 10-20 images per
# class, the two level at 50, 3 x ahead by 1.5 at 100 and 1.4 at 200; lite1: 1 x ahead by 4.3 at 10, level at 100.
# From random weights the run already trains at random_init_lr_ratio (3) x lr, and 3 x more on top lost there
# (lite0, 32 px, 100 per class): auto keeps 1 for pretrained=false.
LORA_RATIO_FROM_PER_CLASS = 50     # training images per class from which auto trains at LORA_RATIO_LARGE x lr
LORA_RATIO_SMALL, LORA_RATIO_LARGE = 1.0, 3.0


@dataclass
class LoraSettings(Freeze):
    rank: int = 4                        # peft's r
    alpha: float = 8.0                   # peft's lora_alpha
    dropout: float = 0.0                 # peft's lora_dropout
    target_modules: Any = "auto"         # auto, or a list of regular expressions of module names
    lr_ratio: Any = "auto"               # adapters and head at lr_ratio x optimizer.lr; auto: by images per class

    def __post_init__(self):
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1, "freeze.rank",
                 self.rank, "must be a positive integer (LoRA's r)")
        require(self.alpha > 0 and 0 <= self.dropout < 1, "freeze.alpha", self.alpha,
                 f"must be positive and freeze.dropout={self.dropout} in [0, 1)")
        number = isinstance(self.lr_ratio, (int, float)) and not isinstance(self.lr_ratio, bool)
        require(self.lr_ratio == "auto" or (number and self.lr_ratio > 0), "freeze.lr_ratio", self.lr_ratio,
                f"must be a positive number, or auto ({LORA_RATIO_SMALL:g} under {LORA_RATIO_FROM_PER_CLASS} "
                f"training images per class or from random weights, else {LORA_RATIO_LARGE:g})")
        targets = self.target_modules
        require(targets == "auto" or (not isinstance(targets, str) and len(list(targets)) > 0),
                 "freeze.target_modules", targets,
                 "must be auto or a list of regular expressions of module names, e.g. ['.*qkv']")

    def ratio_for(self, images_per_class: float | None, pretrained: bool = True) -> float:
        """The adapters' and head's multiple of the lr for a run that trains on `images_per_class` (auto's rule;
        from random weights 1: the run's lr is already random_init_lr_ratio x optimizer.lr)."""
        if self.lr_ratio != "auto":
            return float(self.lr_ratio)
        if not pretrained:
            return LORA_RATIO_SMALL
        if images_per_class is None:
            raise ValueError("freeze.lr_ratio=auto needs the training images per class")
        return LORA_RATIO_LARGE if images_per_class >= LORA_RATIO_FROM_PER_CLASS else LORA_RATIO_SMALL


@dataclass
class SurgicalSettings(Freeze):
    stage: Any = -1                      # the one stage of the backbone that trains (0 = the stem; -1 = the last)

    def __post_init__(self):
        require(isinstance(self.stage, int) and not isinstance(self.stage, bool), "freeze.stage", self.stage,
                "must be a stage's index: 0 = the stem, 1 = the first block after it, ..., -1 = the last before "
                "the head")


FREEZES = {"none": NoFreezeSettings, "linear_probe": LinearProbeSettings, "freeze_unfreeze": FreezeUnfreezeSettings,
           "gradual": GradualSettings, "layer_decay": LayerDecaySettings, "bitfit": BitFitSettings,
           "lora": LoraSettings, "surgical": SurgicalSettings}


@dataclass
class OptimizerSettings:
    """What every optimizer option takes (conf/optimizer/*.yaml; training/optim.py). Any other key
    (+optimizer.eps=1e-6, +optimizer.foreach=true) goes to torch's optimizer as given, and torch
    checks it when the run layer builds the factory."""
    lr: Any = 1e-3                       # a positive number, or find (the LR finder picks it per phase)
    weight_decay: float = 0.0
    filter_bias_and_bn: bool = True      # no weight decay on 1-D parameters and no_weight_decay() names (timm)
    decay_per_lr: bool = False           # weight_decay / lr is what decays: Kornblith et al.'s grid (optim.py)

    def __post_init__(self):
        number = isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        require(not (self.decay_per_lr and self.lr == "find"), "optimizer.decay_per_lr", self.decay_per_lr,
                "divides weight_decay by the learning rate, which optimizer.lr=find does not know in advance; "
                "give a number for optimizer.lr, or set optimizer.decay_per_lr=false")
        require(self.lr == "find" or (number and 0 < self.lr and math.isfinite(self.lr)), "optimizer.lr", self.lr,
                 "must be a positive number (e.g. 1e-3) or find (the LR finder picks it: docs/how-to/lr-finder.md)")
        require(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "must be >= 0")


@dataclass
class SgdSettings(OptimizerSettings):
    lr: Any = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4

    def __post_init__(self):
        super().__post_init__()
        require(self.momentum >= 0, "optimizer.momentum", self.momentum, "must be >= 0")


@dataclass
class AdamSettings(OptimizerSettings):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        betas = list(self.betas)
        require(len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", betas,
                 "must be [beta1, beta2], each in [0, 1)")


@dataclass
class AdamWSettings(AdamSettings):
    weight_decay: float = 0.05           # decoupled weight decay


OPTIMIZERS = {"sgd": SgdSettings, "adam": AdamSettings, "adamw": AdamWSettings}


@dataclass
class ConstantSchedule:
    warmup_epochs: float = 0.0           # linear warm-up over this many epochs (fractions allowed)

    def __post_init__(self):
        require(self.warmup_epochs >= 0, "schedule.warmup_epochs", self.warmup_epochs, "must be >= 0")


@dataclass
class CosineSchedule(ConstantSchedule):
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0            # the cosine ends at min_lr_ratio x lr

    def __post_init__(self):
        super().__post_init__()
        require(0 <= self.min_lr_ratio <= 1, "schedule.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")


@dataclass
class StepSchedule(ConstantSchedule):
    step_epochs: float = 10              # multiply the lr by gamma every step_epochs epochs
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        require(self.step_epochs > 0, "schedule.step_epochs", self.step_epochs, "must be positive")
        require(self.gamma > 0, "schedule.gamma", self.gamma, "must be positive")


@dataclass
class MultistepSchedule:
    """VTAB's schedule, in optimizer steps (training/schedules.py multistep)."""
    milestones: list[int] = field(default_factory=lambda: [300, 600, 900])  # steps after which the lr is x gamma
    gamma: float = 0.1
    warmup_steps: int = 80               # linear warm-up from 0 over this many steps

    def __post_init__(self):
        milestones = list(self.milestones)
        require(all(isinstance(m, int) and m >= 0 for m in milestones) and milestones == sorted(milestones),
                "schedule.milestones", milestones, "must be optimizer steps (integers >= 0) in increasing order")
        require(self.gamma > 0, "schedule.gamma", self.gamma, "must be positive")
        require(self.warmup_steps >= 0, "schedule.warmup_steps", self.warmup_steps, "must be >= 0 optimizer steps")


@dataclass
class OneCycleSchedule:
    warmup_epochs: float = 0.0           # not in onecycle.yaml; accepted and unused, as always (pct_start rises)
    pct_start: float = 0.3               # torch's OneCycleLR: the share of steps spent rising
    div_factor: float = 25.0             # starts at lr / div_factor
    final_div_factor: float = 1e4        # ends at lr / div_factor / final_div_factor
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self):
        require(0 < self.pct_start < 1, "schedule.pct_start", self.pct_start, "must be in (0, 1)")
        require(self.div_factor > 0 and self.final_div_factor > 0, "schedule.div_factor", self.div_factor,
                 f"and schedule.final_div_factor={self.final_div_factor} must be positive")
        require(0 <= self.base_momentum <= self.max_momentum <= 1, "schedule.base_momentum", self.base_momentum,
                 f"must be in [0, schedule.max_momentum={self.max_momentum}] and max_momentum <= 1")


@dataclass
class PlateauSchedule:
    warmup_epochs: float = 0.0           # not in plateau.yaml; a linear warm-up before the plateau rule, as always
    monitor: str = "val_loss"            # val_loss (lower is better) or val_acc (the data set's metric on val)
    factor: float = 0.5                  # ReduceLROnPlateau's rule: the lr is multiplied by factor ...
    patience: float = 2                  # ... after more than patience epochs without improvement

    def __post_init__(self):
        require(self.monitor in ("val_loss", "val_acc", "val_mean_class_acc"), "schedule.monitor", self.monitor,
                 "is not known; use val_loss (lower is better) or val_acc")
        require(0 < self.factor < 1, "schedule.factor", self.factor, "must be in (0, 1)")
        require(self.patience >= 0, "schedule.patience", self.patience, "must be >= 0")


SCHEDULES = {"constant": ConstantSchedule, "cosine": CosineSchedule, "step": StepSchedule,
             "multistep": MultistepSchedule, "onecycle": OneCycleSchedule, "plateau": PlateauSchedule}


REFIT_CHOICES = ("train_val", "train")


@dataclass
class Knn:
    k: int = 20                  # DINO's default (it also reports 10, 100, 200)
    temperature: float = 0.07    # DINO's T: votes weighted exp(cosine similarity / T)

    def __post_init__(self):
        require(self.k >= 1, "freeze.k", self.k,
                 "must be a positive integer: the number of nearest training images that vote (DINO: 20)")
        require(self.temperature > 0, "freeze.temperature", self.temperature,
                 "must be positive: votes are weighted exp(similarity / temperature) (DINO: 0.07)")


@dataclass
class Logreg:
    C_grid: list[float] = field(default_factory=lambda: [10.0 ** e for e in range(-4, 3)])
    refit_on: str = "train_val"  # Kornblith et al.: refit on train + val with the chosen C
    max_iter: int = 1000
    standardize: bool = False    # zero mean, unit variance per feature (train statistics); raw measured better
    cv_folds: Any = "auto"       # auto: 5-fold when val is small (cv_folds_for); 0: C on val; k >= 2: k-fold over train + val
    l2_grid: Any = None          # None: C_grid; a list of L2 strengths (or `kornblith`) in place of it: grid(), C()

    def __post_init__(self):
        grid = list(self.C_grid)
        require(len(grid) > 0 and all(c > 0 for c in grid), "freeze.C_grid", grid,
                 "must be a non-empty list of positive values of C (inverse L2 strength), "
                 "e.g. freeze.C_grid=[0.001,0.01,0.1,1,10]")
        l2 = self.l2_grid
        require(l2 is None or l2 == KORNBLITH_L2 or (not isinstance(l2, str) and len(list(l2)) > 0
                                                   and all(v > 0 for v in l2)), "freeze.l2_grid", l2,
                f"must be null (use C_grid), {KORNBLITH_L2} (Kornblith et al.'s 45 values, 1e-6 to 1e5) or a "
                "non-empty list of positive L2 strengths, e.g. freeze.l2_grid=[1e-4,1e-3,1e-2]")

        require(self.refit_on in REFIT_CHOICES, "freeze.refit_on", self.refit_on,
                 "is not known; use train_val (refit the chosen C on train + val, as Kornblith et al.) "
                 "or train")
        require(self.max_iter >= 1, "freeze.max_iter", self.max_iter, "must be a positive integer")
        folds_ok = self.cv_folds == "auto" or (isinstance(self.cv_folds, int) and not isinstance(self.cv_folds, bool)
                                               and (self.cv_folds == 0 or self.cv_folds >= 2))
        require(folds_ok, "freeze.cv_folds", self.cv_folds,
                "must be auto (5-fold cross-validation when the val split has fewer than 1,000 images), 0 (choose C "
                "on val) or a number of folds >= 2 (stratified cross-validation over train + val)")

    def grid(self) -> list[float]:
        """The values searched, strongest regularization first: C_grid ascending, or l2_grid descending."""
        if self.l2_grid is None:
            return sorted(float(c) for c in self.C_grid)
        low, high = KORNBLITH_L2_RANGE
        values = ([10.0 ** (low + (high - low) * i / (KORNBLITH_L2_COUNT - 1)) for i in range(KORNBLITH_L2_COUNT)]
                  if self.l2_grid == KORNBLITH_L2 else self.l2_grid)
        return sorted((float(v) for v in values), reverse=True)

    def C(self, value: float, images: int) -> float:
        """scikit-learn's C for one grid value and a fit on `images` images. An L2 strength l is per image:
        scikit-learn minimizes C * (summed cross-entropy) + |w|^2 / 2, which is the mean cross-entropy
        + l |w|^2 / 2 with C = 1 / (l * images); so a fit on train + val keeps the strength chosen on train."""
        return value if self.l2_grid is None else 1.0 / (value * images)

    def cv_folds_for(self, val_images: int, val_is_test: bool) -> int:
        """The folds this fit uses: `auto` cross-validates (CV_AUTO_FOLDS) whenever choosing on val would
        be noisy (fewer than CV_AUTO_BELOW_VAL images: a val accuracy's standard error is then above 1.5
        points) or would choose on the reported split (val is test); else it chooses on val."""
        if self.cv_folds != "auto":
            return self.cv_folds
        return CV_AUTO_FOLDS if val_is_test or val_images < CV_AUTO_BELOW_VAL else 0


KORNBLITH_L2 = "kornblith"  # freeze.l2_grid: Kornblith et al. 2019's grid, 45 log-spaced L2 strengths from 1e-6 to 1e5
KORNBLITH_L2_RANGE, KORNBLITH_L2_COUNT = (-6, 5), 45
CV_AUTO_FOLDS = 5          # freeze.cv_folds=auto: 5-fold, as LogisticRegressionCV's default
CV_AUTO_BELOW_VAL = 1000   # ... when the val split has fewer images than this
PROBES = {"knn": Knn, "logreg": Logreg}


def freeze(name: str, values, total_epochs: int) -> Freeze:
    """A training freeze option's settings (`name` in FREEZES), with the one rule across groups:
    freeze_unfreeze's frozen epochs fit in the run."""
    if name not in FREEZES:
        raise ConfigError(f"freeze.name={name!r} is not known; use one of {', '.join([*FREEZES, *PROBES])}")
    found = FREEZES[name](**closed(FREEZES[name], values, f"freeze={name}"))
    if name == "freeze_unfreeze":
        require(0 <= found.epochs <= total_epochs, "freeze.epochs", found.epochs,
                 f"must be between 0 and epochs={total_epochs}; lower freeze.epochs or raise epochs")
    return found


def optimizer(name: str, values) -> OptimizerSettings:
    """An optimizer option's own settings (`name` in OPTIMIZERS); other keys are torch's to check."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name={name!r} is not known; use one of {', '.join(OPTIMIZERS)}")
    known = {f.name for f in fields(OPTIMIZERS[name])}
    return OPTIMIZERS[name](**{k: v for k, v in dict(values).items() if k in known})


def schedule(name: str, values):
    """A schedule option's settings (`name` in SCHEDULES); unknown keys fail, naming the known ones."""
    if name not in SCHEDULES:
        raise ConfigError(f"schedule.name={name!r} is not known; use one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**closed(SCHEDULES[name], values, f"schedule={name}"))
