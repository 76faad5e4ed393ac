"""VTAB-1k's tasks beyond Kornblith et al.'s sets (Zhai et al. 2019), labelled and split as the reference
code defines them (google-research/task_adaptation, data/*.py): RESISC45 and PatchCamelyon (specialized);
KITTI's closest-vehicle distance, dSprites' x position and orientation, smallNORB's azimuth and elevation
(structured). VTAB reads every set through TFDS and slices its splits by TFDS's order
(`train[:800]`, ...); where a set has no official split, tlbench draws the same proportions stratified
with split_seed instead, and KITTI's split by drive is TFDS's own rule, rebuilt from the devkit's files.
DMLab is read from the TFRecord files TFDS reads (tfrecord.py, without TensorFlow); Diabetic Retinopathy, with
Graham's preprocessing, is retinopathy.py."""

import gzip
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from tlbench.data.sources import SOURCES, drawn, fetched, hint, locate, official, part, read
from tlbench.data.splits import DataSplits, TensorImages, stratified_indices, subset
from tlbench.data.tfrecord import RecordImages, tfrecords
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
    path = fetched("dsprites", base, DSPRITES_FILE, DSPRITES_URL, fetch)
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
    path = folder / name if (folder / name).is_file() else fetched("smallnorb", base, name + ".gz",
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


def _named(splits: DataSplits, family: str, task: str) -> DataSplits:
    splits.source = splits.source.replace(f" {family} in ", f" {task} in ", 1)
    return splits
