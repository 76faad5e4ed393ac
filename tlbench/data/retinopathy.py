"""VTAB's diabetic_retinopathy: Kaggle's retina photographs as TFDS's diabetic_retinopathy_detection/btgraham-300
(VTAB's config) prepares them, with the same OpenCV calls (Graham's preprocessing, the 2015 competition winner's),
split as TFDS does."""

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from tlbench.data.folders import FileListDataset
from tlbench.data.sources import SOURCES, fetched, hint, locate, official
from tlbench.data.splits import DataSplits, offline
from tlbench.data.tfrecord import files_digest
from tlbench.errors import DataNotFoundError

RETINOPATHY_CLASSES = ["no DR", "mild", "moderate", "severe", "proliferative DR"]  # Kaggle's level 0-4
RETINOPATHY_SOLUTION = "retinopathy_solution.csv"  # the test images' labels, Usage Public (validation) / Private (test)
RETINOPATHY_SOLUTION_URL = "https://storage.googleapis.com/kaggle-forum-message-attachments/90528/2877/" + RETINOPATHY_SOLUTION
GRAHAM_RADIUS = 300        # TFDS btgraham-300 (VTAB's config): the eyeball's radius after scaling, in pixels
GRAHAM_MASK_RATIO = 0.9    # the image is masked to, and cropped at, this share of the radius
GRAHAM_JPEG_QUALITY = 72   # and stored as a JPEG of this quality, as TFDS stores it


def diabetic_retinopathy(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """Kaggle's retina photographs graded 0-4 for diabetic retinopathy (VTAB's specialized task), as TFDS's
    diabetic_retinopathy_detection/btgraham-300 (VTAB's config) prepares them: each image scaled so the eyeball's
    radius is 300 px, its local average colour subtracted, masked and cropped to 90% of that radius, stored as a
    JPEG of quality 72 (graham). Splits as TFDS: train = trainLabels.csv (35,126), validation = the test
    images of Usage Public (10,906), test = Usage Private (42,670). Needs OpenCV (opencv-python-headless)."""
    base, _ = locate("diabetic_retinopathy", data_dir, root, download=False)
    folder = base / SOURCES["diabetic_retinopathy"].folder
    opencv()  # before anything is read: the preprocessing needs it
    solution = folder / RETINOPATHY_SOLUTION
    if not solution.is_file() and download and root is None and not offline():
        fetched("diabetic_retinopathy", base, RETINOPATHY_SOLUTION, RETINOPATHY_SOLUTION_URL, True)
    try:
        train = _graded(folder / "trainLabels.csv", folder / "train")
        val = _graded(solution, folder / "test", "Public")
        test = _graded(solution, folder / "test", "Private")
    except (OSError, KeyError, ValueError) as err:
        raise DataNotFoundError(hint("diabetic_retinopathy", base, f"cannot be read ({type(err).__name__}: {err})")) \
            from err
    splits = official("diabetic_retinopathy", base, GrahamImages(train), GrahamImages(test), RETINOPATHY_CLASSES,
                      image_size, "TFDS's: trainLabels.csv; the solution's Public rows validate, its Private rows test",
                      val=GrahamImages(val))
    splits.val_source = "Kaggle's public-leaderboard test images (TFDS's validation split)"
    return splits


def _graded(table: Path, images: Path, usage: str | None = None) -> list[tuple[Path, int]]:
    """(image file, level) for each row of a Kaggle label table (columns image, level[, Usage]); `usage`: only
    the rows of that Usage."""
    with open(table, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if usage is None or row["Usage"] == usage]
    if not rows:
        raise ValueError(f"{table.name} has no rows{f' of Usage {usage}' if usage else ''}")
    return [(images / f"{row['image']}.jpeg", int(row["level"])) for row in rows]


class GrahamImages(FileListDataset):
    """Kaggle's retina photographs, each prepared by `graham` as it is read."""

    @property
    def source_fingerprint(self) -> str:
        """The files (tensor_data.fingerprint's path, size and time) and the preparation, which the decoded
        cache holds the result of."""
        return files_digest([path for path, _ in self.samples], f"btgraham-{GRAHAM_RADIUS}-q{GRAHAM_JPEG_QUALITY}",
                             self.targets)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return graham(path.read_bytes()), label


def opencv():
    """OpenCV, which Graham's preprocessing is written in (TFDS calls it for every step)."""
    try:
        import cv2
    except ImportError:
        raise DataNotFoundError("diabetic_retinopathy: Graham's preprocessing (TFDS's btgraham-300, VTAB's) needs "
                                "OpenCV: pip install opencv-python-headless (or pip install -e '.[vtab]')") from None
    return cv2


def graham(encoded: bytes, radius: int = GRAHAM_RADIUS) -> Image.Image:
    """One photograph prepared as TFDS's btgraham config does, with the same OpenCV calls: scale so the
    eyeball's radius (half the count of pixels along the middle row brighter than a tenth of the row's mean
    brightness; half the height where that finds nothing) is `radius`; subtract the local average colour
    (4 x image - 4 x its Gaussian blur, sigma radius / 30, + 128, saturated); set everything outside 90% of the
    radius to 128 and crop to that circle's square; encode as a JPEG of quality 72. Returned decoded, RGB."""
    cv2 = opencv()
    image = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError("not a decodable image")
    row = image[image.shape[0] // 2].sum(axis=1)
    found = (row > row.mean() / 10.0).sum() / 2.0
    scale = radius / (found if found >= 1.0 else image.shape[0] / 2.0)
    image = cv2.resize(image, dsize=None, fx=scale, fy=scale)
    image = cv2.addWeighted(image, 4, cv2.GaussianBlur(image, (0, 0), radius / 30), -4, 128)
    mask = np.zeros(image.shape)
    centre, inner = (image.shape[1] // 2, image.shape[0] // 2), int(radius * GRAHAM_MASK_RATIO)
    cv2.circle(mask, center=centre, radius=inner, color=(1, 1, 1), thickness=-1)
    image = image * mask + (1 - mask) * 128
    image = image[max(centre[1] - inner, 0):min(centre[1] + inner, image.shape[0]),
                  max(centre[0] - inner, 0):min(centre[0] + inner, image.shape[1])]
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)  # what OpenCV's encoder falls back to for TFDS's floats
    _, jpeg = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), GRAHAM_JPEG_QUALITY])
    with Image.open(io.BytesIO(jpeg.tobytes())) as stored:
        return stored.convert("RGB")
