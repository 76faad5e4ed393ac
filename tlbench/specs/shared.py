"""The settings every run shares: the top-level keys (Training), the data path, the data set's
shared keys, augmentation, the write-ups' defects, the LR finder's ramp, the model group, and how a
probe extracts its features. The augmentation settings have one description, `Augment`, that drives
both pipelines (the per-image torchvision one in data/augment.py and the batched one in
data/tensor_data.py)."""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from tlbench.specs.checks import closed, require

PAD_MODES = ("constant", "reflect", "edge", "symmetric")
BAD_IMAGE_CHOICES = ("fail", "skip")
PIPELINES = ("tensor", "pil")
PREPROCESSES = ("squash", "crop")
TRAIN_ON = ("train", "train_val")  # dataset.train_on: train, or train + val (a protocol's refit, once chosen)
DEFAULT_CROP_FRACTION = 0.875  # timm's and torchvision's ImageNet eval crop (224 of 256), when the weights name none
AUTO_FLAGS = ("auto", True, False)
# What a data set reports (DataSplits.metric; records/results.py METRIC_FIELDS maps each to its epoch fields):
# top-1 accuracy, or the mean over classes of each class's accuracy (Kornblith et al. 2019's choice for some sets).
METRICS = ("top1", "mean_per_class")
# How a fine-tuning run picks its val-chosen epoch (`select_epoch`; records/results.py chosen_position
# applies them). Ties go to the earlier epoch under every rule.
WISE_BN_RULES = ("interpolate", "recompute")  # wise_ft_bn: a mix's BatchNorm statistics (training/wise.py)
SELECT_RULES = {
    "acc": "the highest val metric",
    "acc_loss": "the highest val metric, a tie broken by the lower val loss",
    "loss": "the lowest val loss",
    "smoothed": "the highest centred 3-epoch mean of the val metric, a tie broken by the lower val loss",
    "final": "the last epoch",
}


def epoch_rule(select_epoch: str, random_init_select_epoch: str | None, pretrained: bool) -> str:
    """The one home of which rule picks a run's val-chosen epoch: random_init_select_epoch for a random-init run
    (unless null), else select_epoch. From random weights the default budgets end still climbing, and choosing an
    earlier epoch on a 200-image val split cost 0.3-1 point against the last (issue 22)."""
    if not pretrained and random_init_select_epoch is not None:
        return random_init_select_epoch
    return select_epoch


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
        require(self.pad >= 0, "augment.pad", self.pad, "must be >= 0 (pixels)")
        require(self.pad_mode in PAD_MODES, "augment.pad_mode", self.pad_mode, f"is not known; use one of {', '.join(PAD_MODES)}")
        for key in ("hflip", "vflip"):
            require(0 <= getattr(self, key) <= 1, f"augment.{key}", getattr(self, key), "must be a probability in [0, 1]")
        if self.color_jitter is not None:
            jitter = list(self.color_jitter)
            require(len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5, "augment.color_jitter", jitter,
                     "must be [brightness, contrast, saturation, hue], all >= 0 and hue <= 0.5")
        require(0 <= self.rotation_deg <= 180, "augment.rotation_deg", self.rotation_deg, "must be in [0, 180]")
        require(self.resize is None or self.resize > 0, "augment.resize", self.resize, "must be a positive size or null")
        if self.random_resized_crop is not None:
            scale = list(self.random_resized_crop)
            require(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, "augment.random_resized_crop", scale,
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
    preprocess: str = "squash"       # squash | crop (Preprocess)
    crop_fraction: Any = "model"     # a number in (0, 1], or model: the weights' own
    train_on: str = "train"          # train | train_val: a select-then-refit protocol's refit (python -m tlbench.refit)
    metric: Optional[str] = None     # what selects and is reported: null = the data set's own (its literature's), or
                                     # one of METRICS for all sets (VTAB reports top-1 everywhere)

    def __post_init__(self):
        preprocess(self.preprocess, self.crop_fraction)
        require(self.train_on in TRAIN_ON, "dataset.train_on", self.train_on,
                "is not known; use train, or train_val (train on train + val: a refit once the setting is chosen)")
        require(self.metric is None or self.metric in METRICS, "dataset.metric", self.metric,
                f"is not known; use {' or '.join(METRICS)}, or null (the data set's own)")
        require(self.image_size > 0, "dataset.image_size", self.image_size, "must be a positive size in pixels")
        for key in ("train_fraction", "test_fraction"):
            require(0 < getattr(self, key) <= 1, f"dataset.{key}", getattr(self, key), "must be in (0, 1]")
        require(self.train_per_class is None or self.train_per_class >= 1, "dataset.train_per_class",
                 self.train_per_class, "must be a positive number of training images per class, or null (all)")
        require(self.train_per_class is None or self.train_fraction == 1, "dataset.train_per_class",
                 self.train_per_class, f"and dataset.train_fraction={self.train_fraction} both choose the training "
                 "subset; set one of them (the other to null / 1.0)")
        require(self.train_images is None or self.train_images >= 1, "dataset.train_images",
                 self.train_images, "must be a positive number of training images in all, or null (all)")
        require(self.train_images is None or (self.train_per_class is None and self.train_fraction == 1),
                 "dataset.train_images", self.train_images, f"with dataset.train_per_class={self.train_per_class} / "
                 f"dataset.train_fraction={self.train_fraction}: each chooses the training subset; set one of "
                 "them (the others to null / 1.0)")
        count = self.val_split >= 1 and float(self.val_split).is_integer()  # typed float here: 200 arrives as 200.0
        require(count or 0 <= self.val_split < 1, "dataset.val_split", self.val_split,
                 "must be a fraction in [0, 1) of train held out to select on (0 = validate on test), or an "
                 "integer number of images (e.g. 200)")
        require(self.on_bad_image in BAD_IMAGE_CHOICES, "dataset.on_bad_image", self.on_bad_image,
                 "is not known; use fail (stop, naming the file) or skip (leave undecodable files out and count them)")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes image_size x image_size before augmentation (`dataset.preprocess`).
    squash: both sides resized to image_size, the aspect ratio lost (the write-ups' Resize((s, s)),
    and the small square sets, where it changes nothing). crop: the field's preprocessing of photos
    for pretrained weights (timm's pretrained_cfg, torchvision's presets): evaluation resizes the
    shorter side to floor(image_size / crop_fraction) and takes the central image_size square;
    training draws augment.random_resized_crop boxes from the whole photo (its longer side kept up to
    4:3), or takes the evaluation view when that is off."""
    mode: str = "squash"
    crop_fraction: float = DEFAULT_CROP_FRACTION

    def __post_init__(self):
        require(self.mode in PREPROCESSES, "dataset.preprocess", self.mode,
                 "is not known; use crop (shorter side, then a center crop: photos) or squash (resize both sides)")
        require(0 < self.crop_fraction <= 1, "dataset.crop_fraction", self.crop_fraction,
                 "must be in (0, 1] (the central part of the resized shorter side kept), or model (the weights' own)")

    @property
    def crops(self) -> bool:
        return self.mode == "crop"

    def short_side(self, size: int) -> int:
        """The shorter side an image is resized to before the central `size` square (timm's floor)."""
        return max(size, math.floor(size / self.crop_fraction)) if self.crops else size

    def canvas_side(self, size: int) -> int:
        """The training view's square canvas in the tensor cache: a 4:3 photo fits whole."""
        return math.ceil(self.short_side(size) * 4 / 3)

    def describe(self) -> dict:
        """For result.json, model.json and cache keys."""
        return {"mode": self.mode, "crop_fraction": self.crop_fraction} if self.crops else {"mode": self.mode}


SQUASH = Preprocess()


def preprocess(mode: str = "squash", crop_fraction="model", model_fraction: float | None = None) -> Preprocess:
    """`dataset.preprocess` / `dataset.crop_fraction`; crop_fraction `model` = the weights' own
    (`model_fraction`, from timm's pretrained_cfg or torchvision's preset), else the field's 0.875."""
    if crop_fraction == "model":
        crop_fraction = model_fraction or DEFAULT_CROP_FRACTION
    require(isinstance(crop_fraction, (int, float)) and not isinstance(crop_fraction, bool), "dataset.crop_fraction",
             crop_fraction, "must be a number in (0, 1] or model (the weights' own crop fraction)")
    return Preprocess(mode, float(crop_fraction))


@dataclass
class DataPath:
    pipeline: str = "tensor"
    cache_dir: str = ""
    device_budget_gb: float = 4.0
    decode_workers: int = 0

    def __post_init__(self):
        require(self.pipeline in PIPELINES, "data.pipeline", self.pipeline, "is not known; use tensor or pil")
        require(self.device_budget_gb >= 0, "data.device_budget_gb", self.device_budget_gb, "must be >= 0")
        require(self.decode_workers >= 0, "data.decode_workers", self.decode_workers, "must be >= 0")


@dataclass
class Training:
    """Top-level settings of the training core."""
    pretrained: bool = True
    epochs: int = 10
    steps: Optional[int] = None
    min_steps: int = 60
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
    select_epoch: str = "acc_loss"
    bn_momentum: Any = None
    wise_ft: Optional[list[float]] = None
    wise_ft_bn: str = "interpolate"
    head_probe_fit: str = "train"
    head_probe_bn: str = "recompute"
    random_init_lr_ratio: float = 3.0
    random_init_select_epoch: Optional[str] = "final"

    def epoch_rule(self) -> str:
        """The rule that picks this run's val-chosen epoch (epoch_rule below)."""
        return epoch_rule(self.select_epoch, self.random_init_select_epoch, self.pretrained)

    def __post_init__(self):
        for key in ("epochs", "batch_size"):
            require(getattr(self, key) >= 1, key, getattr(self, key), "must be a positive integer")
        require(self.steps is None or self.steps >= 1, "steps", self.steps,
                "must be a positive number of optimizer steps, or null (train `epochs`)")
        require(self.min_steps >= 0, "min_steps", self.min_steps,
                "must be >= 0 optimizer steps (0 = train the epochs as given)")
        require(self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size,
                 "must be a positive integer or null (2 x batch_size)")
        require(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        require(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        for key in ("clip_grad_norm", "clip_grad_value"):
            value = getattr(self, key)
            require(value is None or value > 0, key, value, "must be positive or null (no clipping)")
        require(self.input_size is None or self.input_size > 0, "input_size", self.input_size,
                 "must be a positive size in pixels or null (= dataset.image_size)")
        for key in ("amp", "channels_last"):
            require(getattr(self, key) in AUTO_FLAGS, key, getattr(self, key), "must be auto, true or false")
        require(self.checkpoint_every_s >= 0, "checkpoint_every_s", self.checkpoint_every_s,
                 "must be >= 0 seconds (0 = save after every epoch)")
        require(self.select_epoch in SELECT_RULES, "select_epoch", self.select_epoch,
                f"is not known; use one of {', '.join(SELECT_RULES)}")
        require(self.wise_ft is None or (len(self.wise_ft) > 0 and all(0 <= a <= 1 for a in self.wise_ft)), "wise_ft",
                self.wise_ft, "must be null (off) or a list of mixing coefficients in [0, 1], e.g. "
                "wise_ft=[0,0.25,0.5,0.75,1] (0 = the starting weights, 1 = the fine-tuned ones)")
        require(self.wise_ft_bn in WISE_BN_RULES, "wise_ft_bn", self.wise_ft_bn,
                "must be interpolate (each mix's BatchNorm statistics interpolated like its weights) or recompute "
                "(measured anew on training batches for every mix between the endpoints)")
        ratio = self.random_init_lr_ratio
        require(not isinstance(ratio, (str, bool)) and ratio > 0, "random_init_lr_ratio", ratio,
                "must be a positive multiple of optimizer.lr for pretrained=false runs (1 = the same lr as pretrained)")
        require(self.random_init_select_epoch is None or self.random_init_select_epoch in SELECT_RULES,
                "random_init_select_epoch", self.random_init_select_epoch,
                f"must be one of {', '.join(SELECT_RULES)} (the rule a pretrained=false run picks its epoch by) or "
                "null (the same rule as select_epoch)")
        require(self.head_probe_fit in ("train", "train_val"), "head_probe_fit", self.head_probe_fit,
                "must be train (LP-FT's probe, model.head_init=probe, fits the training split only) or train_val (it "
                "also fits val, which the fine-tuning then selects on: runs before 2026-12-07)")
        require(self.head_probe_bn in ("running", "recompute"), "head_probe_bn", self.head_probe_bn,
                "must be running (LP-FT's probe fits features under the starting BatchNorm statistics) or recompute "
                "(measured first on the training batches)")
        momentum = self.bn_momentum
        require(momentum is None or momentum == BN_MOMENTUM_KORNBLITH or (not isinstance(momentum, (str, bool))
                                                                         and 0 < momentum <= 1),
                "bn_momentum", momentum, f"must be null (the model's own), {BN_MOMENTUM_KORNBLITH} (Kornblith et al.'s "
                "rule by steps per epoch) or a number in (0, 1] (PyTorch's convention: the weight of each batch)")

    def bn_momentum_for(self, steps_per_epoch: int) -> float | None:
        """BatchNorm's momentum in PyTorch's convention (running = (1 - m) running + m batch), or None (the
        model's own). Kornblith et al. 2019 (as SimCLR, appendix B.8): a decay of max(1 - 10/s, 0.9) over s
        steps an epoch, i.e. m = min(10/s, 0.1): running statistics over about the last epoch's batches."""
        if self.bn_momentum == BN_MOMENTUM_KORNBLITH:
            return min(BN_MOMENTUM_BATCHES / steps_per_epoch, BN_MOMENTUM_CAP)
        return None if self.bn_momentum is None else float(self.bn_momentum)


BN_MOMENTUM_KORNBLITH = "kornblith"
BN_MOMENTUM_BATCHES, BN_MOMENTUM_CAP = 10, 0.1  # m = min(10 / steps per epoch, 0.1)


@dataclass
class Defects:
    """The write-ups' mistakes, each reproducible on purpose (conf/config.yaml `defects`)."""
    freeze_by_name: Optional[str] = None
    freeze_noop: bool = False
    sigmoid_before_loss: bool = False

    def __post_init__(self):
        require(self.freeze_by_name != "", "defects.freeze_by_name", self.freeze_by_name,
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
        require(0 < self.start_lr < self.end_lr, "lr_find.start_lr", self.start_lr,
                 f"must be positive and below lr_find.end_lr={self.end_lr}")
        require(self.steps >= 10, "lr_find.steps", self.steps,
                 "must be at least 10 (the suggestion leaves out the first tenth and the last 5 points)")
        require(self.stop_factor > 1, "lr_find.stop_factor", self.stop_factor, "must be above 1")
        require(0 <= self.beta < 1, "lr_find.beta", self.beta, "must be in [0, 1)")


@dataclass
class Mix:
    """The `mix` block: mixup and cutmix on each training batch, by timm's Mixup (timm.data.Mixup; per batch,
    one mixing weight drawn from Beta(alpha, alpha)); off while both alphas are 0."""
    mixup_alpha: float = 0.0      # mixup: images and targets blended with the batch reversed (0 = off)
    cutmix_alpha: float = 0.0     # cutmix: a box of the reversed batch pasted in, targets by its area (0 = off)
    prob: float = 1.0             # the share of batches mixed
    switch_prob: float = 0.5      # with both on: the share of mixed batches that use cutmix

    def __post_init__(self):
        for key in ("mixup_alpha", "cutmix_alpha"):
            require(getattr(self, key) >= 0, f"mix.{key}", getattr(self, key), "must be >= 0 (0 = off)")
        for key in ("prob", "switch_prob"):
            require(0 <= getattr(self, key) <= 1, f"mix.{key}", getattr(self, key), "must be a probability in [0, 1]")

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@dataclass
class L2SP:
    """The `l2sp` block: L2-SP (Li, Grandvalet & Davoine, ICML 2018), a penalty added to the training loss:
    alpha / 2 x |w - w0|^2 over the backbone's trainable weights (w0: where the run started, the pretrained
    weights) + beta / 2 x |w|^2 over the new head's. Off while both are 0."""
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self):
        for key in ("alpha", "beta"):
            require(getattr(self, key) >= 0, f"l2sp.{key}", getattr(self, key), "must be >= 0 (0 = off)")

    @property
    def active(self) -> bool:
        return self.alpha > 0 or self.beta > 0


@dataclass
class Ema:
    """The `ema` block: an exponential moving average of the weights (timm's ModelEmaV3: every parameter and
    buffer), updated after each optimizer step and scored on val and test beside the trained weights. Off at 0."""
    decay: float = 0.0            # e = decay x e + (1 - decay) x w after each step; 0 = off
    warmup: bool = True           # timm's warm-up: the step-t decay is min(decay, 1 - (1 + t)^(-2/3)), so a short
                                  # run's average is not held at its first weights

    def __post_init__(self):
        require(0 <= self.decay < 1, "ema.decay", self.decay, "must be in [0, 1) (0 = off; e.g. 0.99, 0.999)")

    @property
    def active(self) -> bool:
        return self.decay > 0


# Whose corruption definitions test_shift uses: CIFAR-10-C's (tlbench/data/corruptions.py, written for 32 px) or
# ImageNet-C's (the maintained imagecorruptions package, whose severity parameters are for 224 px images).
SHIFT_DEFINITIONS = ("cifar10c", "imagenet_c")


@dataclass
class Shift:
    """The `test_shift` block: after training, the test split again under common corruptions (Hendrycks &
    Dietterich 2019, CIFAR-10-C's definitions: tlbench/data/corruptions.py), each at each severity."""
    corruptions: Any = None       # null = off; all (every one built); or a list of names
    severities: Any = field(default_factory=lambda: [1, 2, 3, 4, 5])
    images: Optional[int] = 1000  # test images corrupted: a draw of this many by `seed`; null = all
    seed: int = 0                 # draws the images and each corruption's random numbers
    definitions: str = "cifar10c"  # SHIFT_DEFINITIONS: whose definitions and severity parameters

    def __post_init__(self):
        require(self.definitions in SHIFT_DEFINITIONS, "test_shift.definitions", self.definitions,
                "must be cifar10c (CIFAR-10-C's parameters, for small images; built in) or imagenet_c (ImageNet-C's, "
                "for ~224 px images, from the imagecorruptions package: pip install imagecorruptions-imaug)")
        names = self.corruptions
        require(names is None or names == "all" or (not isinstance(names, str) and len(list(names)) > 0),
                "test_shift.corruptions", names, "must be null (off), all, or a list of corruption names")
        levels = list(self.severities) if not isinstance(self.severities, (str, int)) else []
        require(len(levels) > 0 and all(isinstance(s, int) and 1 <= s <= 5 for s in levels), "test_shift.severities",
                self.severities, "must be a list of severities from 1 to 5, e.g. [1,2,3,4,5]")
        require(self.images is None or (isinstance(self.images, int) and self.images >= 1), "test_shift.images",
                self.images, "must be a positive number of test images, or null (all)")

    @property
    def active(self) -> bool:
        return self.corruptions is not None


HEAD_INITS = ("zeros", "normal", "library", "linear", "probe")  # probe: LP-FT (runner/build.py probe_head)
MODEL_SOURCES = ("timm", "torchvision")


@dataclass
class ModelSettings:
    """The `model` group (conf/model/*.yaml; models/__init__.py builds it). The name is checked
    against the source's registry when the run starts, with the closest names suggested."""
    name: str = "resnet18"
    source: str = "timm"                 # timm or torchvision
    weights_file: Optional[str] = None   # local pretrained weights (docs/how-to/offline.md)
    head_init: str = "zeros"             # the new head: zeros, normal (std 0.01), library, linear, probe
    kwargs: Optional[dict] = field(default_factory=dict)  # passed on to the builder (timm.create_model, ...)

    def __post_init__(self):
        require(self.source in MODEL_SOURCES, "model.source", self.source,
                 f"is not known; use one of {', '.join(MODEL_SOURCES)}")
        require(self.head_init in HEAD_INITS, "model.head_init", self.head_init,
                 f"is not known; use one of {', '.join(HEAD_INITS)}")


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


def augment(values) -> Augment:
    """The `augment` group's keys as an Augment (already typed at the run layer's edge)."""
    return values if isinstance(values, Augment) else Augment(**closed(Augment, values, "augment"))
