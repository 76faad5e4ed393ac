"""Data sets by name (the `dataset` group): each builder returns the raw train and test splits;
transforms are added afterwards, so one builder serves every model and augmentation."""

import hashlib
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from tlbench import folders, settings
from tlbench.errors import ConfigError, DataNotFoundError

# fast.ai's archives with the check fast.ai publishes for each (fastai/data/checks.txt): the size
# in bytes and the MD5 of the first MiB. CIFAR downloads are checked by torchvision (full MD5).
FASTAI_ARCHIVES = {
    "imagewoof": ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz", 92612825,
                  "3559b194123981a540b87132dbda412f"),
    "imagenette": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", 99003388,
                   "c475f8f7617a200ba35b9facc48443c3"),
}


@dataclass
class DataSplits:
    """Three splits: `train` to fit, `val` to select on (best epoch, plateau, search objective), and
    `test` to report. Builders return train and test (the data set's official evaluation split) and
    `val` only where the data set has an official validation split; build_dataset carves one
    from train otherwise."""
    train: Dataset
    test: Dataset
    classes: list[str]
    image_size: int
    source: str  # where the images came from, for the JSON
    val: Dataset | None = None
    val_source: str = "official validation split"
    train_subset: str = "all"  # which part of train trains: all, a fraction or K per class (nested draws)
    on_bad_image: str = "fail"  # what the loaders do with undecodable files (image_check.py)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # per split, filled when the loaders read

    @property
    def val_is_test(self) -> bool:
        return self.val is self.test

    def named(self) -> dict[str, Dataset]:
        """The distinct splits by name; when val is the test split it is listed once, as val."""
        splits = {"train": self.train, "val": self.val}
        return splits if self.val_is_test else {**splits, "test": self.test}


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, 3, H, W) tensor, with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.targets = labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


class Transformed(Dataset):
    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label = self.dataset[index]
        return self.transform(image), label


def offline() -> bool:
    """TLBENCH_OFFLINE=1 skips every download attempt (tests, air-gapped machines)."""
    return os.environ.get("TLBENCH_OFFLINE") == "1"


def build_dataset(name: str, val_split: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
                  train_per_class: int | None = None, subset_seed: int = 0, test_fraction: float = 1.0,
                  on_bad_image: str = "fail", **kwargs) -> DataSplits:
    """`val_split`: the stratified fraction of the training split held out for validation (drawn
    with `split_seed`, not the run's seed, so every run of a sweep validates on the same images);
    0 = validate on the test split (the write-ups' protocol: every "best" number is then selected
    on the reported split). What is left for training can be cut to `train_fraction` of every
    class or to `train_per_class` images of every class (k-shot), drawn with `subset_seed`: the
    validation split stays the same for every size, and the draws are nested (the 10-shot subset
    holds the 5-shot one), so a data-efficiency curve changes one thing at a time.
    `test_fraction`: a stratified part of the test split (fixed seed)."""
    if name not in BUILDERS:
        raise ConfigError(f"dataset.name={name!r} is not known; use one of {', '.join(BUILDERS)}")
    builder = BUILDERS[name]
    settings.checked(settings.DatasetSplits, dict(val_split=val_split, split_seed=split_seed, on_bad_image=on_bad_image,
                                                  train_fraction=train_fraction, train_per_class=train_per_class,
                                                  subset_seed=subset_seed, test_fraction=test_fraction,
                                                  image_size=kwargs.get("image_size", 1)), "dataset.")
    accepted = inspect.signature(builder).parameters
    if "split_seed" in accepted:
        kwargs["split_seed"] = split_seed
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    splits = builder(**kwargs)
    splits.on_bad_image = on_bad_image
    _carve_validation(splits, val_split, split_seed)
    _cut_training(splits, train_fraction, train_per_class, subset_seed)
    if test_fraction < 1:
        kept = subset(splits.test, stratified_indices(targets_of(splits.test), test_fraction))
        splits.val = kept if splits.val_is_test else splits.val
        splits.test = kept
    return splits


def _carve_validation(splits: DataSplits, val_split: float, split_seed: int) -> None:
    if val_split == 0:
        splits.val, splits.val_source = splits.test, "the test split (dataset.val_split=0)"
        return
    if splits.val is not None:
        return
    from sklearn.model_selection import train_test_split

    targets = targets_of(splits.train)
    classes = len(set(targets))
    held_out = max(classes, math.ceil(val_split * len(targets)))  # at least one image of every class
    if len(targets) - held_out < classes:
        raise ConfigError(f"dataset.val_split={val_split} cannot hold out a stratified validation split from "
                          f"{len(targets)} training images in {classes} classes (each split needs one image per "
                          f"class); add images, or set dataset.val_split=0 to validate on the test split")
    train_idx, val_idx = train_test_split(np.arange(len(targets)), test_size=held_out, random_state=split_seed,
                                          stratify=targets)
    splits.val = subset(splits.train, sorted(val_idx.tolist()))
    splits.train = subset(splits.train, sorted(train_idx.tolist()))
    splits.val_source = f"{val_split:g} of train, stratified, split_seed={split_seed}"


def _cut_training(splits: DataSplits, fraction: float, per_class: int | None, seed: int) -> None:
    if per_class is None and fraction == 1:
        return
    targets = targets_of(splits.train)
    if per_class is not None:
        counts = np.bincount(targets, minlength=len(splits.classes))
        present = [label for label in range(len(counts)) if counts[label]]
        fewest = min(present, key=lambda label: counts[label])
        if counts[fewest] < per_class:
            raise ConfigError(f"dataset.train_per_class={per_class} but class {splits.classes[fewest]!r} has only "
                              f"{counts[fewest]} training images left after the val split; use at most "
                              f"{counts[fewest]}, or dataset.train_fraction")
    splits.train = subset(splits.train, stratified_indices(targets, fraction, seed, per_class))
    how = f"{per_class} per class" if per_class is not None else f"{fraction:g} of every class"
    splits.train_subset = f"{how}, subset_seed={seed}"


def subset(dataset: Dataset, indices: list[int]) -> Dataset:
    """In-memory images stay in-memory tensors (the fast path resizes them without decoding)."""
    if isinstance(dataset, TensorImages):
        index = torch.as_tensor(indices, dtype=torch.long)
        return TensorImages(dataset.images[index], dataset.labels[index])
    return Subset(dataset, indices)


def targets_of(dataset: Dataset) -> list[int]:
    if isinstance(dataset, Subset):
        parent = targets_of(dataset.dataset)
        return [parent[i] for i in dataset.indices]
    return list(dataset.targets)


def stratified_indices(targets, fraction: float, seed: int = 0, per_class: int | None = None) -> list[int]:
    """The same `fraction` of every class (or `per_class` images of each), chosen with a fixed
    seed (not the run's seed), so that every run of a sweep sees the same images. Each class's
    members are shuffled by one draw that does not depend on how many are kept, so a larger
    subset always contains a smaller one drawn with the same seed."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        keep = per_class if per_class is not None else max(1, round(len(members) * fraction))
        chosen.extend(rng.permutation(members)[:keep].tolist())
    return sorted(chosen)


def synthetic(num_classes=4, train_size=128, test_size=64, image_size=32, noise=0.35, data_seed=0) -> DataSplits:
    """Each class is a fixed random low-frequency color pattern; samples add pixel noise and a
    random brightness shift. Learnable in a few epochs, yet not trivially separable."""
    generator = torch.Generator().manual_seed(data_seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)

    def sample(count):
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        shift = (torch.rand(count, 1, 1, 1, generator=generator) - 0.5) * 0.3
        pixels = prototypes[labels] + shift + noise * torch.randn(count, 3, image_size, image_size, generator=generator)
        return TensorImages((pixels.clamp(0, 1) * 255).round().to(torch.uint8), labels)

    return DataSplits(sample(train_size), sample(test_size), [f"class_{i}" for i in range(num_classes)],
                      image_size, f"synthetic(seed={data_seed})")


def digits(image_size=64, test_size=0.2, split_seed=0) -> DataSplits:
    """scikit-learn's 1,797 real 8x8 digits (values 0-16), as gray RGB, upsampled once."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy(data.images / 16.0).float().unsqueeze(1).expand(-1, 3, -1, -1)
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False, antialias=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(data.target).long()
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size,
                                           stratify=data.target, random_state=split_seed)
    return DataSplits(TensorImages(images[train_idx], labels[train_idx]),
                      TensorImages(images[test_idx], labels[test_idx]),
                      [str(d) for d in range(10)], image_size, "scikit-learn load_digits")


def imagefolder(root, image_size=224) -> DataSplits:
    train, test, test_name = folders.image_folder_splits(root)
    return DataSplits(train, test, train.classes, image_size, f"ImageFolder {root} (train/, {test_name}/)")


def filelist(train_list, test_list, val_list=None, num_classes=None, image_size=224) -> DataSplits:
    """`val_list`: an official validation list; None = carve one from train (dataset.val_split).
    Relative image paths are found against each list's folder, else the working directory."""
    lists = {"train": train_list, "test": test_list, **({"val": val_list} if val_list else {})}
    samples, paths = folders.read_file_lists(lists)
    num_classes = num_classes or 1 + max(label for found in samples.values() for _, label in found)
    for split, found in samples.items():
        folders.check_labels(found, num_classes, lists[split])
    datasets = {split: folders.FileListDataset(found) for split, found in samples.items()}
    return DataSplits(datasets["train"], datasets["test"], [str(i) for i in range(num_classes)], image_size,
                      f"file lists {', '.join(map(str, lists.values()))} ({paths})", val=datasets.get("val"))


def _cifar(name, data_dir, root, download, image_size) -> DataSplits:
    from torchvision import datasets

    if root:
        return imagefolder(root, image_size)
    cls, folder = (datasets.CIFAR10, "cifar-10-batches-py") if name == "cifar10" else \
        (datasets.CIFAR100, "cifar-100-python")
    data_dir = Path(data_dir).expanduser()
    if not (data_dir / folder).is_dir() and (not download or offline()):
        raise DataNotFoundError(_cifar_hint(name, data_dir / folder, "offline mode is set" if download else "download=false"))
    try:
        train = cls(str(data_dir), train=True, download=download)
        test = cls(str(data_dir), train=False, download=False)
    except (OSError, RuntimeError) as err:
        raise DataNotFoundError(_cifar_hint(name, data_dir / folder, f"download failed: {err}")) from err
    return DataSplits(train, test, list(train.classes), image_size, f"torchvision {name} in {data_dir}")


def _cifar_hint(name, expected: Path, why: str) -> str:
    return (f"{name} is not in {expected} and could not be fetched ({why}). Supply it: put torchvision's "
            f"copy there (data_dir=...), or point dataset.root at a local ImageFolder copy with train/ and "
            f"test/ class folders, e.g. an extracted cifar10-jpg archive.")


def cifar10(data_dir, root=None, download=True, image_size=32) -> DataSplits:
    return _cifar("cifar10", data_dir, root, download, image_size)


def cifar100(data_dir, root=None, download=True, image_size=32) -> DataSplits:
    return _cifar("cifar100", data_dir, root, download, image_size)


def _fastai(name, data_dir, root, download, image_size) -> DataSplits:
    url = FASTAI_ARCHIVES[name][0]
    extracted = Path(root).expanduser() if root else Path(data_dir).expanduser() / Path(url).name.removesuffix(".tgz")
    if not (extracted / "train").is_dir() and not root:
        if not download or offline():
            raise DataNotFoundError(_fastai_hint(name, extracted, url, "offline mode is set" if download else "download=false"))
        _fetch_fastai(name, extracted.parent)
    return imagefolder(extracted, image_size)


def _fetch_fastai(name, folder: Path) -> None:
    """Downloads (unless already there), checks against fast.ai's published size and hash, then
    extracts. A file that fails the check is renamed `.rejected`, kept, and never extracted."""
    from torchvision.datasets.utils import download_url, extract_archive

    url, size, md5_first_mib = FASTAI_ARCHIVES[name]
    archive = folder / Path(url).name
    try:
        if not archive.is_file():
            download_url(url, str(folder))
    except (OSError, RuntimeError) as err:
        raise DataNotFoundError(_fastai_hint(name, folder / archive.stem, url, f"download failed: {err}")) from err
    found = (archive.stat().st_size, _md5_first_mib(archive))
    if found != (size, md5_first_mib):
        rejected = archive.with_name(archive.name + ".rejected")
        os.replace(archive, rejected)
        raise DataNotFoundError(f"{archive} is not fast.ai's {name} archive: size {found[0]} and MD5 of the first MiB "
                                f"{found[1]}, expected {size} and {md5_first_mib} (fast.ai's published check); it is "
                                f"kept as {rejected}. Delete it and run again to download afresh, or set dataset.root "
                                f"to an extracted copy")
    extract_archive(str(archive), str(folder))


def _md5_first_mib(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read(2**20)).hexdigest()


def _fastai_hint(name, expected, url, why) -> str:
    return (f"{name} is not in {expected} and could not be fetched from {url} ({why}). Supply it: extract "
            f"that archive into data_dir, or set dataset.root to a folder holding its train/ and val/.")


def imagewoof(data_dir, root=None, download=True, image_size=160) -> DataSplits:
    return _fastai("imagewoof", data_dir, root, download, image_size)


def imagenette(data_dir, root=None, download=True, image_size=160) -> DataSplits:
    return _fastai("imagenette", data_dir, root, download, image_size)


BUILDERS = {
    "cifar10": cifar10, "cifar100": cifar100, "imagefolder": imagefolder, "filelist": filelist,
    "imagewoof": imagewoof, "imagenette": imagenette, "digits": digits, "synthetic": synthetic,
}
