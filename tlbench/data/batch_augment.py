"""Augmentation of a whole batch at once, on the training device, with random parameters drawn
per sample (torchvision v2 applied to a batch draws one set for the whole batch).

Every op takes (N, 3, H, W) images and a torch.Generator on the images' device, so a seeded run
is repeatable. Same order as augment.train_transform. Differences from the per-image PIL/v2
pipeline, all of them within the same distributions:
- color jitter applies brightness, contrast, saturation, hue in this fixed order (torchvision
  shuffles the order per image); contrast blends with each image's mean gray, as torchvision does;
- rotation uses nearest-neighbour sampling with zero fill, like RandomRotation's defaults;
- random-resized-crop of a squashed image samples scale and log-ratio once per image without
  torchvision's 10 retries (boxes that do not fit are clamped to the image instead); of a photo on
  its canvas (dataset.preprocess=crop) it follows torchvision's rule, retries included (photo_boxes)."""

import math

import torch
import torch.nn.functional as F

TORCH_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}  # symmetric: _pad_symmetric


def uniform(n, low, high, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def pad_crop(images: torch.Tensor, pad: int, mode: str, generator) -> torch.Tensor:
    """Pads by `pad` on every side, then crops back to the input size at a random offset per image."""
    n, _, h, w = images.shape
    if mode == "symmetric":
        padded = _pad_symmetric(images, pad)
    else:
        padded = F.pad(images.float() if mode != "constant" else images, (pad,) * 4, mode=TORCH_PAD_MODES[mode])
        padded = padded.to(images.dtype)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=images.device)
    return _gather_crops(padded, dy, dx, h, w)


def _pad_symmetric(images: torch.Tensor, pad: int) -> torch.Tensor:
    """torchvision's symmetric mode: mirrored including the edge pixel (torch's F.pad has no such
    mode; its reflect leaves the edge pixel out)."""
    rows = torch.cat([images[..., :pad, :].flip(-2), images, images[..., -pad:, :].flip(-2)], dim=-2)
    return torch.cat([rows[..., :pad].flip(-1), rows, rows[..., -pad:].flip(-1)], dim=-1)


def flip(images: torch.Tensor, p: float, dim: int, generator) -> torch.Tensor:
    """dim=-1: horizontal, dim=-2: vertical; each image flipped with probability p."""
    chosen = torch.rand(len(images), generator=generator, device=images.device) < p
    return torch.where(chosen[:, None, None, None], images.flip(dim), images)


def _gray(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def color_jitter(images: torch.Tensor, brightness, contrast, saturation, hue, generator) -> torch.Tensor:
    """`images` float in [0, 1]; factors drawn as torchvision's ColorJitter draws them."""
    n, device = len(images), images.device
    per_image = lambda x: x[:, None, None, None]  # noqa: E731
    if brightness:
        images = images * per_image(uniform(n, max(0, 1 - brightness), 1 + brightness, generator, device))
        images = images.clamp(0, 1)
    if contrast:
        mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
        factor = per_image(uniform(n, max(0, 1 - contrast), 1 + contrast, generator, device))
        images = (mean + factor * (images - mean)).clamp(0, 1)
    if saturation:
        gray = _gray(images)
        factor = per_image(uniform(n, max(0, 1 - saturation), 1 + saturation, generator, device))
        images = (gray + factor * (images - gray)).clamp(0, 1)
    if hue:
        images = shift_hue(images, uniform(n, -hue, hue, generator, device))
    return images


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates hue by `shift` (fraction of a turn, per image) through HSV, as torchvision's adjust_hue."""
    maxc, argmax = images.max(dim=1)
    minc = images.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = images.unbind(1)
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    hue = (hue + shift[:, None, None]) % 1.0
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return _hsv_to_rgb(hue, sat, maxc)


def _hsv_to_rgb(h, s, v) -> torch.Tensor:
    # k = (n + 6h) mod 6 for n = 5, 3, 1 (r, g, b); Python scalars, as torch.tensor([5, 3, 1], device=cuda)
    # would be a blocking host-to-device copy per batch
    k = torch.stack([(h * 6 + n) % 6 for n in (5.0, 3.0, 1.0)], dim=1)
    return v.unsqueeze(1) - v.unsqueeze(1) * s.unsqueeze(1) * (torch.minimum(k, 4 - k).clamp(0, 1))


def rotate(images: torch.Tensor, max_deg: float, generator) -> torch.Tensor:
    """Rotation by a per-image angle in [-max_deg, max_deg] about the center, zero fill."""
    n = len(images)
    angle = uniform(n, -max_deg, max_deg, generator, images.device) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _sample(images, theta, images.shape[-2:], mode="nearest")


def random_resized_crop(images: torch.Tensor, size: int, scale, generator, ratio=(3 / 4, 4 / 3),
                        extents: torch.Tensor | None = None) -> torch.Tensor:
    """`extents`: None (the whole image), or per image the (h, w) in pixels of a photo centred on
    its square canvas (augment.PhotoCanvas): the box is then drawn from the photo alone by
    torchvision's rule (`photo_boxes`)."""
    if extents is not None:
        return _crop_photos(images, size, scale, ratio, generator, extents)
    n, device = len(images), images.device
    area = uniform(n, scale[0], scale[1], generator, device)
    log_ratio = uniform(n, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1)   # as fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1)
    cx = uniform(n, 0, 1, generator, device) * (1 - width) * 2 - (1 - width)   # box center in [-1, 1]
    cy = uniform(n, 0, 1, generator, device) * (1 - height) * 2 - (1 - height)
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    return _sample(images, theta, (size, size), mode="bilinear")


TRIES = 10  # torchvision's RandomResizedCrop draws up to 10 boxes before it falls back to a center crop


def photo_boxes(aspect: torch.Tensor, scale, ratio, generator) -> tuple[torch.Tensor, ...]:
    """(width, height, cx, cy) of one box per photo, as fractions of the photo's sides and centres
    in [-1, 1]: torchvision's RandomResizedCrop rule, vectorised. Up to 10 draws of an area in
    `scale` (of the photo's) and a log-uniform aspect ratio in `ratio`; the first box that fits
    wins; if none does, the whole photo, cut to the nearest allowed ratio, in the centre.
    `aspect`: each photo's width / height."""
    n, device = len(aspect), aspect.device
    area = scale[0] + (scale[1] - scale[0]) * torch.rand((n, TRIES), generator=generator, device=device)
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        (n, TRIES), generator=generator, device=device)
    box_ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * box_ratio / aspect[:, None])
    height = torch.sqrt(area * aspect[:, None] / box_ratio)
    fits = (width <= 1) & (height <= 1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    found = fits.any(1)
    whole_w = torch.where(aspect > ratio[1], ratio[1] / aspect, torch.ones_like(aspect))
    whole_h = torch.where(aspect < ratio[0], aspect / ratio[0], torch.ones_like(aspect))
    width = torch.where(found, width.gather(1, first)[:, 0], whole_w)
    height = torch.where(found, height.gather(1, first)[:, 0], whole_h)
    where = torch.rand((n, 2), generator=generator, device=device)
    cx = torch.where(found, (where[:, 0] * 2 - 1) * (1 - width), torch.zeros_like(width))
    cy = torch.where(found, (where[:, 1] * 2 - 1) * (1 - height), torch.zeros_like(height))
    return width, height, cx, cy


def _crop_photos(images, size, scale, ratio, generator, extents) -> torch.Tensor:
    """Boxes of each photo (photo_boxes), mapped from the photo's coordinates to its canvas's."""
    h, w = extents.float().unbind(1)
    width, height, cx, cy = photo_boxes(w / h, scale, ratio, generator)
    (top, left), (side_h, side_w) = content_origin(extents, images.shape[-2:]), images.shape[-2:]
    width, cx = width * w / side_w, cx * w / side_w + (2 * left + w - side_w) / side_w
    height, cy = height * h / side_h, cy * h / side_h + (2 * top + h - side_h) / side_h
    zero = torch.zeros_like(width)
    theta = torch.stack([torch.stack([width, zero, cx], 1), torch.stack([zero, height, cy], 1)], 1)
    return _sample(images, theta, (size, size), mode="bilinear")


def content_origin(extents: torch.Tensor, canvas) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, left) of photos of `extents` (h, w) centred on a canvas of shape `canvas` (H, W), as
    augment.PhotoCanvas places them."""
    return (canvas[0] - extents[:, 0].long()) // 2, (canvas[1] - extents[:, 1].long()) // 2


def center_crop_photos(images: torch.Tensor, size: int, extents: torch.Tensor) -> torch.Tensor:
    """The central `size` square of each photo on its canvas (the evaluation view's crop)."""
    top, left = content_origin(extents, images.shape[-2:])
    top = top + torch.round((extents[:, 0].long() - size) / 2).long()  # as torchvision's CenterCrop
    left = left + torch.round((extents[:, 1].long() - size) / 2).long()
    return _gather_crops(images, top, left, size, size)


def _gather_crops(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, :, None]   # (n, h, 1)
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(len(images), device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _sample(images, theta, size, mode) -> torch.Tensor:
    source = images.float()
    grid = F.affine_grid(theta.to(source.dtype), [len(images), 3, *size], align_corners=False)
    out = F.grid_sample(source, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(images.dtype) if images.dtype == torch.uint8 else out


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < max(images.shape[-2:]))  # as torchvision: whenever a side shrinks
    return out.round().clamp(0, 255).to(images.dtype) if images.dtype == torch.uint8 else out


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = round((h - size) / 2), round((w - size) / 2)  # as torchvision: round(), not floor
    return images[..., top:top + size, left:left + size]


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] float in; normalized float32 out. `mean`, `std`: per channel, as numbers or
    as tensors; in a loop on a GPU pass tensors already there (`to_device`), since building them
    from numbers is a blocking host-to-device copy per call."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images - mean) / std


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor copied to `device` without making the host wait: on CUDA a copy from ordinary
    (pageable) memory waits for all queued GPU work, a non-blocking one from pinned memory does not."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
