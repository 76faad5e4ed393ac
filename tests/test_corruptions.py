"""The common corruptions (tlbench/data/corruptions.py) against their published definitions: CIFAR-10-C's
parameters, the maintained `imagecorruptions` package as the oracle wherever its ImageNet-C parameters
coincide with CIFAR-10-C's (the same definition at the same value: skipped where the package is absent; it
needs OpenCV, scikit-image and numba, so it is not in the dev extra), and properties every definition has."""

import numpy as np
import pytest

from tlbench.data import corruptions, packaged_corruptions
from tlbench.data.corruptions import CORRUPTIONS, EXTRA, corrupt

ALL = sorted({**CORRUPTIONS, **EXTRA})
# blurs and warps: weighted means of nearby pixels, so a flat image stays flat
AVERAGING = ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "elastic_transform", "pixelate"]
# corruptions whose strength rises with the severity in CIFAR-10-C's table
MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "gaussian_blur",
            "contrast", "brightness", "pixelate", "jpeg_compression", "zoom_blur"]


@pytest.fixture
def image():
    return np.random.RandomState(0).randint(0, 256, size=(32, 32, 3)).astype(np.uint8)


def smooth(side=32):
    """A photo-like image: smooth gradients and a disc, so blurs and compression change it gently."""
    ys, xs = np.mgrid[0:side, 0:side] / side
    disc = ((xs - 0.5) ** 2 + (ys - 0.5) ** 2 < 0.1).astype(float)
    return np.uint8(np.stack([200 * xs, 150 * ys + 50 * disc, 100 + 100 * disc], axis=2))


@pytest.mark.parametrize("name", ALL)
def test_each_corruption_is_a_uint8_image_of_the_same_shape_fixed_by_its_seed(name, image):
    for severity in corruptions.SEVERITIES:
        out = corrupt(image, name, severity, np.random.RandomState(7))
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(image, name, severity, np.random.RandomState(7)))
    assert not np.array_equal(corrupt(image, name, 5, np.random.RandomState(7)), image)


@pytest.mark.parametrize("name", AVERAGING)
def test_blurs_and_warps_leave_a_flat_image_flat(name):
    flat = np.full((32, 32, 3), (40, 120, 200), dtype=np.uint8)
    for severity in (1, 3, 5):
        out = corrupt(flat, name, severity, np.random.RandomState(1)).astype(int)
        assert np.abs(out - flat).max() <= 1, f"{name} {severity}"  # truncation to uint8: at most 1 lower


@pytest.mark.parametrize("name", MONOTONE)
def test_higher_severities_corrupt_more(name, image):
    change = [np.abs(corrupt(image, name, s, np.random.RandomState(3)).astype(float) - image).mean()
              for s in corruptions.SEVERITIES]
    assert change == sorted(change) and change[-1] > change[0], change


def test_glass_blur_moves_pixels_as_the_reference_does():
    """The reference's "swap" (a tuple assignment of numpy views) copies the neighbour into the pixel and leaves
    the neighbour as it was: with no blur to speak of, every pixel of the walk holds a value of its 2x2
    up-left neighbourhood after one pass."""
    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3) % 251
    out = corrupt(image, "glass_blur", 1, np.random.RandomState(0))  # sigma 0.05: a blur of ~1e-87 weight
    assert np.array_equal(out[:2], image[:2].astype(np.uint8))  # rows outside the walk (h = 31 ... 2) untouched
    unchanged = np.mean(np.all(out[2:, 2:] == image[2:, 2:], axis=2))
    assert 0.15 < unchanged < 0.45  # dx = dy = 0 a quarter of the time, plus equal neighbours


def test_fog_fits_its_fractal_to_any_side():
    out = corrupt(smooth(48), "fog", 3, np.random.RandomState(0))  # a 64-wide fractal, cut to 48
    assert out.shape == (48, 48, 3)


def test_an_unknown_corruption_or_severity_is_one_message(image):
    with pytest.raises(ValueError, match=r"'splatter' is not available; use one of .*spatter"):
        corrupt(image, "splatter", 1, np.random.RandomState(0))
    with pytest.raises(ValueError, match="severity 6 is not one of 1-5"):
        corrupt(image, "contrast", 6, np.random.RandomState(0))


# ---------------------------------------------------------------- the maintained package as the oracle

# (ours, CIFAR-10-C severity, imagecorruptions' ImageNet-C severity) where the two tables hold the same value
SAME_VALUE = [("gaussian_noise", 3, 1), ("contrast", 3, 1), ("contrast", 4, 2), ("brightness", 2, 1),
              ("brightness", 4, 2), ("brightness", 5, 3), ("speckle_noise", 5, 2), ("gaussian_blur", 5, 1),
              ("saturate", 1, 1), ("saturate", 2, 2), ("zoom_blur", 2, 1), ("zoom_blur", 3, 2)]


@pytest.mark.parametrize("name, ours, theirs", SAME_VALUE)
def test_the_same_definition_at_the_same_value_gives_imagecorruptions_image(name, ours, theirs):
    reference = pytest.importorskip("imagecorruptions.corruptions")
    image = smooth()
    np.random.seed(11)
    expected = np.uint8(getattr(reference, name)(image, theirs))
    got = corrupt(image, name, ours, np.random.RandomState(11))
    assert np.abs(got.astype(int) - expected).max() <= 1  # float rounding before truncation to uint8


@pytest.mark.parametrize("radius, alias_blur", [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1), (10, 0.5)])
def test_defocus_blurs_disk_is_the_references(radius, alias_blur):
    reference = pytest.importorskip("imagecorruptions.corruptions")
    np.testing.assert_allclose(corruptions.disk(radius, alias_blur), reference.disk(radius, alias_blur), atol=1e-6)


@pytest.mark.parametrize("radius, sigma, angle", [(6, 1, 30.0), (9, 2.5, -44.0), (14, 12, -100.0), (8, 2, 0.0)])
def test_motion_blur_is_imagemagicks_line_kernel_as_imagecorruptions_writes_it(radius, sigma, angle):
    reference = pytest.importorskip("imagecorruptions.corruptions")
    image = smooth().astype(np.float64)
    np.testing.assert_allclose(corruptions.motion(image, radius, sigma, angle),
                               reference._motion_blur(image, radius, sigma, angle), atol=1e-3)


@pytest.mark.parametrize("decay", [3, 2.5, 1.75])
def test_fogs_fractal_is_the_references(decay):
    reference = pytest.importorskip("imagecorruptions.corruptions")
    np.random.seed(5)
    expected = reference.plasma_fractal(mapsize=32, wibbledecay=decay)
    np.testing.assert_allclose(corruptions.plasma_fractal(32, decay, np.random.RandomState(5)), expected,
                               atol=1e-6)  # the package keeps the map in float32, the reference in float64


def test_frost_is_cifar_10_cs_with_the_references_own_photographs_and_resize():
    pytest.importorskip("imagecorruptions")
    cv2 = pytest.importorskip("cv2")
    folder, image = packaged_corruptions.frost_folder(), smooth()
    for severity, (a, b) in enumerate([(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)], start=1):
        draws = np.random.RandomState(severity)  # make_cifar_c.py's frost, its draws from this stream
        photo = cv2.resize(cv2.imread(str(folder / packaged_corruptions.FROST_FILES[draws.randint(5)])), (0, 0), fx=0.2, fy=0.2)
        top, left = draws.randint(0, photo.shape[0] - 32), draws.randint(0, photo.shape[1] - 32)
        expected = np.uint8(np.clip(a * image + b * photo[top:top + 32, left:left + 32][..., [2, 1, 0]], 0, 255))
        got = corrupt(image, "frost", severity, np.random.RandomState(severity))
        assert np.abs(got.astype(int) - expected).max() <= 1, severity  # OpenCV's fixed-point bilinear: +-1


# ImageNet-C's spatter table (imagecorruptions' corruptions.py): the same algorithm under other parameters.
SPATTER_IMAGENET_C = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                      (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_spatter_under_imagenet_cs_table_is_imagecorruptions_spatter(severity):
    """Oracle: the maintained package's spatter (the same algorithm as make_cifar_c.py's, ImageNet-C's table) on
    the same numpy stream; ours under CIFAR-10-C's table is checked for what it draws below."""
    reference = pytest.importorskip("imagecorruptions.corruptions")
    pytest.importorskip("cv2")
    from PIL import Image

    image = smooth(64)
    np.random.seed(severity)
    expected = np.uint8(reference.spatter(Image.fromarray(image), severity))
    got = np.uint8(np.clip(packaged_corruptions.spatter(image, severity, np.random.RandomState(severity),
                                                        SPATTER_IMAGENET_C), 0, 255))
    assert np.abs(got.astype(int) - expected).max() <= 1  # float32 rounding before truncation to uint8


def test_spatter_is_cifar_10_cs_water_then_mud_fixed_by_its_seed():
    pytest.importorskip("cv2")
    image = smooth()
    for severity in (1, 2, 3, 4, 5):
        out = corrupt(image, "spatter", severity, np.random.RandomState(3))
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.array_equal(out, corrupt(image, "spatter", severity, np.random.RandomState(3)))
        changed = np.any(out != image, axis=2)
        assert changed.any(), severity
        diff = out.astype(int) - image
        if severity <= 3:  # water: pale turquoise added, never taken away
            assert diff.min() >= 0 and diff[changed][:, 1:].mean() > diff[changed][:, 0].mean()
        else:  # mud: darker, toward brown (63, 42, 20)
            assert out[changed].astype(int).sum() < image[changed].astype(int).sum()
    assert corruptions.chosen(["spatter"]) == ["spatter"] and "spatter" not in corruptions.chosen("all")


def test_spatter_with_no_drop_left_is_the_image():
    pytest.importorskip("cv2")
    image, never = smooth(), [(0.5, 0.01, 1, 2.0, 0.5, 0)] * 5  # a threshold no blurred value reaches
    out = packaged_corruptions.spatter(image, 1, np.random.RandomState(0), never)
    assert np.array_equal(np.uint8(out), image)  # the reference divides by zero here


def test_spatter_without_opencv_is_one_message_naming_the_install(monkeypatch, make_cfg):
    import sys

    from tlbench.errors import ConfigError
    from tlbench.runner import build

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 raises ImportError
    with pytest.raises(ConfigError, match="pip install opencv-python-headless"):
        build.check_shift(make_cfg("data.pipeline=tensor", "test_shift.corruptions=[fog,spatter]"))


def test_frost_is_a_uint8_image_fixed_by_its_seed_at_any_side():
    pytest.importorskip("imagecorruptions")
    for side in (32, 96, 224):
        image = smooth(side)
        first, again = (corrupt(image, "frost", 3, np.random.RandomState(4)) for _ in range(2))
        assert first.dtype == np.uint8 and first.shape == image.shape and np.array_equal(first, again)
        assert not np.array_equal(first, image)


def test_frost_without_its_photographs_is_one_message_naming_the_install(monkeypatch, make_cfg):
    import importlib.util

    from tlbench.errors import ConfigError
    from tlbench.runner import build

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imagecorruptions" else find(name, *a))
    with pytest.raises(ConfigError, match="pip install imagecorruptions-imaug"):
        build.check_shift(make_cfg("data.pipeline=tensor", "test_shift.corruptions=[fog,frost]"))
    assert corruptions.chosen("all") == list(CORRUPTIONS) and "frost" not in CORRUPTIONS  # all needs no package
