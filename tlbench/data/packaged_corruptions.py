"""The corruptions that need a package tlbench does not require: CIFAR-10-C's `frost`, which blends in a crop of one
of the reference's frost photographs (the `imagecorruptions` package ships them; PyPI: imagecorruptions-imaug),
ImageNet-C's definitions and severity parameters (`test_shift.definitions=imagenet_c`), which that package
implements, and CIFAR-10-C's `spatter`, built on OpenCV's Canny edges and distance transform (OpenCV: the `vtab`
extra's opencv-python-headless). Without the package, one message naming the install."""

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from tlbench.errors import ConfigError

# The photographs CIFAR-10-C's frost draws from: np.random.randint(5) over its list of six, so never the sixth.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
FROST_PACKAGE = "imagecorruptions"  # ships them in imagecorruptions/frost/ (PyPI: imagecorruptions-imaug)


def frost_folder() -> Path:
    """The folder of the frost photographs in the installed `imagecorruptions` package."""
    spec = importlib.util.find_spec(FROST_PACKAGE)
    folder = Path(spec.origin).parent / "frost" if spec is not None and spec.origin else None
    if folder is None or not all((folder / name).is_file() for name in FROST_FILES):
        raise ConfigError("the frost corruption blends in the reference's frost photographs, which tlbench reads from "
                          "the `imagecorruptions` package: pip install imagecorruptions-imaug (or leave frost out of "
                          "test_shift.corruptions)")
    return folder


def resize_linear(image: np.ndarray, scale: float) -> np.ndarray:
    """OpenCV's resize(image, (0, 0), fx=scale, fy=scale) with INTER_LINEAR for an HxWx3 uint8 image: the output
    side round(side x scale), each pixel the bilinear sample at ((x + 0.5) / scale - 0.5), edges repeated."""
    height, width = image.shape[:2]
    out_h, out_w = int(round(height * scale)), int(round(width * scale))
    ys = np.clip((np.arange(out_h) + 0.5) / scale - 0.5, 0, height - 1)
    xs = np.clip((np.arange(out_w) + 0.5) / scale - 0.5, 0, width - 1)
    grid = np.meshgrid(ys, xs, indexing="ij")
    channels = [ndimage.map_coordinates(image[..., c].astype(np.float64), grid, order=1, mode="nearest")
                for c in range(image.shape[2])]
    return np.uint8(np.clip(np.round(np.stack(channels, axis=2)), 0, 255))


@functools.lru_cache(maxsize=len(FROST_FILES) * 4)
def frost_layer(index: int, scale: float) -> np.ndarray:
    """Frost photograph `index` (RGB, uint8) resized by `scale` as the reference's cv2.resize did."""
    with Image.open(frost_folder() / FROST_FILES[index]) as photo:
        return resize_linear(np.asarray(photo.convert("RGB")), scale)


def frost_digest() -> str:
    """A digest of the frost photographs, part of a frost cache's key."""
    digest = hashlib.sha256()
    for name in FROST_FILES:
        digest.update((frost_folder() / name).read_bytes())
    return digest.hexdigest()[:8]


def frost(x, severity, rng):
    """CIFAR-10-C's frost: c0 x + c1 x (a random crop of a random photograph, resized by 0.2 for 32 px; by
    0.2 x side / 32 for another side, so the frost keeps its size relative to the image)."""
    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    height, width = x.shape[:2]
    layer = frost_layer(rng.randint(5), 0.2 * max(height, width) / 32)
    top, left = rng.randint(0, layer.shape[0] - height), rng.randint(0, layer.shape[1] - width)
    return np.clip(c[0] * np.asarray(x, dtype=np.float64) + c[1] * layer[top:top + height, left:left + width], 0, 255)


# CIFAR-10-C's spatter (make_cifar_c.py): the liquid layer's mean, spread, blur and threshold, the splash's strength
# and its kind (0: water, pale turquoise drops with lit edges; 1: mud, brown blots). ImageNet-C's are another table.
SPATTER_CIFAR10C = [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)]
WATER, MUD = (175 / 255, 238 / 255, 238 / 255), (63 / 255, 42 / 255, 20 / 255)


def opencv():
    """OpenCV (spatter's edges, distance transform and histogram equalisation are its calls)."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("the spatter corruption is built on OpenCV's calls, and OpenCV is not installed: pip install "
                          "opencv-python-headless (tlbench's `vtab` extra installs it), or leave spatter out of "
                          "test_shift.corruptions") from None
    return cv2


def spatter(x, severity, rng, table=SPATTER_CIFAR10C):
    """CIFAR-10-C's spatter: a blurred, thresholded Gaussian liquid layer; water (severities 1-3) adds pale
    turquoise drops shaded by the distance to the layer's Canny edges, mud (4-5) pastes brown blots. skimage's
    gaussian is scipy's (mode nearest, truncate 4); the rest are the reference's OpenCV calls, in float32 as there.
    `table`: the severity parameters (ImageNet-C's, for the test against the imagecorruptions package)."""
    cv2 = opencv()
    c = table[severity - 1]
    x = np.asarray(x, dtype=np.float32) / 255.0
    liquid = ndimage.gaussian_filter(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), sigma=c[2], mode="nearest",
                                     truncate=4.0)
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        dist = cv2.blur(cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)[1], (3, 3)).astype(np.uint8)
        kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.blur(cv2.filter2D(cv2.equalizeHist(dist), cv2.CV_8U, kernel), (3, 3)).astype(np.float32)
        layer = liquid * dist
        peak = layer.max()
        if peak == 0:  # no drop survived the threshold (the reference divides by zero here)
            return x * 255
        drops = (layer / peak * np.float32(c[4]))[..., None] * np.asarray(WATER, dtype=np.float32)
        return np.clip(x + drops, 0, 1) * 255
    mask = ndimage.gaussian_filter(np.where(liquid > c[3], 1, 0).astype(np.float32), sigma=c[4], mode="nearest",
                                   truncate=4.0)
    mask[mask < 0.8] = 0
    mud = np.asarray(MUD, dtype=np.float32) * mask[..., None]
    return np.clip(x * (1 - mask[..., None]) + mud, 0, 1) * 255


def imagenet_c():
    """The maintained `imagecorruptions` package (ImageNet-C's definitions and severity parameters)."""
    try:
        import imagecorruptions
    except ImportError:
        raise ConfigError("test_shift.definitions=imagenet_c corrupts with the imagecorruptions package, which is not "
                          "installed: pip install imagecorruptions-imaug (or test_shift.definitions=cifar10c, built in)") \
            from None
    return imagecorruptions


def package_digest() -> str:
    """A digest of the imagecorruptions package's definitions, part of an imagenet_c cache's key."""
    return hashlib.sha256((Path(imagenet_c().__file__).parent / "corruptions.py").read_bytes()).hexdigest()[:8]
