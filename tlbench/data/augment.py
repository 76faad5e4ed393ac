"""Per-sample train and eval transforms (torchvision v2), built from the `augment` group.

Images become uint8 tensors first, so every op runs on tensors whatever the source (PIL files or
in-memory arrays). Fixed order: resize, random-resized-crop, rotation, center crop, pad-and-crop,
flips, color jitter, then scale to [0, 1] and normalize. Write-ups A/B apply rotation last; the
order changes the distribution only at the borders of a rotated, shifted 32 px image."""

import torch
from torchvision.transforms import v2

from tlbench import specs
from tlbench.errors import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # per RGB channel, on [0, 1] pixels
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # the write-ups' stats
}


def resolve_normalization(normalize, model_mean, model_std) -> tuple[tuple, tuple]:
    """`model` (default) uses the pretrained weights' own statistics, as timm's pretrained_cfg."""
    if normalize == "model":
        return tuple(model_mean), tuple(model_std)
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize={normalize!r} is not known; use model, "
                              f"{', '.join(NORMALIZATIONS)} or [[mean x3], [std x3]]")
        return NORMALIZATIONS[normalize]
    mean, std = normalize
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"normalize={normalize!r} must be [[3 means], [3 positive stds]]")
    return tuple(mean), tuple(std)


def train_transform(image_size: int, mean, std, input_size=None, **augment) -> v2.Compose:
    """`augment`: the `augment` group's keys, checked by specs.Augment (the same description
    the batched pipeline reads)."""
    aug = specs.augment(augment)
    ops = [v2.ToImage()]
    if aug.resize:
        ops.append(v2.Resize((aug.resize, aug.resize), antialias=True))
    if aug.random_resized_crop:
        ops.append(v2.RandomResizedCrop(image_size, scale=tuple(aug.random_resized_crop), antialias=True))
    elif not aug.resize:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
    if aug.rotation_deg:
        ops.append(v2.RandomRotation(aug.rotation_deg))
    if aug.center_crop:
        ops.append(v2.CenterCrop(image_size))
    if aug.pad:
        ops.append(v2.RandomCrop(image_size, padding=aug.pad, padding_mode=aug.pad_mode))
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip:
        ops.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.color_jitter:
        ops.append(v2.ColorJitter(*aug.color_jitter))
    return v2.Compose(ops + _to_input(image_size, input_size, mean, std))


def eval_transform(image_size: int, mean, std, input_size=None) -> v2.Compose:
    """Resize to the training size, as write-ups C and D do (A and B were already at 32 px)."""
    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
                      + _to_input(image_size, input_size, mean, std))


def _to_input(image_size, input_size, mean, std) -> list:
    """To float in [0, 1], resized to the model's input size if it differs, then normalized."""
    resize = [v2.Resize((input_size, input_size), antialias=True)] if input_size and input_size != image_size else []
    return [v2.ToDtype(torch.float32, scale=True), *resize, v2.Normalize(list(mean), list(std))]
