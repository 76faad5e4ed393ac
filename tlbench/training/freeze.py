"""Freeze strategies as phases: which parameters train, at which learning rate, epoch by epoch.

Frozen means three things, all enforced here: `requires_grad=False` (no gradient), absent from
the optimizer (so no weight decay or momentum can move it), and BatchNorm layers of the frozen
part in eval mode (their running statistics stay put) unless `train_bn=true`. `bn_eval=true`
keeps every BatchNorm layer in eval mode in every phase, trainable or not (Keras's fine-tuning
advice): unfreezing then does not switch the features under a trained head from running to batch
statistics. `keep_optimizer_state=true` carries the optimizer state (Adam's moments, SGD's momentum)
of parameters that already trained into the next phase, as one optimizer over every parameter
does (write-ups A and B); by default each phase starts a fresh optimizer.

`AsPublished` reproduces the write-ups' own freeze code, defects included (the `defects` settings;
docs/how-to/writeups.md); nothing uses it unless a preset or the user switches it on."""

from dataclasses import dataclass

from torch import nn

from tlbench import specs
from tlbench.errors import ConfigError


@dataclass(frozen=True)
class ParamGroup:
    names: tuple[str, ...]
    lr_scale: float = 1.0       # multiplies the optimizer's lr ...
    lr: float | None = None     # ... unless an absolute lr is set


@dataclass(frozen=True)
class Phase:
    name: str                   # recorded per epoch as `freeze_phase`
    groups: tuple[ParamGroup, ...]

    @property
    def trainable(self) -> frozenset[str]:
        return frozenset(n for g in self.groups for n in g.names)


class FreezeStrategy:
    """`stages`: parameter names by depth, stem first, the new head last (see models.py).
    `settings`: the option's settings (tlbench/specs/options.py: their defaults and range checks live there)."""

    def __init__(self, stages: list[list[str]], settings: specs.Freeze):
        self.stages, self.settings = stages, settings
        self.train_bn, self.bn_eval = settings.train_bn, settings.bn_eval
        self.keep_optimizer_state = settings.keep_optimizer_state
        self.head = tuple(stages[-1])
        self.body = tuple(n for stage in stages[:-1] for n in stage)

    def phase(self, epoch: int) -> Phase:  # epoch counts from 0
        raise NotImplementedError

    def _all(self) -> Phase:
        return Phase("all", (ParamGroup(self.body + self.head),))

    def _head_only(self) -> Phase:
        return Phase("head", (ParamGroup(self.head),))


class NoFreeze(FreezeStrategy):
    def phase(self, epoch):
        return self._all()


class LinearProbe(FreezeStrategy):
    """`head_lr_ratio`: the head trains at this multiple of the optimizer's lr; `auto` by the model's input
    size (specs.LinearProbeSettings.ratio_for): on 32 px CIFAR-10 a lone linear layer on fixed features took
    larger steps best (10 x lr ahead by 4.8 points), at 64-96 px it overfit 10-500 images per class with
    them (1 x lr ahead by 2.4-5.9 points at 96 px; 2026-12-07)."""

    def __init__(self, stages, settings: specs.LinearProbeSettings, input_size: int | None = None):
        super().__init__(stages, settings)
        self.head_lr_ratio = settings.ratio_for(input_size)

    def phase(self, epoch):
        return Phase("head", (ParamGroup(self.head, lr_scale=self.head_lr_ratio),))


class FreezeUnfreeze(FreezeStrategy):
    def __init__(self, stages, settings: specs.FreezeUnfreezeSettings):
        super().__init__(stages, settings)
        self.frozen_epochs, self.backbone_lr, self.head_lr = settings.epochs, settings.backbone_lr, settings.head_lr
        self.backbone_lr_ratio = settings.backbone_lr_ratio

    def phase(self, epoch):
        if epoch < self.frozen_epochs:
            return self._head_only()
        backbone = ParamGroup(self.body, lr_scale=self.backbone_lr_ratio, lr=self.backbone_lr)
        return Phase("all", (backbone, ParamGroup(self.head, lr=self.head_lr)))


class Gradual(FreezeStrategy):
    def __init__(self, stages, settings: specs.GradualSettings):
        super().__init__(stages, settings)
        self.epochs_per_stage = settings.epochs_per_stage

    def phase(self, epoch):
        open_stages = min(len(self.stages), 1 + epoch // self.epochs_per_stage)
        if open_stages == len(self.stages):
            return self._all()
        names = tuple(n for stage in self.stages[-open_stages:] for n in stage)
        return Phase("head" if open_stages == 1 else f"top{open_stages}", (ParamGroup(names),))


class LayerDecay(FreezeStrategy):
    def __init__(self, stages, settings: specs.LayerDecaySettings):
        super().__init__(stages, settings)
        decay, depth = settings.decay, len(stages) - 1
        self.fixed = Phase("all", tuple(ParamGroup(tuple(stage), lr_scale=decay ** (depth - d))
                                        for d, stage in enumerate(stages)))

    def phase(self, epoch):
        return self.fixed


class BitFit(FreezeStrategy):
    """BitFit (Ben Zaken et al., 2022): only the biases, the normalisation layers' affine
    parameters (`norm_params`, found from the model's layer types: adapters.norm_param_names) and
    the new head train, at `lr_ratio` x lr."""

    def __init__(self, stages, settings: specs.BitFitSettings, norm_params=()):
        super().__init__(stages, settings)
        norms = set(norm_params)
        self.names = tuple(n for n in self.body if n.rsplit(".", 1)[-1] == "bias" or n in norms) + self.head
        self.lr_ratio = settings.lr_ratio

    def phase(self, epoch):
        return Phase("bitfit", (ParamGroup(self.names, lr_scale=self.lr_ratio),))


class Lora(FreezeStrategy):
    """LoRA (Hu et al., 2021) through peft: the adapters injected into the model (adapters.py;
    `adapter_params`, their names) and the new head train, at `lr_ratio` x lr (auto: by the run's training images
    per class and init, specs.LoraSettings.ratio_for; `images_per_class`, `pretrained`); every original
    weight stays frozen. `rank`, `alpha`, `dropout` and `target_modules` are peft's LoraConfig
    r, lora_alpha, lora_dropout and target_modules, checked here and applied by
    adapters.inject_lora before the strategy is built."""

    def __init__(self, stages, settings: specs.LoraSettings, adapter_params=(), images_per_class=None,
                 pretrained: bool = True):
        super().__init__(stages, settings)
        self.names = tuple(adapter_params) + self.head
        self.lr_ratio = settings.ratio_for(images_per_class, pretrained)

    def phase(self, epoch):
        return Phase("lora", (ParamGroup(self.names, lr_scale=self.lr_ratio),))


class Surgical(FreezeStrategy):
    """Surgical fine-tuning (Lee et al., ICLR 2023): one stage of the backbone trains (`stage`, counted from
    the stem as models.py cuts them; negative from the head), with the new head, which a new task needs (the
    paper, on the same classes, kept its head too); every other stage stays frozen. Which stage is best
    depends on the shift: sweep `freeze.stage`."""

    def __init__(self, stages, settings: specs.SurgicalSettings):
        super().__init__(stages, settings)
        body = stages[:-1]
        if not -len(body) <= settings.stage < len(body):
            raise ConfigError(f"freeze.stage={settings.stage} is not a stage of this model: it has {len(body)} before "
                              f"its head; use 0 (the stem) to {len(body) - 1}, or -1 to -{len(body)} from the head")
        self.stage = settings.stage % len(body)
        self.names = tuple(body[self.stage]) + self.head

    def phase(self, epoch):
        return Phase(f"stage{self.stage}", (ParamGroup(self.names),))


class AsPublished(FreezeStrategy):
    """Another strategy's phases as a write-up's freeze code turned them out. `freeze_by_name`:
    while the strategy freezes anything, the trainable parameters are those whose name contains
    this substring, not the model's head (write-ups A and B: "every parameter whose name lacks
    'fc' is frozen", which on torchvision efficientnet_b0 froze the head `classifier.1` and left
    the squeeze-excitation layers `fc1`/`fc2` training). `freeze_noop`: the freeze has no effect
    (write-up C's `param.require_grad = False`): every parameter trains in every phase. Either
    way the parameters train at the lr settings the strategy gave the head in that phase."""

    def __init__(self, inner: FreezeStrategy, freeze_by_name: str | None = None, freeze_noop: bool = False):
        super().__init__(inner.stages, inner.settings)
        self.inner, self.by_name, self.noop = inner, freeze_by_name, freeze_noop
        everything = self.body + self.head
        if freeze_by_name is not None:
            self.named = tuple(n for n in everything if freeze_by_name in n)
            if not self.named:  # the write-ups' code would fail at loss.backward(): nothing requires a gradient
                raise ConfigError(f"defects.freeze_by_name={freeze_by_name!r} matches no parameter name of this "
                                  "model, so its frozen phase would train nothing; set defects.freeze_by_name=null "
                                  "(freeze by the model's head) or a substring its names contain")
        self.everything = everything

    def phase(self, epoch):
        phase = self.inner.phase(epoch)
        if phase.trainable == frozenset(self.everything) or not (self.noop or self.by_name is not None):
            return phase
        head = phase.groups[-1]
        names = self.everything if self.noop else self.named
        return Phase(phase.name, (ParamGroup(names, lr_scale=head.lr_scale, lr=head.lr),))


STRATEGIES = {"none": NoFreeze, "linear_probe": LinearProbe, "freeze_unfreeze": FreezeUnfreeze,
              "gradual": Gradual, "layer_decay": LayerDecay, "bitfit": BitFit, "lora": Lora, "surgical": Surgical}
# What the run tells a strategy beyond its stages: the names of the model's normalisation-layer parameters (BitFit)
# and of its injected adapters (LoRA), the side of its inputs (the linear probe's auto head ratio), the training
# images per class and whether the weights are pretrained (LoRA's auto ratio).
MODEL_FACTS = {"bitfit": ("norm_params",), "lora": ("adapter_params", "images_per_class", "pretrained"),
               "linear_probe": ("input_size",)}


def build_freeze(name: str, stages, total_epochs: int, norm_params=(), adapter_params=(),
                 input_size: int | None = None, images_per_class: float | None = None, pretrained: bool = True,
                 **settings) -> FreezeStrategy:
    """The strategy `name` over `stages`, its settings checked by specs.freeze (unknown keys fail,
    naming the known ones). `norm_params`, `adapter_params`: parameter names from the model
    (adapters.py), `input_size`: the side of the squares the model is fed, `images_per_class`: the training
    images per class, `pretrained`: the run's init, for the strategies that need them (MODEL_FACTS)."""
    checked = specs.freeze(name, settings, total_epochs)
    facts = {"norm_params": norm_params, "adapter_params": adapter_params,
             "input_size": input_size, "images_per_class": images_per_class, "pretrained": pretrained}
    return STRATEGIES[name](stages, checked, **{fact: facts[fact] for fact in MODEL_FACTS.get(name, ())})


def as_published(strategy: FreezeStrategy, freeze_by_name: str | None = None, freeze_noop: bool = False,
                 **other_defects) -> FreezeStrategy:
    """`strategy` with the write-ups' freeze defects switched on by the `defects` settings (the
    others are not about freezing); unchanged when none is."""
    if freeze_by_name is None and not freeze_noop:
        return strategy
    return AsPublished(strategy, freeze_by_name, freeze_noop)


def apply_phase(model: nn.Module, phase: Phase) -> int:
    """Sets requires_grad from the phase; returns the number of trainable parameters."""
    trainable = phase.trainable
    known = {n for n, _ in model.named_parameters()}
    if not trainable <= known:
        raise ValueError(f"phase {phase.name} names unknown parameters: {sorted(trainable - known)[:5]}")
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
        count += param.numel() if name in trainable else 0
    return count


def set_train_mode(model: nn.Module, train_bn: bool, bn_eval: bool = False) -> None:
    """model.train(), then BatchNorm layers whose parameters are all frozen back to eval mode
    (unless `train_bn`); with `bn_eval`, which overrides `train_bn`, every BatchNorm layer."""
    model.train()
    if train_bn and not bn_eval:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if bn_eval or (params and not any(p.requires_grad for p in params)):
                module.eval()
