"""VTAB-1k's tasks beyond Kornblith et al.'s sets (Zhai et al. 2019), labelled and split as the reference
code defines them (google-research/task_adaptation, data/*.py): RESISC45 and PatchCamelyon (specialized);
KITTI's closest-vehicle distance, dSprites' x position and orientation, smallNORB's azimuth and elevation
(structured). VTAB reads every set through TFDS and slices its splits by TFDS's order
(`train[:800]`, ...); where a set has no official split, tlbench draws the same proportions stratified
with split_seed instead, and KITTI's split by drive is TFDS's own rule, rebuilt from the devkit's files.
Diabetic Retinopathy is Kaggle's images as TFDS's `btgraham-300` config prepares them (Graham's preprocessing,
OpenCV's operations as TFDS calls them), split as TFDS does; DMLab is read from the TFRecord files TFDS reads
(record framing and tf.train.Example's protobuf wire format parsed here, without TensorFlow)."""

import csv
import gzip
import io
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive, download_url

from tlbench.data.folders import FileListDataset
from tlbench.data.sources import SOURCES, drawn, hint, locate, official, part, read
from tlbench.data.splits import DataSplits, TensorImages, offline, stratified_indices, subset
from tlbench.errors import DataNotFoundError

RESISC45_FRACTIONS = (0.6, 0.2)  # data/resisc45.py: train, val of the one split; the rest is test
DSPRITES_FRACTIONS = (0.8, 0.1)  # data/dsprites.py
SMALLNORB_VAL_SHARE = 0.5        # data/smallnorb.py: val is half of the official test split, test the other half
DSPRITES_CLASSES = 16            # both dSprites tasks group their latent's values into 16 classes
DSPRITES_LATENTS = {"location": (4, 32), "orientation": (3, 40)}  # latents_classes column, its number of values
DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + DSPRITES_FILE
SMALLNORB_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
SMALLNORB_FILES = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training",
                   "test": "smallnorb-5x01235x9x18x6x2x96x96-testing"}
SMALLNORB_LABELS = {"azimuth": (2, 2, 18), "elevation": (1, 1, 9)}  # -info.mat column, divisor, classes (TFDS's)
NORB_MAGIC = {507333717: np.uint8, 507333716: np.dtype("<i4")}  # the NORB binary format's type codes
KITTI_VEHICLES = ("Car", "Van", "Truck")
KITTI_NO_VEHICLE = 1000.0  # the closest vehicle's depth (m) when there is none
KITTI_DISTANCE_THRESHOLDS = (-100.0, 8.0, 20.0, 999.0)  # data/kitti.py: the label is the last one below the depth
KITTI_DISTANCE_CLASSES = ["up to 8 m", "8-20 m", "over 20 m", "no vehicle"]
KITTI_SPLIT = (123, 10, 10)  # TFDS kitti 3.1.0: numpy seed, % of the drives to test, then % to validation
KITTI_DEVKIT_URL = "https://s3.eu-central-1.amazonaws.com/avg-kitti/devkit_object.zip"
DMLAB_URL = "https://storage.googleapis.com/dmlab-vtab/dmlab.tar.gz"  # TFDS dmlab 2.0.1's source
DMLAB_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # TFDS's: 65,550 / 22,628 / 22,735
DMLAB_CLASSES = [f"class {k}" for k in range(6)]  # {close, far, very far} x {positive, negative reward}; TFDS
#                                                   names no order, so the labels keep their numbers
RETINOPATHY_CLASSES = ["no DR", "mild", "moderate", "severe", "proliferative DR"]  # Kaggle's level 0-4
RETINOPATHY_SOLUTION = "retinopathy_solution.csv"  # the test images' labels, Usage Public (validation) / Private (test)
RETINOPATHY_SOLUTION_URL = "https://storage.googleapis.com/kaggle-forum-message-attachments/90528/2877/" + RETINOPATHY_SOLUTION
GRAHAM_RADIUS = 300        # TFDS btgraham-300 (VTAB's config): the eyeball's radius after scaling, in pixels
GRAHAM_MASK_RATIO = 0.9    # the image is masked to, and cropped at, this share of the radius
GRAHAM_JPEG_QUALITY = 72   # and stored as a JPEG of this quality, as TFDS stores it


def resisc45(data_dir, root=None, image_size=224, split_seed=0) -> DataSplits:
    """45 remote-sensing scene classes, 700 images of 256 px each (31,500), no official split: a stratified
    60/20/20 train/val/test draw with split_seed (VTAB's proportions: 18,900 / 6,300 / 6,300)."""
    base, _ = locate("resisc45", data_dir, root, download=False)
    found = read("resisc45", base, False, datasets.ImageFolder, base / SOURCES["resisc45"].folder)
    samples = [(Path(path), label) for path, label in found.samples]
    return drawn("resisc45", base, [label for _, label in samples], lambda indices: part(samples, indices),
                 found.classes, image_size, split_seed, RESISC45_FRACTIONS)


def patch_camelyon(data_dir, root=None, download=True, image_size=96) -> DataSplits:
    """96 px patches of lymph node scans, labelled by metastatic tissue in the centre: the official train,
    valid and test splits (262,144 / 32,768 / 32,768), as VTAB. Read lazily from the .h5 files (h5py)."""
    base, fetch = locate("patch_camelyon", data_dir, root, download)
    for split in ("train", "val", "test"):  # torchvision fetches (and checks) the files where allowed
        read("patch_camelyon", base, fetch, datasets.PCAM, base, split=split, download=fetch)
    folder = base / SOURCES["patch_camelyon"].folder
    try:
        train, val, test = (H5Images(folder / f"camelyonpatch_level_2_split_{split}_x.h5",
                                     folder / f"camelyonpatch_level_2_split_{split}_y.h5")
                            for split in ("train", "valid", "test"))
    except (OSError, KeyError, ValueError) as err:
        raise DataNotFoundError(hint("patch_camelyon", base, f"has an unreadable .h5 file ({err})")) from err
    return official("patch_camelyon", base, train, test, ["normal", "metastatic"], image_size,
                    "official train/valid/test split", val=val)


class H5Images(Dataset):
    """PatchCamelyon's images, read one at a time from an .h5 file (7 GB for train), its labels held."""

    def __init__(self, images: Path, labels: Path):
        import h5py

        with h5py.File(labels, "r") as handle:
            self.targets = handle["y"][:].reshape(-1).astype(np.int64).tolist()
        self.path, self._images = images, None
        stat = images.stat()
        self.source_fingerprint = f"{images}|{stat.st_size}|{stat.st_mtime_ns}|{len(self.targets)}"

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        if self._images is None:  # opened in the process that reads (a DataLoader worker has its own)
            import h5py

            self._images = h5py.File(self.path, "r")["x"]
        return Image.fromarray(self._images[index]), self.targets[index]

    def __getstate__(self):
        return {**self.__dict__, "_images": None}


def dsprites_location(data_dir, root=None, download=True, image_size=64, split_seed=0) -> DataSplits:
    """dSprites' 737,280 64 px shapes labelled by x position (32 values in 16 classes): VTAB's dsprites-loc."""
    return _dsprites("location", data_dir, root, download, image_size, split_seed)


def dsprites_orientation(data_dir, root=None, download=True, image_size=64, split_seed=0) -> DataSplits:
    """The same shapes labelled by orientation (40 values in 16 classes): VTAB's dsprites-ori."""
    return _dsprites("orientation", data_dir, root, download, image_size, split_seed)


def _dsprites(task, data_dir, root, download, image_size, split_seed) -> DataSplits:
    """One split only: drawn 80/10/10 train/val/test, stratified, with split_seed. Held in memory as gray
    images (2.9 GB, and as much again while the splits are drawn)."""
    base, fetch = locate("dsprites", data_dir, root, download)
    path = _fetched("dsprites", base, DSPRITES_FILE, DSPRITES_URL, fetch)
    try:
        with np.load(path) as found:
            latents, images = found["latents_classes"], found["imgs"]
    except (OSError, ValueError, KeyError) as err:
        raise DataNotFoundError(hint("dsprites", base, f"has an unreadable {path.name} ({err})")) from err
    column, values = DSPRITES_LATENTS[task]
    labels = torch.from_numpy(latents[:, column] * DSPRITES_CLASSES // values)
    whole = TensorImages(torch.from_numpy(images).unsqueeze(1).mul_(255), labels)  # 0/1 pixels as 0/255, as VTAB
    classes = [f"{task} {k}" for k in range(DSPRITES_CLASSES)]
    splits = drawn("dsprites", base, whole.targets, lambda indices: subset(whole, indices), classes, image_size,
                   split_seed, DSPRITES_FRACTIONS)
    return _named(splits, "dsprites", f"dsprites_{task}")


def smallnorb_azimuth(data_dir, root=None, download=True, image_size=96, split_seed=0) -> DataSplits:
    """smallNORB's 96 px toy photos labelled by camera azimuth (18 classes): VTAB's smallnorb-azi."""
    return _smallnorb("azimuth", data_dir, root, download, image_size, split_seed)


def smallnorb_elevation(data_dir, root=None, download=True, image_size=96, split_seed=0) -> DataSplits:
    """The same photos labelled by camera elevation (9 classes): VTAB's smallnorb-elev."""
    return _smallnorb("elevation", data_dir, root, download, image_size, split_seed)


def _smallnorb(task, data_dir, root, download, image_size, split_seed) -> DataSplits:
    """The official training split (24,300, the left camera's images as TFDS's `image`) trains; the official
    test split is halved into val and test, stratified, with split_seed (VTAB: its first and second half)."""
    base, fetch = locate("smallnorb", data_dir, root, download)
    column, divisor, count = SMALLNORB_LABELS[task]
    train, test = (_norb_split(base, SMALLNORB_FILES[split], column, divisor, fetch) for split in ("train", "test"))
    val = stratified_indices(test.targets, SMALLNORB_VAL_SHARE, split_seed)
    rest = sorted(set(range(len(test))) - set(val))
    splits = official("smallnorb", base, train, subset(test, rest), [f"{task} {k}" for k in range(count)], image_size,
                      f"official train; the official test halved into val/test (split_seed={split_seed})",
                      val=subset(test, val))
    splits.val_source = f"half of the official test split, stratified, split_seed={split_seed} (VTAB's)"
    return _named(splits, "smallnorb", f"smallnorb_{task}")


def _norb_split(base: Path, stem: str, column: int, divisor: int, fetch: bool) -> TensorImages:
    images = _norb_matrix(base, f"{stem}-dat.mat", fetch)[:, 0]  # (N, 2, 96, 96): the stereo pair's first
    labels = _norb_matrix(base, f"{stem}-info.mat", fetch)[:, column] // divisor
    return TensorImages(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)))


def _norb_matrix(base: Path, name: str, fetch: bool) -> np.ndarray:
    """A NORB binary matrix (cs.nyu.edu/~ylclab/data/norb-v1.0-small/): a type code, the number of dimensions,
    at least 3 dimension sizes, then the data, little-endian; read from `name` or `name`.gz."""
    folder = base / SOURCES["smallnorb"].folder
    path = folder / name if (folder / name).is_file() else _fetched("smallnorb", base, name + ".gz",
                                                                     SMALLNORB_URL + name + ".gz", fetch)
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
        header = np.frombuffer(raw, dtype="<i4", count=2)
        dims = np.frombuffer(raw, dtype="<i4", count=header[1], offset=8)
        data = np.frombuffer(raw, dtype=NORB_MAGIC[int(header[0])], offset=8 + 4 * max(3, int(header[1])))
        return data.reshape(tuple(dims))
    except (OSError, ValueError, KeyError, IndexError, EOFError) as err:
        raise DataNotFoundError(hint("smallnorb", base, f"has an unreadable {path.name} ({type(err).__name__}: "
                                                        f"{err})")) from err


def kitti_distance(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """KITTI's 7,481 labelled street scenes (the object benchmark's training images), labelled by the depth
    of the closest car, van or truck in 4 classes (VTAB's kitti-dist, task closest_vehicle_distance), split
    by drive as TFDS's kitti 3.1.0 does: with numpy seed 123, 10% of the drives to test, then 10% of the
    rest to validation (TFDS: 6,347 / 423 / 711)."""
    base, fetch = locate("kitti", data_dir, root, download)
    read("kitti", base, fetch, datasets.Kitti, base, train=True, download=fetch)  # fetched and checked
    raw = base / SOURCES["kitti"].folder / "raw"
    mapping = raw / "mapping"
    if not (mapping / "train_rand.txt").is_file() and fetch:
        download_and_extract_archive(KITTI_DEVKIT_URL, str(raw))
    try:
        drives = _kitti_drives(mapping)
        samples = [(raw / "training" / "image_2" / f"{image:06d}.png",
                    _kitti_distance_label(raw / "training" / "label_2" / f"{image:06d}.txt"))
                   for image in range(len(drives))]
    except (OSError, ValueError, IndexError) as err:
        raise DataNotFoundError(hint("kitti", base, f"cannot be read ({type(err).__name__}: {err})")) from err
    train, val, test = _kitti_split(drives)
    splits = official("kitti", base, part(samples, train), part(samples, test), KITTI_DISTANCE_CLASSES, image_size,
                      "TFDS kitti 3.1.0's split by drive (numpy seed 123: 10% of the drives test, 10% validation)",
                      val=part(samples, val))
    splits.val_source = "TFDS kitti's validation drives"
    return _named(splits, "kitti", "kitti_distance")


def _kitti_drives(mapping: Path) -> list[str]:
    """The drive of each training image: train_rand.txt's n-th number is the line of train_mapping.txt
    (1-based) that names image n's drive (`2011_09_26 2011_09_26_drive_0005_sync 0000000109`)."""
    lines = (mapping / "train_mapping.txt").read_text().splitlines()
    order = [int(n) - 1 for n in (mapping / "train_rand.txt").read_text().split(",")]
    return [lines[n].split(" ")[1] for n in order]


def _kitti_split(drives: list[str]) -> tuple[list[int], list[int], list[int]]:
    """TFDS's rule: test drives drawn first from the sorted drives, then validation drives from the rest."""
    seed, test_percent, val_percent = KITTI_SPLIT
    names = sorted(set(drives))
    state = np.random.RandomState(seed)  # the legacy generator np.random.seed(123) sets, as TFDS used it
    test = set(state.choice(names, max(1, test_percent * len(names) // 100), replace=False))
    val = set(state.choice(sorted(set(names) - test), max(1, val_percent * len(names) // 100), replace=False))
    split = [2 if drive in test else 1 if drive in val else 0 for drive in drives]
    return tuple([image for image, s in enumerate(split) if s == which] for which in range(3))


def _kitti_distance_label(path: Path) -> int:
    """The last of KITTI_DISTANCE_THRESHOLDS below the closest vehicle's depth (z, field 14 of a label line)."""
    depths = [float(fields[13]) for fields in (line.split() for line in path.read_text().splitlines())
              if fields and fields[0] in KITTI_VEHICLES]
    closest = min(depths, default=KITTI_NO_VEHICLE)
    return max(i for i, threshold in enumerate(KITTI_DISTANCE_THRESHOLDS) if threshold < closest)


def dmlab(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """Frames of DeepMind Lab (360 x 480), labelled by the distance to a reward object and its sign (6 classes;
    VTAB's dmlab, structured), TFDS's official train / validation / test splits (65,550 / 22,628 / 22,735), read
    from the TFRecord files of TFDS's source archive (downloaded into data_dir where missing and allowed)."""
    base, fetch = locate("dmlab", data_dir, root, download)
    folder = base / SOURCES["dmlab"].folder
    if fetch and not any(folder.rglob("dmlab-train.tfrecord*")):
        download_and_extract_archive(DMLAB_URL, str(folder))
    try:
        parts = {split: RecordImages([record for path in sorted(folder.rglob(f"dmlab-{name}.tfrecord*"))
                                      for record in tfrecords(path)])
                 for split, name in DMLAB_SPLITS.items()}
        if not all(len(found) for found in parts.values()):
            raise ValueError("no records for " + ", ".join(s for s, found in parts.items() if not len(found)))
    except (OSError, ValueError) as err:
        raise DataNotFoundError(hint("dmlab", base, f"cannot be read ({type(err).__name__}: {err})")) from err
    splits = official("dmlab", base, parts["train"], parts["test"], DMLAB_CLASSES, image_size,
                      "TFDS dmlab's official train / validation / test", val=parts["val"])
    splits.val_source = "official validation split"
    return splits


def tfrecords(path: Path) -> list[tuple[Path, int, int, int]]:
    """(file, offset, length, label) of every record in a TFRecord file: each record is a little-endian uint64
    length, a 4-byte CRC of it, the data (a serialized tf.train.Example) and a 4-byte CRC of the data. The
    image bytes stay on disk; a truncated file fails."""
    found, data = [], path.read_bytes()
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"{path.name} ends inside a record header at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        if start + length + 4 > len(data):
            raise ValueError(f"{path.name} ends inside a record at byte {offset} ({length} bytes announced)")
        features = example_features(data[start:start + length])
        found.append((path, start, length, int(features["label"][0])))
        offset = start + length + 4
    return found


def _varint(buffer: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(buffer: bytes):
    """(field number, wire type, value) of a protobuf message: varints as ints, length-delimited as bytes."""
    at = 0
    while at < len(buffer):
        key, at = _varint(buffer, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buffer, at)
        elif wire == 2:
            size, at = _varint(buffer, at)
            value, at = buffer[at:at + size], at + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, at = buffer[at:at + size], at + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not one tf.train.Example uses")
        yield number, wire, value


def example_features(serialized: bytes) -> dict[str, list]:
    """A tf.train.Example's features: {name: [bytes...] or [int...]} (Example.features = 1; Features.feature = 1, a
    map entry of key = 1 and Feature = 2; Feature's bytes_list = 1 or int64_list = 3, each a repeated value = 1,
    int64s packed or not). float_list (2) is skipped: the sets read here have none that matters."""
    features = {}
    for number, _, message in _fields(serialized):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(message):
            if entry_number != 1:
                continue
            name, values = None, []
            for piece_number, _, piece in _fields(entry):
                if piece_number == 1:
                    name = piece.decode("utf-8")
                elif piece_number == 2:
                    values = _feature_values(piece)
            if name is not None:
                features[name] = values
    return features


def _feature_values(feature: bytes) -> list:
    values = []
    for kind, _, listed in _fields(feature):
        for number, wire, value in _fields(listed):
            if number != 1:
                continue
            if kind == 1:
                values.append(value)
            elif kind == 3 and wire == 0:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            elif kind == 3 and wire == 2:  # packed
                at = 0
                while at < len(value):
                    item, at = _varint(value, at)
                    values.append(item - (1 << 64) if item >= 1 << 63 else item)
    return values


class RecordImages(Dataset):
    """Images kept inside TFRecord files: (file, offset, length, label) per sample, each decoded from its
    Example's `image` bytes as it is read."""

    def __init__(self, records: list[tuple[Path, int, int, int]]):
        self.records = records
        self.targets = [label for *_, label in records]

    @property
    def source_fingerprint(self) -> str:
        """The record files (path, size, time) and where each record sits in them, for the decoded cache."""
        return _files_digest(sorted({path for path, *_ in self.records}),
                             ",".join(f"{offset}:{length}" for _, offset, length, _ in self.records), self.targets)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        path, offset, length, label = self.records[index]
        with open(path, "rb") as handle:
            handle.seek(offset)
            features = example_features(handle.read(length))
        with Image.open(io.BytesIO(features["image"][0])) as image:
            return image.convert("RGB"), label


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
        _fetched("diabetic_retinopathy", base, RETINOPATHY_SOLUTION, RETINOPATHY_SOLUTION_URL, True)
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
        return _files_digest([path for path, _ in self.samples], f"btgraham-{GRAHAM_RADIUS}-q{GRAHAM_JPEG_QUALITY}",
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


def _files_digest(paths, extra: str, targets) -> str:
    import hashlib

    digest = hashlib.sha256(extra.encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(str(list(targets)).encode())
    return digest.hexdigest()


def _fetched(name: str, base: Path, file: str, url: str, fetch: bool) -> Path:
    """`file` in the set's folder, downloaded from `url` first where it is missing and fetching is allowed."""
    folder = base / SOURCES[name].folder
    if not (folder / file).is_file():
        if not fetch:
            raise DataNotFoundError(hint(name, base, f"has no {file}"))
        try:
            download_url(url, str(folder), file)
        except (OSError, RuntimeError) as err:
            raise DataNotFoundError(hint(name, base, f"has no {file}, and fetching {url} failed ({err})")) from err
    return folder / file


def _named(splits: DataSplits, family: str, task: str) -> DataSplits:
    splits.source = splits.source.replace(f" {family} in ", f" {task} in ", 1)
    return splits
