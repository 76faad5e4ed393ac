"""Backbones from timm or torchvision with a new classification head, found through the model's
own API (timm `get_classifier`, torchvision's known head attribute per family), never by name
substrings: write-up B's "name lacks 'fc'" rule froze EfficientNet's head instead of its body."""

import difflib
import sys
from dataclasses import dataclass, field

import timm
import torch
import torchvision
from torch import nn

from tlbench.models import weights as weight_files
from tlbench.errors import ConfigError
from tlbench.specs import HEAD_INITS, MODEL_SOURCES
from tlbench.data.augment import IMAGENET_MEAN, IMAGENET_STD

# torchvision families keep their head under one of these attributes; the last Linear in it is
# the classifier (resnet/regnet/inception: fc; efficientnet/mobilenet/convnext/vgg: classifier;
# vit: heads; swin/maxvit: head).
TORCHVISION_HEAD_ATTRS = ("fc", "classifier", "heads", "head")
SOURCES = MODEL_SOURCES
# How a new classifier starts (`model.head_init`). timm's EfficientNet/MobileNet family draws it
# uniformly in +-1/sqrt(num_classes): on ImageNet features (norm 15-40) the first logits have a
# standard deviation of 5-10 and the first loss is several times ln(C), so large gradients tear
# at the pretrained backbone before the head has learned anything. `zeros` starts every run at
# loss ln(C) with no gradient into the backbone until the head has moved; `normal` is the small
# Gaussian of linear-probe practice (MAE, DINO: std 0.01); `library` keeps the builder's own init;
# `linear` is a fresh nn.Linear's own init (kaiming-uniform), the head the write-ups built by hand.
HEAD_INIT_NORMAL_STD = 0.01


@dataclass
class BuiltModel:
    model: nn.Module
    head_params: list[str]            # parameter names of the new classification head
    stages: list[list[str]]           # parameter names by depth, stem first, head last
    mean: tuple = IMAGENET_MEAN       # the pretrained weights' normalization
    std: tuple = IMAGENET_STD
    crop_fraction: float | None = None  # the weights' evaluation crop (timm crop_pct, torchvision crop / resize); None = unknown
    weights_source: str | None = None  # where pretrained weights came from; None = random init
    info: dict = field(default_factory=dict)


def check_model_name(name: str, source: str) -> None:
    """Fails before training, suggesting the closest names of that source."""
    if source not in SOURCES:
        raise ConfigError(f"model.source={source!r} is not known; use one of {', '.join(SOURCES)}")
    known = timm.list_models() if source == "timm" else torchvision.models.list_models(torchvision.models)
    arch = name.split(".")[0] if source == "timm" else name
    if arch in known:
        return
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
    hint = f"closest {source} names: {', '.join(close)}" if close else f"list them with {source}'s list_models()"
    raise ConfigError(f"model.name={name!r} is not a {source} model; {hint}")


def build_model(name: str, source: str, num_classes: int, pretrained: bool, weights_file=None,
                weights_dir=None, kwargs=None, head_init: str = "zeros") -> BuiltModel:
    """The classifier is always new (sized for the data set's classes) and starts as `head_init`
    says, for pretrained and random-init runs alike, so a comparison differs only in the backbone."""
    check_model_name(name, source)
    check_head_init(head_init)
    kwargs = dict(kwargs or {})
    if source == "timm":
        built = _build_timm(name, num_classes, pretrained, weights_file, weights_dir, kwargs)
    else:
        built = _build_torchvision(name, num_classes, pretrained, weights_file, weights_dir, kwargs)
    init_head(built.model.get_submodule(built.info["head_module"]), head_init)
    built.info["head_init"] = head_init
    return built


def check_head_init(head_init: str) -> None:
    if head_init not in HEAD_INITS:
        raise ConfigError(f"model.head_init={head_init!r} is not known; use one of {', '.join(HEAD_INITS)}")


@torch.no_grad()
def init_head(head: nn.Module, head_init: str) -> None:
    """Re-initialises every Linear/Conv weight of the head (zeros or N(0, 0.01^2); biases to zero),
    or resets it as torch builds it (`linear`). `probe` starts at zeros here: the run fits the head on the
    data once it is built (LP-FT, runner/build.py probe_head)."""
    if head_init == "library":
        return
    for module in head.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and head_init == "linear":
            module.reset_parameters()
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            if head_init in ("zeros", "probe"):
                module.weight.zero_()
            else:
                module.weight.normal_(0.0, HEAD_INIT_NORMAL_STD)
            if module.bias is not None:
                module.bias.zero_()


def _build_timm(name, num_classes, pretrained, weights_file, weights_dir, kwargs) -> BuiltModel:
    located = weight_files.locate_timm(name, weights_file, weights_dir) if pretrained else None
    if located is None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    elif located.kind == "hub":
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    else:
        model = _timm_from_file(name, num_classes, located, kwargs)
    head_module = model.get_classifier()
    head = _param_names_of(model, head_module)
    stages = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    cfg = model.pretrained_cfg
    return BuiltModel(
        model=model, head_params=head, stages=_stages_with_head_last(list(stages.values()), head),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        crop_fraction=cfg.get("crop_pct"), weights_source=located.describe() if located else None,
        info={"head_module": _module_name(model, head_module)},
    )


def _timm_from_file(name, num_classes, located, kwargs):
    """Strict: every backbone tensor must be in the file with its shape (timm's own loader
    silently skips missing keys when the head size changes). The model family's checkpoint
    filter (e.g. ViT position-embedding resizing) is applied first, as timm would."""
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    state = weight_files.load_state_dict(located.path)
    checkpoint_filter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if checkpoint_filter is not None:
        try:
            state = checkpoint_filter(state, model)
        except Exception:  # noqa: BLE001 - a filter for another layout; the strict check below reports
            pass
    weight_files.load_into(model, state, _timm_classifier_prefixes(model), name, located.describe())
    return model


def _timm_classifier_prefixes(model) -> list[str]:
    classifier = model.pretrained_cfg.get("classifier") or _module_name(model, model.get_classifier())
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    return [n + "." for n in names]


def _build_torchvision(name, num_classes, pretrained, weights_file, weights_dir, kwargs) -> BuiltModel:
    located = weight_files.locate_torchvision(name, weights_file, weights_dir) if pretrained else None
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if located is not None:
        state = weight_files.load_state_dict(located.path) if located.kind == "file" else located.fetch()
        weight_files.load_into(model, state, [], name, located.describe())
    head_name = replace_torchvision_head(model, num_classes)
    head = [n for n, _ in model.named_parameters() if n.startswith(head_name + ".")]
    return BuiltModel(
        model=model, head_params=head, stages=_stages_with_head_last(torchvision_stages(model), head),
        crop_fraction=torchvision_crop_fraction(name),
        weights_source=located.describe() if located else None, info={"head_module": head_name},
    )


def torchvision_crop_fraction(name: str) -> float | None:
    """crop / resize of the model's default ImageNet weights' preset (224 / 256 for most), or None."""
    try:
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        return preset.crop_size[0] / preset.resize_size[0]
    except (ValueError, KeyError, AttributeError, TypeError, IndexError):  # no weights, or a preset without sizes
        return None


def replace_torchvision_head(model: nn.Module, num_classes: int) -> str:
    """Swaps the last Linear under the family's head attribute; returns its qualified name."""
    for attr in TORCHVISION_HEAD_ATTRS:
        container = getattr(model, attr, None)
        if container is None:
            continue
        linears = [(n, m) for n, m in container.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            continue
        sub_name, old = linears[-1]
        new = nn.Linear(old.in_features, num_classes)
        if sub_name:
            model.get_submodule(attr).set_submodule(sub_name, new)
            return f"{attr}.{sub_name}"
        setattr(model, attr, new)
        return attr
    raise ConfigError(
        f"cannot find the classification head of torchvision model {type(model).__name__} "
        f"(looked for a Linear under {', '.join(TORCHVISION_HEAD_ATTRS)}); use model.source=timm")


def torchvision_stages(model: nn.Module) -> list[list[str]]:
    """Depth stages of a torchvision model: its top-level children in order, with a child that
    holds most of the parameters (efficientnet's `features`) split into its own children."""
    total = sum(p.numel() for p in model.parameters())
    stages = []
    for child_name, child in model.named_children():
        size = sum(p.numel() for p in child.parameters())
        parts = list(child.named_children()) if size > total / 2 else []
        if not parts:
            parts = [("", child)]
        for part_name, part in parts:
            prefix = ".".join(x for x in (child_name, part_name) if x)
            names = [f"{prefix}.{n}" for n, _ in part.named_parameters()]
            if names:
                stages.append(names)
    return stages


def _stages_with_head_last(stages: list[list[str]], head: list[str]) -> list[list[str]]:
    head_set = set(head)
    body = [[n for n in stage if n not in head_set] for stage in stages]
    return [stage for stage in body if stage] + [list(head)]


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ValueError("module is not part of the model")


def _param_names_of(model: nn.Module, module: nn.Module) -> list[str]:
    ids = {id(p) for p in module.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def has_depthwise_conv(model: nn.Module) -> bool:
    """Whether `model` has a depthwise convolution (a Conv2d with one group per input channel), as
    EfficientNet, MobileNet and ConvNeXt do: on a CPU they run faster in channels_last."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in model.modules())
