"""Common corruptions of Hendrycks & Dietterich (ICLR 2019), as CIFAR-10-C made them: the definitions and
severity parameters of their `make_cifar_c.py` (hendrycks/robustness), written with numpy, scipy and Pillow
(the reference needs ImageMagick's Wand and OpenCV; `imagecorruptions`, the maintained package, carries
ImageNet-C's parameters, which are for 224 px images, and its 1.1.2 fails on numpy 2 / scikit-image 0.26).

Each corruption takes one HxWx3 uint8 image, a severity 1-5 and a numpy RandomState, and returns a uint8
image of the same shape, truncated to uint8 as the reference saved them. The reference is written for 32 px;
where it names the side (glass blur's pixel walk, elastic's displacement, pixelate, fog's fractal) the image's
own side stands in. What stands in for a library call of the reference:

- skimage's `gaussian(x, sigma, multichannel=True)`: scipy's gaussian_filter over the two spatial axes, mode
  nearest, truncate 4 (skimage's defaults);
- OpenCV's `GaussianBlur` / `filter2D` (defocus blur's disk): the same 3x3 (5x5) Gaussian kernel and a
  correlation with reflect-101 borders (scipy's mirror mode);
- ImageMagick's `MotionBlurImage` (motion blur, snow): its one-sided Gaussian line kernel of 2 ceil(radius) + 1
  taps, each tap the image shifted along the angle with edge pixels repeated;
- OpenCV's `warpAffine` (elastic): scipy's affine_transform, bilinear, mirror borders;
- skimage's `random_noise(mode='s&p')` (impulse noise): each value independently replaced, with probability
  `amount`, by 0 or 1 with equal odds (today's skimage; the 2018 one drew a fixed count of positions);
- skimage's rgb2hsv / hsv2rgb: matplotlib's.

- OpenCV's `resize(fx, fy, INTER_LINEAR)` (frost's photograph): bilinear samples at ((x + 0.5) / f - 0.5),
  edge pixels repeated, rounded to uint8 (packaged_corruptions.py).

`frost` blends in a crop of one of the reference's frost photographs, which tlbench does not ship: it reads
them from the `imagecorruptions` package when that is installed (`pip install imagecorruptions-imaug`;
packaged_corruptions.py, with ImageNet-C's definitions from the same package). `spatter` (one of the four extra
corruptions) is built on OpenCV's Canny edges and distance transform, and uses OpenCV (the `vtab` extra).
`test_shift.corruptions: all` stays the fourteen that need nothing (name frost or spatter to add them)."""

import io
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from tlbench.data.packaged_corruptions import (frost, frost_digest, frost_folder, imagenet_c, opencv, package_digest,
                                                spatter)
from tlbench.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)
VERSION = 1  # of the definitions below: bump when one changes what it draws, so cached corrupted splits are redone


def _float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64) / 255.0


def _blur(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """skimage.filters.gaussian over the spatial axes (channels kept apart)."""
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0) if x.ndim == 3 else sigma, mode=mode, truncate=truncate)


def gaussian_noise(x, severity, rng):
    c = [0.04, 0.06, .08, .09, .10][severity - 1]
    x = _float(x)
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, severity, rng):
    c = [500, 250, 100, 75, 50][severity - 1]
    x = _float(x)
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x, severity, rng):
    c = [.01, .02, .03, .05, .07][severity - 1]
    x = _float(x).copy()
    flipped = rng.random_sample(x.shape) <= c
    salted = rng.random_sample(x.shape) <= 0.5
    x[flipped & salted], x[flipped & ~salted] = 1.0, 0.0
    return np.clip(x, 0, 1) * 255


def speckle_noise(x, severity, rng):
    c = [.06, .1, .12, .16, .2][severity - 1]
    x = _float(x)
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x, severity, rng):
    c = [.4, .6, 0.7, .8, 1][severity - 1]
    return np.clip(_blur(_float(x), c), 0, 1) * 255


def glass_blur(x, severity, rng):
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    x = np.uint8(_blur(_float(x), sigma) * 255)
    height, width = x.shape[:2]
    for _ in range(iterations):  # the reference's local "swap", bottom-right to top-left: its tuple assignment of
        for h in range(height - delta, delta, -1):  # numpy views copies the neighbour into the pixel and leaves
            for w in range(width - delta, delta, -1):  # the neighbour as it was, and so does this
                dx, dy = rng.randint(-delta, delta, size=(2,))
                x[h, w] = x[h + dy, w + dx]
    return np.clip(_blur(x / 255.0, sigma), 0, 1) * 255


def _cv2_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(size, sigma) as a column."""
    offsets = np.arange(size) - (size - 1) / 2
    kernel = np.exp(-offsets ** 2 / (2 * sigma ** 2))
    return kernel / kernel.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk: a filled circle, normalised, then blurred by a 3x3 (5x5) Gaussian."""
    if radius <= 8:
        coords, size = np.arange(-8, 8 + 1), 3
    else:
        coords, size = np.arange(-radius, radius + 1), 5
    xs, ys = np.meshgrid(coords, coords)
    aliased = np.array((xs ** 2 + ys ** 2) <= radius ** 2, dtype=np.float32)
    aliased /= np.sum(aliased)
    g = _cv2_gaussian_kernel(size, alias_blur)
    return ndimage.correlate(aliased.astype(np.float64), np.outer(g, g), mode="mirror").astype(np.float32)


def defocus_blur(x, severity, rng):
    radius, alias_blur = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    x, kernel = _float(x), disk(radius, alias_blur)
    channels = [ndimage.correlate(x[:, :, d], kernel, mode="mirror") for d in range(3)]
    return np.clip(np.stack(channels, axis=2), 0, 1) * 255


def _shifted(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """x[y - dy, x - dx] with the edge repeated (ImageMagick's default virtual pixels)."""
    rows = np.clip(np.arange(x.shape[0]) - dy, 0, x.shape[0] - 1)
    cols = np.clip(np.arange(x.shape[1]) - dx, 0, x.shape[1] - 1)
    return x[rows][:, cols]


def motion(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage: a one-sided line of 2 ceil(radius) + 1 Gaussian-weighted taps along
    `angle` (degrees), on a float image; returns float."""
    width = int(2 * math.ceil(radius) + 1)
    kernel = np.exp(-np.arange(width, dtype=np.float64) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    point = (width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle)))
    hypot = math.hypot(*point)
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(i * point[0] / hypot - 0.5)
        dx = -math.ceil(i * point[1] / hypot - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break  # the line left the image (a small one): the taps so far
        blurred += kernel[i] * _shifted(x, dx, dy)
    return blurred


def motion_blur(x, severity, rng):
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    blurred = motion(np.asarray(x, dtype=np.float64), radius, sigma, rng.uniform(-45, 45))
    return np.clip(np.round(blurred), 0, 255)  # ImageMagick writes whole values (its PNG round trip)


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    side = x.shape[0]
    crop = int(np.ceil(side / factor))
    top = (side - crop) // 2
    zoomed = ndimage.zoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - side) // 2
    return zoomed[trim:trim + side, trim:trim + side]


def zoom_blur(x, severity, rng):
    factors = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
               np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    x = _float(x).astype(np.float32)
    out = np.zeros_like(x)
    for factor in factors:
        out += clipped_zoom(x, factor)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def _gray(x: np.ndarray) -> np.ndarray:
    """OpenCV's RGB2GRAY."""
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def snow(x, severity, rng):
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    x = np.asarray(x, dtype=np.float32) / 255.0
    height, width = x.shape[:2]
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    flakes = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8).astype(np.float64)
    layer = np.round(motion(flakes, c[4], c[5], rng.uniform(-135, -45))) / 255.0
    layer = layer[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x).reshape(height, width, 1) * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def plasma_fractal(mapsize: int, wibbledecay: float, rng) -> np.ndarray:
    """The reference's diamond-square height map in [0, 1], side `mapsize` (a power of two)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squares)
        centres = maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize]
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        maparray[stepsize // 2:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(top)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, severity, rng):
    strength, decay = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    x = _float(x)
    height, width = x.shape[:2]
    mapsize = 1 << (max(height, width, 2) - 1).bit_length()  # the power of two the image fits in (32 for 32 px)
    max_val = x.max()
    x = x + strength * plasma_fractal(mapsize, decay, rng)[:height, :width][..., np.newaxis]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


def _hsv_shift(x, change) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(_float(x))
    change(hsv)
    return np.clip(hsv_to_rgb(hsv), 0, 1) * 255


def brightness(x, severity, rng):
    c = [.05, .1, .15, .2, .3][severity - 1]

    def lighter(hsv):
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + c, 0, 1)
    return _hsv_shift(x, lighter)


def saturate(x, severity, rng):
    scale, shift = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]

    def saturated(hsv):
        hsv[:, :, 1] = np.clip(hsv[:, :, 1] * scale + shift, 0, 1)
    return _hsv_shift(x, saturated)


def contrast(x, severity, rng):
    c = [.75, .5, .4, .3, 0.15][severity - 1]
    x = _float(x)
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def _affine(points_from: np.ndarray, points_to: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 2x3 matrix taking three (x, y) points to three others."""
    source = np.hstack([points_from, np.ones((3, 1))])
    return np.linalg.solve(source, points_to).T


def elastic_transform(x, severity, rng):
    side = x.shape[0]
    alpha, sigma, affine = [(side * 0, side * 0, side * 0.08), (side * 0.05, side * 0.2, side * 0.07),
                            (side * 0.08, side * 0.06, side * 0.06), (side * 0.1, side * 0.04, side * 0.05),
                            (side * 0.1, side * 0.03, side * 0.03)][severity - 1]
    image = np.asarray(x, dtype=np.float32) / 255.0
    shape = image.shape
    centre = np.float32(shape[:2]) // 2
    size = min(shape[:2]) // 3
    pts1 = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
    matrix = _affine(pts1.astype(np.float64), pts2.astype(np.float64))  # (x, y) -> (x', y'), as OpenCV's
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]  # warpAffine samples src at M^-1 (dst)
    # in (row, col) order for scipy: row' = a_yy row + a_yx col + t_y
    rowcol = np.array([[inverse[1, 1], inverse[1, 0]], [inverse[0, 1], inverse[0, 0]]])
    offset = np.array([inverse[1, 2], inverse[0, 2]])
    image = np.stack([ndimage.affine_transform(image[:, :, d], rowcol, offset=offset, order=1, mode="mirror")
                      for d in range(shape[2])], axis=2)
    dx = (_blur(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dy = (_blur(rng.uniform(-1, 1, size=shape[:2]), sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    xs, ys, zs = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(ys + dy, (-1, 1)), np.reshape(xs + dx, (-1, 1)), np.reshape(zs, (-1, 1))
    warped = ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape)
    return np.clip(warped, 0, 1) * 255


def pixelate(x, severity, rng):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    height, width = x.shape[:2]
    image = Image.fromarray(np.asarray(x, dtype=np.uint8))
    image = image.resize((int(width * c), int(height * c)), Image.BOX).resize((width, height), Image.BOX)
    return np.asarray(image)


def jpeg_compression(x, severity, rng):
    quality = [80, 65, 58, 50, 40][severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(x, dtype=np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


# CIFAR-10-C's fifteen, in its order (frost apart: it needs the imagecorruptions package), then the extra ones.
CORRUPTIONS = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur, "zoom_blur": zoom_blur,
    "snow": snow, "fog": fog, "brightness": brightness, "contrast": contrast,
    "elastic_transform": elastic_transform, "pixelate": pixelate, "jpeg_compression": jpeg_compression,
}
EXTRA = {"speckle_noise": speckle_noise, "gaussian_blur": gaussian_blur, "saturate": saturate}
# Named in test_shift.corruptions only: frost's photographs come from imagecorruptions, spatter's calls from OpenCV.
NEEDS_PACKAGE = {"frost": frost, "spatter": spatter}


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """`image` (HxWx3 uint8) under corruption `name` at `severity` (1-5), drawing from `rng`; uint8 out,
    truncated as the reference's np.uint8 did."""
    found = {**CORRUPTIONS, **EXTRA, **NEEDS_PACKAGE}
    if name not in found:
        raise ValueError(f"corruption {name!r} is not available; use one of {', '.join(found)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of 1-5")
    out = found[name](np.asarray(image, dtype=np.uint8), severity, rng)
    return np.uint8(np.clip(np.asarray(out, dtype=np.float64), 0, 255))


def chosen(names, definitions: str = "cifar10c") -> list[str]:
    """`test_shift.corruptions` as a list of names. cifar10c: all = CIFAR-10-C's fourteen that need no package (all
    but frost), and a list is checked (frost: that its photographs are installed); imagenet_c: all = ImageNet-C's
    fifteen, frost included, and a list may name the package's four extra ones too."""
    if definitions == "imagenet_c":
        package = imagenet_c()
        found, names = package.get_corruption_names("all"), package.get_corruption_names("common") if names == "all" \
            else list(names)
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ConfigError(f"test_shift.corruptions names {', '.join(map(repr, unknown))}, not one of ImageNet-C's "
                              f"(test_shift.definitions=imagenet_c): use all, or some of {', '.join(found)}")
        return list(names)
    if names == "all":
        return list(CORRUPTIONS)
    found, names = {**CORRUPTIONS, **EXTRA, **NEEDS_PACKAGE}, list(names)
    if "frost" in names:
        frost_folder()
    if "spatter" in names:
        opencv()
    unknown = [n for n in names if n not in found]
    if unknown:
        raise ConfigError(f"test_shift.corruptions names {', '.join(map(repr, unknown))}, not available; use all, "
                          f"or some of {', '.join(found)}")
    return names


def drawn(count: int, images: int | None, seed: int) -> np.ndarray:
    """The positions of the test images to corrupt: all, or `images` of them drawn by `seed`, in order."""
    if images is None or images >= count:
        return np.arange(count)
    return np.sort(np.random.RandomState(seed).choice(count, size=images, replace=False))


def corrupted_images(images: np.ndarray, name: str, severity: int, seed: int, definitions: str = "cifar10c") -> np.ndarray:
    """(N, H, W, 3) uint8 images under one corruption and severity, from a random stream of their own (the seed,
    the corruption's name and the severity), so adding or dropping another never changes these. imagenet_c: the
    imagecorruptions package draws from numpy's global stream, seeded so for the call and restored after it."""
    stream = [seed, zlib.crc32(name.encode()), severity]
    if definitions != "imagenet_c":
        rng = np.random.RandomState(stream)
        return np.stack([corrupt(image, name, severity, rng) for image in images])
    package, state = imagenet_c(), np.random.get_state()
    try:
        np.random.seed(stream)
        return np.stack([np.uint8(package.corrupt(np.asarray(image, dtype=np.uint8), severity=severity,
                                                  corruption_name=name)) for image in images])
    finally:
        np.random.set_state(state)


def corrupted_split(images, name: str, severity: int, seed: int, cache_dir, definitions: str = "cifar10c"):
    """A decoded split's images (uint8 tensor N x 3 x H x W) under one corruption and severity, kept in
    `cache_dir` keyed by the images' bytes, the corruption, severity, seed and VERSION (imagenet_c: the package's
    definitions instead; disk_cache: built once when several runs ask at the same time)."""
    import hashlib

    import torch

    from tlbench.data import disk_cache

    key = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]
    if definitions == "imagenet_c":
        version = f"imagenet_c-{package_digest()}"
    else:
        version = f"v{VERSION}"
        if name == "frost":  # the photographs it blends in are part of what it draws
            key += f"-{frost_digest()}"
        elif name == "spatter":  # OpenCV's calls draw its drops
            key += f"-cv{opencv().__version__}"
    path = Path(cache_dir).expanduser() / f"shift-{name}-{severity}-seed{seed}-{version}-{key}.pt"

    def check(stored: dict) -> None:
        found = stored.get("images")
        if not (isinstance(found, torch.Tensor) and found.dtype == torch.uint8 and found.shape == images.shape):
            raise ValueError(f"it does not hold {len(images)} corrupted images of {tuple(images.shape[1:])}")

    def build() -> dict:
        out = corrupted_images(images.permute(0, 2, 3, 1).numpy(), name, severity, seed, definitions)
        return {"images": torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()}

    return disk_cache.read_or_build(path, check, build, "corruption cache", f"corrupting the images ({name}) again")[0]["images"]
