"""The three splits every data set is turned into, and the stratified cuts made of them: the
validation split carved from train, the k-shot / fraction training subsets, the test fraction."""

import heapq
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from tlbench import specs
from tlbench.errors import ConfigError

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
    test_source: str = "official test split"  # or the folder / the held-out part it came from (data_info)
    train_subset: str = "all"  # which part of train trains: all, a fraction or K per class (nested draws)
    metric: str = "top1"  # what the literature reports: top1 or mean_per_class (results.METRIC_FIELDS, the one list)
    on_bad_image: str = "fail"  # what the loaders do with undecodable files (image_check.py)
    preprocess: specs.Preprocess = specs.SQUASH  # how images become image_size squares (dataset.preprocess)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # per split, filled when the loaders read

    @property
    def val_is_test(self) -> bool:
        return self.val is self.test

    def named(self) -> dict[str, Dataset]:
        """The distinct splits by name; when val is the test split it is listed once, as val."""
        splits = {"train": self.train, "val": self.val}
        return splits if self.val_is_test else {**splits, "test": self.test}


class TensorImages(Dataset):
    """Images held in memory as a uint8 (N, 3, H, W) tensor, or (N, 1, H, W) for gray images (a third of the
    memory: dSprites, smallNORB), which are read as RGB; with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.targets = labels.tolist()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.rgb(self.images[index]), int(self.labels[index])

    @staticmethod
    def rgb(images: torch.Tensor) -> torch.Tensor:
        """Gray images as three equal channels (a view, no copy); RGB ones as they are."""
        return images.expand(*images.shape[:-3], 3, *images.shape[-2:]) if images.shape[-3] == 1 else images


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


def carve_validation(splits: DataSplits, val_split: float, split_seed: int) -> None:
    if val_split == 0:
        splits.val, splits.val_source = splits.test, "the test split (dataset.val_split=0)"
        return
    if splits.val is not None:
        return
    splits.train, splits.val = hold_out(splits.train, val_split, split_seed, "dataset.val_split",
                                        "or set dataset.val_split=0 to validate on the test split")
    size = f"{int(val_split)} images" if val_split >= 1 else f"{val_split:g}"
    splits.val_source = f"{size} of train, stratified, split_seed={split_seed}"


def hold_out(dataset: Dataset, share: float, seed: int, key: str, fix: str) -> tuple[Dataset, Dataset]:
    """(the rest, the held-out part) of `dataset`: a stratified fraction `share` of it, or (an integer
    >= 1, as scikit-learn's test_size) that many images, at least one image of every class either way,
    drawn with `seed`. `key` and `fix` name the setting and the other way out in the error."""
    from sklearn.model_selection import train_test_split

    targets = targets_of(dataset)
    classes = len(set(targets))
    held_out = max(classes, int(share) if share >= 1 else math.ceil(share * len(targets)))
    if len(targets) - held_out < classes:
        raise ConfigError(f"{key}={share} cannot hold out a stratified split from {len(targets)} images in "
                          f"{classes} classes (each split needs one image per class); add images, {fix}")
    rest, held = train_test_split(np.arange(len(targets)), test_size=held_out, random_state=seed, stratify=targets)
    return subset(dataset, sorted(rest.tolist())), subset(dataset, sorted(held.tolist()))


def cut_training(splits: DataSplits, fraction: float, per_class: int | None, seed: int,
                 total: int | None = None) -> None:
    """Keeps `per_class` images of every class, or `total` images shared by the classes in
    proportion to their sizes (VTAB-1k's 1,000), or `fraction` of every class."""
    if per_class is None and total is None and fraction == 1:
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
    if total is not None and total > len(targets):
        raise ConfigError(f"dataset.train_images={total} but only {len(targets)} training images are left after the "
                          f"val split; use at most {len(targets)}, or null for all")
    splits.train = subset(splits.train, stratified_indices(targets, fraction, seed, per_class, total))
    how = (f"{per_class} per class" if per_class is not None else f"{total} images, classes in proportion"
           if total is not None else f"{fraction:g} of every class")
    splits.train_subset = f"{how}, subset_seed={seed}"


def train_on_train_val(splits: DataSplits) -> None:
    """The refit of a select-then-refit protocol (Kornblith et al. 2019, VTAB-1k): train on train + val, once
    the setting is chosen; the test split takes val's place and chooses nothing (`select_epoch=final`)."""
    if splits.val_is_test or splits.val is None:
        raise ConfigError("dataset.train_on=train_val adds the val split to train, but there is none "
                          "(dataset.val_split=0: val is the test split); set dataset.val_split above 0")
    splits.train = join(splits.train, splits.val)
    splits.train_subset = f"{splits.train_subset} + the val split ({splits.val_source})"
    splits.val, splits.val_source = splits.test, "the test split (dataset.train_on=train_val: val was trained on)"


def join(first: Dataset, second: Dataset) -> Dataset:
    """Both splits as one: parts of one source stay a part of it (so the decode cache knows it), in-memory
    tensors stay tensors, anything else is concatenated."""
    if isinstance(first, TensorImages) and isinstance(second, TensorImages):
        return TensorImages(torch.cat([first.images, second.images]), torch.cat([first.labels, second.labels]))
    if isinstance(first, Subset) and isinstance(second, Subset) and first.dataset is second.dataset:
        return Subset(first.dataset, sorted([*first.indices, *second.indices]))
    return ConcatDataset([first, second])


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
    if isinstance(dataset, ConcatDataset):
        return [target for part in dataset.datasets for target in targets_of(part)]
    return list(dataset.targets)


def stratified_indices(targets, fraction: float, seed: int = 0, per_class: int | None = None,
                       total: int | None = None) -> list[int]:
    """The same `fraction` of every class (or `per_class` images of each, or `total` images shared
    in proportion to the class sizes), chosen with a fixed seed (not the run's seed), so that every
    run of a sweep sees the same images. Each class's members are shuffled by one draw that does
    not depend on how many are kept, so a larger subset always contains a smaller one drawn with
    the same seed."""
    targets = np.asarray(targets)
    labels = np.unique(targets)
    quota = _proportional_quota(np.array([np.sum(targets == label) for label in labels]), total) if total else None
    rng = np.random.default_rng(seed)
    chosen = []
    for position, label in enumerate(labels):
        members = np.flatnonzero(targets == label)
        keep = (per_class if per_class is not None else quota[position] if quota is not None
                else max(1, round(len(members) * fraction)))
        chosen.extend(rng.permutation(members)[:keep].tolist())
    return sorted(chosen)


def _proportional_quota(counts: np.ndarray, total: int) -> list[int]:
    """`total` shared by the classes in proportion to `counts`, one image at a time to the class
    with the highest count / (2 * given + 1) (Sainte-Lague / Webster's divisor method, never more
    than a class has). Handing out one at a time makes the quotas grow with `total` (no class ever
    loses an image when the total rises), so the subsets stay nested; they sum to `total`."""
    quota = [0] * len(counts)
    queue = [(-float(count), label) for label, count in enumerate(counts)]
    heapq.heapify(queue)
    for _ in range(total):
        _, label = heapq.heappop(queue)
        quota[label] += 1
        if quota[label] < counts[label]:
            heapq.heappush(queue, (-counts[label] / (2 * quota[label] + 1), label))
    return quota
