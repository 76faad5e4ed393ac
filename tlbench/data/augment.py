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


def check_preprocess(preprocess: specs.Preprocess, aug: specs.Augment) -> None:
    """augment.resize / center_crop are the squash pipeline's own resize-then-crop (write-up D)."""
    if preprocess.crops and (aug.resize or aug.center_crop):
        raise ConfigError(f"augment.resize={aug.resize} / augment.center_crop={aug.center_crop} resize and crop a "
                          "squashed image; with dataset.preprocess=crop the photo is already resized by its shorter "
                          "side and center-cropped: set augment.resize=null augment.center_crop=false, or "
                          "dataset.preprocess=squash")


def view(image_size: int, preprocess: specs.Preprocess = specs.SQUASH) -> list:
    """The evaluation view of an image, as ops on a uint8 image: squash to image_size x image_size,
    or (crop) the shorter side to preprocess.short_side(image_size), then the central square."""
    if preprocess.crops:
        return [v2.Resize(preprocess.short_side(image_size), antialias=True), v2.CenterCrop(image_size)]
    return [v2.Resize((image_size, image_size), antialias=True)]


def train_transform(image_size: int, mean, std, input_size=None, preprocess: specs.Preprocess = specs.SQUASH,
                    **augment) -> v2.Compose:
    """`augment`: the `augment` group's keys, checked by specs.Augment (the same description
    the batched pipeline reads). With preprocess=crop the random-resized-crop boxes come from the
    whole photo, and without one the photo's evaluation view is the starting point."""
    aug = specs.augment(augment)
    check_preprocess(preprocess, aug)
    ops = [v2.ToImage()]
    if preprocess.crops:
        ops += ([v2.RandomResizedCrop(image_size, scale=tuple(aug.random_resized_crop), antialias=True)]
                if aug.random_resized_crop else view(image_size, preprocess))
    else:
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


def eval_transform(image_size: int, mean, std, input_size=None,
                   preprocess: specs.Preprocess = specs.SQUASH) -> v2.Compose:
    """The evaluation view (`view`): squash resizes to the training size, as write-ups C and D do
    (A and B were already at 32 px); crop takes the central square of the resized photo."""
    return v2.Compose([v2.ToImage(), *view(image_size, preprocess)] + _to_input(image_size, input_size, mean, std))


class PhotoCanvas:
    """The training view of a photo kept in the tensor cache (dataset.preprocess=crop): the shorter
    side resized as for evaluation, the longer side kept up to 4:3 (centrally), centred on a square
    canvas of side preprocess.canvas_side(image_size) with zeros around it. Returns (canvas, (h, w)
    of the photo on it), so random-resized-crop boxes can be drawn from the photo alone."""

    def __init__(self, image_size: int, preprocess: specs.Preprocess):
        self.short, self.side = preprocess.short_side(image_size), preprocess.canvas_side(image_size)

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        image = image if isinstance(image, torch.Tensor) else v2.functional.to_image(image)  # PIL, or uint8 tensors
        image = v2.functional.resize(image, self.short, antialias=True)
        h, w = min(image.shape[-2], self.side), min(image.shape[-1], self.side)
        image = v2.functional.center_crop(image, [h, w])
        top, left = (self.side - h) // 2, (self.side - w) // 2
        canvas = torch.zeros((*image.shape[:-2], self.side, self.side), dtype=image.dtype)
        canvas[..., top:top + h, left:left + w] = image
        return canvas.as_subclass(torch.Tensor), torch.tensor([h, w], dtype=torch.int16)


def _to_input(image_size, input_size, mean, std) -> list:
    """To float in [0, 1], resized to the model's input size if it differs, then normalized."""
    resize = [v2.Resize((input_size, input_size), antialias=True)] if input_size and input_size != image_size else []
    return [v2.ToDtype(torch.float32, scale=True), *resize, v2.Normalize(list(mean), list(std))]
