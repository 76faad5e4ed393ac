"""Typed specs: what the run layer (tlbench/runner/) turns the composed config into, and what
the code below it takes. Plain dataclasses with their range checks in `__post_init__`: no torch,
no OmegaConf. Each default here is the code's own; the YAML under conf/ is what a run composes
(tests/test_config.py holds the two against each other).

The augmentation settings have one description, `Augment`, that drives both pipelines (the
per-image torchvision one in data/augment.py and the batched one in data/tensor_data.py)."""

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from tlbench.errors import ConfigError

PAD_MODES = ("constant", "reflect", "edge", "symmetric")
BAD_IMAGE_CHOICES = ("fail", "skip")
PIPELINES = ("tensor", "pil")
AUTO_FLAGS = ("auto", True, False)


def _require(ok: bool, key: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} {rule}")


@dataclass
class Augment:
    """The `augment` group, applied in this order: resize, random-resized-crop, rotation, center
    crop, pad-and-crop, flips, color jitter."""
    pad: int = 0                                    # px of padding before a random crop back
    pad_mode: str = "constant"                      # constant | reflect | edge | symmetric
    hflip: float = 0.0                              # probability of a horizontal flip
    vflip: float = 0.0
    color_jitter: Optional[list[float]] = None      # [brightness, contrast, saturation, hue]
    rotation_deg: float = 0.0                       # random rotation in [-deg, deg]
    resize: Optional[int] = None                    # resize to this side first
    center_crop: bool = False
    random_resized_crop: Optional[list[float]] = None  # [min_scale, max_scale]

    def __post_init__(self):
        _require(self.pad >= 0, "augment.pad", self.pad, "must be >= 0 (pixels)")
        _require(self.pad_mode in PAD_MODES, "augment.pad_mode", self.pad_mode, f"is not known; use one of {', '.join(PAD_MODES)}")
        for key in ("hflip", "vflip"):
            _require(0 <= getattr(self, key) <= 1, f"augment.{key}", getattr(self, key), "must be a probability in [0, 1]")
        if self.color_jitter is not None:
            jitter = list(self.color_jitter)
            _require(len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5, "augment.color_jitter", jitter,
                     "must be [brightness, contrast, saturation, hue], all >= 0 and hue <= 0.5")
        _require(0 <= self.rotation_deg <= 180, "augment.rotation_deg", self.rotation_deg, "must be in [0, 180]")
        _require(self.resize is None or self.resize > 0, "augment.resize", self.resize, "must be a positive size or null")
        if self.random_resized_crop is not None:
            scale = list(self.random_resized_crop)
            _require(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "augment.random_resized_crop", scale,
                     "must be [min_scale, max_scale] with 0 < min <= max <= 1")


@dataclass
class DatasetSplits:
    """The keys every data set option shares (its own keys are checked by its builder)."""
    image_size: int = 32
    train_fraction: float = 1.0
    train_per_class: Optional[int] = None
    train_images: Optional[int] = None
    subset_seed: int = 0
    test_fraction: float = 1.0
    val_split: float = 0.1
    split_seed: int = 0
    on_bad_image: str = "fail"

    def __post_init__(self):
        _require(self.image_size > 0, "dataset.image_size", self.image_size, "must be a positive size in pixels")
        for key in ("train_fraction", "test_fraction"):
            _require(0 < getattr(self, key) <= 1, f"dataset.{key}", getattr(self, key), "must be in (0, 1]")
        _require(self.train_per_class is None or self.train_per_class >= 1, "dataset.train_per_class",
                 self.train_per_class, "must be a positive number of training images per class, or null (all)")
        _require(self.train_per_class is None or self.train_fraction == 1, "dataset.train_per_class",
                 self.train_per_class, f"and dataset.train_fraction={self.train_fraction} both choose the training "
                 "subset; set one of them (the other to null / 1.0)")
        _require(self.train_images is None or self.train_images >= 1, "dataset.train_images",
                 self.train_images, "must be a positive number of training images in all, or null (all)")
        _require(self.train_images is None or (self.train_per_class is None and self.train_fraction == 1),
                 "dataset.train_images", self.train_images, f"with dataset.train_per_class={self.train_per_class} / "
                 f"dataset.train_fraction={self.train_fraction}: each chooses the training subset; set one of "
                 "them (the others to null / 1.0)")
        count = self.val_split >= 1 and float(self.val_split).is_integer()  # typed float here: 200 arrives as 200.0
        _require(count or 0 <= self.val_split < 1, "dataset.val_split", self.val_split,
                 "must be a fraction in [0, 1) of train held out to select on (0 = validate on test), or an "
                 "integer number of images (e.g. 200)")
        _require(self.on_bad_image in BAD_IMAGE_CHOICES, "dataset.on_bad_image", self.on_bad_image,
                 "is not known; use fail (stop, naming the file) or skip (leave undecodable files out and count them)")


@dataclass
class DataPath:
    pipeline: str = "tensor"
    cache_dir: str = ""
    device_budget_gb: float = 4.0
    decode_workers: int = 0

    def __post_init__(self):
        _require(self.pipeline in PIPELINES, "data.pipeline", self.pipeline, "is not known; use tensor or pil")
        _require(self.device_budget_gb >= 0, "data.device_budget_gb", self.device_budget_gb, "must be >= 0")
        _require(self.decode_workers >= 0, "data.decode_workers", self.decode_workers, "must be >= 0")


@dataclass
class Training:
    """Top-level settings of the training core."""
    pretrained: bool = True
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    seed: int = 0
    num_workers: int = 0
    label_smoothing: float = 0.1
    clip_grad_norm: Optional[float] = None
    clip_grad_value: Optional[float] = None
    input_size: Optional[int] = None
    amp: Any = "auto"
    channels_last: Any = "auto"
    checkpoint_every_s: float = 60.0

    def __post_init__(self):
        for key in ("epochs", "batch_size"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), "must be a positive integer")
        _require(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size,
                 "must be a positive integer or null (2 x batch_size)")
        _require(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        for key in ("clip_grad_norm", "clip_grad_value"):
            value = getattr(self, key)
            _require(value is None or value > 0, key, value, "must be positive or null (no clipping)")
        _require(self.input_size is None or self.input_size > 0, "input_size", self.input_size,
                 "must be a positive size in pixels or null (= dataset.image_size)")
        for key in ("amp", "channels_last"):
            _require(getattr(self, key) in AUTO_FLAGS, key, getattr(self, key), "must be auto, true or false")
        _require(self.checkpoint_every_s >= 0, "checkpoint_every_s", self.checkpoint_every_s,
                 "must be >= 0 seconds (0 = save after every epoch)")


@dataclass
class Defects:
    """The write-ups' mistakes, each reproducible on purpose (conf/config.yaml `defects`)."""
    freeze_by_name: Optional[str] = None
    freeze_noop: bool = False
    sigmoid_before_loss: bool = False

    def __post_init__(self):
        _require(self.freeze_by_name != "", "defects.freeze_by_name", self.freeze_by_name,
                 "would match every parameter; use null (off) or a substring such as fc")


@dataclass
class LrFind:
    """The `lr_find` block: the LR finder's ramp (tlbench/lr_find.py; fastai's lr_find defaults)."""
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    stop_factor: float = 4.0      # stop once the smoothed loss exceeds this multiple of its minimum
    beta: float = 0.98            # exponential smoothing of the loss (bias-corrected)

    def __post_init__(self):
        _require(0 < self.start_lr < self.end_lr, "lr_find.start_lr", self.start_lr,
                 f"must be positive and below lr_find.end_lr={self.end_lr}")
        _require(self.steps >= 10, "lr_find.steps", self.steps,
                 "must be at least 10 (the suggestion leaves out the first tenth and the last 5 points)")
        _require(self.stop_factor > 1, "lr_find.stop_factor", self.stop_factor, "must be above 1")
        _require(0 <= self.beta < 1, "lr_find.beta", self.beta, "must be in [0, 1)")


HEAD_INITS = ("zeros", "normal", "library", "linear")
MODEL_SOURCES = ("timm", "torchvision")


@dataclass
class ModelSettings:
    """The `model` group (conf/model/*.yaml; models/__init__.py builds it). The name is checked
    against the source's registry when the run starts, with the closest names suggested."""
    name: str = "resnet18"
    source: str = "timm"                 # timm or torchvision
    weights_file: Optional[str] = None   # local pretrained weights (README "Local weights, offline")
    head_init: str = "zeros"             # the new head: zeros, normal (std 0.01), library, linear
    kwargs: dict = field(default_factory=dict)  # passed on to the builder (timm.create_model, torchvision)

    def __post_init__(self):
        _require(self.source in MODEL_SOURCES, "model.source", self.source,
                 f"is not known; use one of {', '.join(MODEL_SOURCES)}")
        _require(self.head_init in HEAD_INITS, "model.head_init", self.head_init,
                 f"is not known; use one of {', '.join(HEAD_INITS)}")


@dataclass
class Freeze:
    """What every freeze option that trains takes (conf/freeze/*.yaml; training/freeze.py)."""
    train_bn: bool = False               # frozen BatchNorm layers train (batch statistics) or stay in eval mode
    bn_eval: bool = False                # every BatchNorm layer in eval mode in every phase (wins over train_bn)
    keep_optimizer_state: bool = False   # a phase change carries the state of parameters already training


@dataclass
class NoFreezeSettings(Freeze):
    train_bn: bool = True


@dataclass
class LinearProbeSettings(Freeze):
    head_lr_ratio: float = 10.0          # the head trains at this multiple of optimizer.lr

    def __post_init__(self):
        _require(self.head_lr_ratio > 0, "freeze.head_lr_ratio", self.head_lr_ratio, "must be positive")


@dataclass
class FreezeUnfreezeSettings(Freeze):
    epochs: int = 5                      # epochs with the backbone frozen
    backbone_lr: Optional[float] = None  # the backbone's lr after unfreezing; None = backbone_lr_ratio x lr
    backbone_lr_ratio: float = 0.1
    head_lr: Optional[float] = None      # the head's lr after unfreezing; None = the optimizer's lr


@dataclass
class GradualSettings(Freeze):
    epochs_per_stage: int = 1

    def __post_init__(self):
        _require(self.epochs_per_stage >= 1, "freeze.epochs_per_stage", self.epochs_per_stage, "must be at least 1")


@dataclass
class LayerDecaySettings(Freeze):
    train_bn: bool = True
    decay: float = 0.7                   # each stage below the head trains at decay x the lr of the one above

    def __post_init__(self):
        _require(0 < self.decay <= 1, "freeze.decay", self.decay, "must be in (0, 1]")


@dataclass
class BitFitSettings(Freeze):
    lr_ratio: float = 10.0               # biases, norm parameters and head at lr_ratio x optimizer.lr

    def __post_init__(self):
        _require(self.lr_ratio > 0, "freeze.lr_ratio", self.lr_ratio, "must be positive")


@dataclass
class LoraSettings(Freeze):
    rank: int = 4                        # peft's r
    alpha: float = 8.0                   # peft's lora_alpha
    dropout: float = 0.0                 # peft's lora_dropout
    target_modules: Any = "auto"         # auto, or a list of regular expressions of module names
    lr_ratio: float = 1.0                # adapters and head at lr_ratio x optimizer.lr

    def __post_init__(self):
        _require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1, "freeze.rank",
                 self.rank, "must be a positive integer (LoRA's r)")
        _require(self.alpha > 0 and 0 <= self.dropout < 1 and self.lr_ratio > 0, "freeze.alpha", self.alpha,
                 f"and freeze.lr_ratio={self.lr_ratio} must be positive and freeze.dropout={self.dropout} in [0, 1)")
        targets = self.target_modules
        _require(targets == "auto" or (not isinstance(targets, str) and len(list(targets)) > 0),
                 "freeze.target_modules", targets,
                 "must be auto or a list of regular expressions of module names, e.g. ['.*qkv']")


FREEZES = {"none": NoFreezeSettings, "linear_probe": LinearProbeSettings, "freeze_unfreeze": FreezeUnfreezeSettings,
           "gradual": GradualSettings, "layer_decay": LayerDecaySettings, "bitfit": BitFitSettings,
           "lora": LoraSettings}


@dataclass
class OptimizerSettings:
    """What every optimizer option takes (conf/optimizer/*.yaml; training/optim.py). Any other key
    (+optimizer.eps=1e-6, +optimizer.foreach=true) goes to torch's optimizer as given, and torch
    checks it when the run layer builds the factory."""
    lr: Any = 1e-3                       # a positive number, or find (the LR finder picks it per phase)
    weight_decay: float = 0.0
    filter_bias_and_bn: bool = True      # no weight decay on 1-D parameters and no_weight_decay() names (timm)

    def __post_init__(self):
        number = isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool)
        _require(self.lr == "find" or (number and 0 < self.lr and math.isfinite(self.lr)), "optimizer.lr", self.lr,
                 "must be a positive number (e.g. 1e-3) or find (the LR finder picks it: README \"LR finder\")")
        _require(self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay, "must be >= 0")


@dataclass
class SgdSettings(OptimizerSettings):
    lr: Any = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4

    def __post_init__(self):
        super().__post_init__()
        _require(0 <= self.momentum < 1, "optimizer.momentum", self.momentum, "must be in [0, 1)")


@dataclass
class AdamSettings(OptimizerSettings):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        betas = list(self.betas)
        _require(len(betas) == 2 and all(0 <= b < 1 for b in betas), "optimizer.betas", betas,
                 "must be [beta1, beta2], each in [0, 1)")


@dataclass
class AdamWSettings(AdamSettings):
    weight_decay: float = 0.05           # decoupled weight decay


OPTIMIZERS = {"sgd": SgdSettings, "adam": AdamSettings, "adamw": AdamWSettings}


@dataclass
class ConstantSchedule:
    warmup_epochs: float = 0.0           # linear warm-up over this many epochs (fractions allowed)

    def __post_init__(self):
        _require(self.warmup_epochs >= 0, "schedule.warmup_epochs", self.warmup_epochs, "must be >= 0")


@dataclass
class CosineSchedule(ConstantSchedule):
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0            # the cosine ends at min_lr_ratio x lr

    def __post_init__(self):
        super().__post_init__()
        _require(0 <= self.min_lr_ratio <= 1, "schedule.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")


@dataclass
class StepSchedule(ConstantSchedule):
    step_epochs: int = 10                # multiply the lr by gamma every step_epochs epochs
    gamma: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _require(self.step_epochs >= 1, "schedule.step_epochs", self.step_epochs, "must be at least 1")
        _require(self.gamma > 0, "schedule.gamma", self.gamma, "must be positive")


@dataclass
class OneCycleSchedule:
    pct_start: float = 0.3               # torch's OneCycleLR: the share of steps spent rising
    div_factor: float = 25.0             # starts at lr / div_factor
    final_div_factor: float = 1e4        # ends at lr / div_factor / final_div_factor
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self):
        _require(0 < self.pct_start < 1, "schedule.pct_start", self.pct_start, "must be in (0, 1)")
        _require(self.div_factor > 0 and self.final_div_factor > 0, "schedule.div_factor", self.div_factor,
                 f"and schedule.final_div_factor={self.final_div_factor} must be positive")
        _require(0 <= self.base_momentum <= self.max_momentum <= 1, "schedule.base_momentum", self.base_momentum,
                 f"must be in [0, schedule.max_momentum={self.max_momentum}] and max_momentum <= 1")


@dataclass
class PlateauSchedule:
    monitor: str = "val_loss"            # val_loss (lower is better) or val_acc (the data set's metric on val)
    factor: float = 0.5                  # ReduceLROnPlateau's rule: the lr is multiplied by factor ...
    patience: int = 2                    # ... after more than patience epochs without improvement

    def __post_init__(self):
        _require(self.monitor in ("val_loss", "val_acc"), "schedule.monitor", self.monitor,
                 "is not known; use val_loss (lower is better) or val_acc")
        _require(0 < self.factor < 1, "schedule.factor", self.factor, "must be in (0, 1)")
        _require(self.patience >= 0, "schedule.patience", self.patience, "must be >= 0")


SCHEDULES = {"constant": ConstantSchedule, "cosine": CosineSchedule, "step": StepSchedule,
             "onecycle": OneCycleSchedule, "plateau": PlateauSchedule}


REFIT_CHOICES = ("train_val", "train")


@dataclass
class Knn:
    k: int = 20                  # DINO's default (it also reports 10, 100, 200)
    temperature: float = 0.07    # DINO's T: votes weighted exp(cosine similarity / T)

    def __post_init__(self):
        _require(self.k >= 1, "freeze.k", self.k,
                 "must be a positive integer: the number of nearest training images that vote (DINO: 20)")
        _require(self.temperature > 0, "freeze.temperature", self.temperature,
                 "must be positive: votes are weighted exp(similarity / temperature) (DINO: 0.07)")


@dataclass
class Logreg:
    C_grid: list[float] = field(default_factory=lambda: [10.0 ** e for e in range(-4, 3)])
    refit_on: str = "train_val"  # Kornblith et al.: refit on train + val with the chosen C
    standardize: bool = True     # zero mean, unit variance per feature (train statistics): L-BFGS converges
    max_iter: int = 1000

    def __post_init__(self):
        grid = list(self.C_grid)
        _require(len(grid) > 0 and all(c > 0 for c in grid), "freeze.C_grid", grid,
                 "must be a non-empty list of positive values of C (inverse L2 strength), "
                 "e.g. freeze.C_grid=[0.001,0.01,0.1,1,10]")
        _require(self.refit_on in REFIT_CHOICES, "freeze.refit_on", self.refit_on,
                 "is not known; use train_val (refit the chosen C on train + val, as Kornblith et al.) "
                 "or train")
        _require(self.max_iter >= 1, "freeze.max_iter", self.max_iter, "must be a positive integer")


PROBES = {"knn": Knn, "logreg": Logreg}


@dataclass
class FeatureSpec:
    """How a probe's frozen features are extracted and cached (tlbench/probes/features.py): the
    model as named in the config, the preprocessing, and where the decode and feature caches live."""
    model_name: str
    model_source: str
    model_kwargs: dict
    mean: tuple
    std: tuple
    input_size: Optional[int]      # None = the data set's image size
    eval_batch_size: int
    amp: bool
    cache_dir: str
    dataset_name: str
    decode_workers: int = 0
    device_budget_gb: float = 4.0


def closed(schema, values, group: str) -> dict:
    """`values` as a plain dict, failing on a key `schema` does not have (naming the ones it has)."""
    values = dict(values)
    unknown = sorted(set(values) - {f.name for f in fields(schema)})
    if unknown:
        raise ConfigError(f"{group} does not take {', '.join(unknown)}; it takes "
                          f"{', '.join(f.name for f in fields(schema))}")
    return values


def freeze(name: str, values, total_epochs: int) -> Freeze:
    """A training freeze option's settings (`name` in FREEZES), with the one rule across groups:
    freeze_unfreeze's frozen epochs fit in the run."""
    if name not in FREEZES:
        raise ConfigError(f"freeze.name={name!r} is not known; use one of {', '.join([*FREEZES, *PROBES])}")
    found = FREEZES[name](**closed(FREEZES[name], values, f"freeze={name}"))
    if name == "freeze_unfreeze":
        _require(0 <= found.epochs <= total_epochs, "freeze.epochs", found.epochs,
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


def augment(values) -> Augment:
    """The `augment` group's keys as an Augment (already typed at the run layer's edge)."""
    return values if isinstance(values, Augment) else Augment(**closed(Augment, values, "augment"))
