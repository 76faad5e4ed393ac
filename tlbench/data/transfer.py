"""The transfer data sets of Kornblith et al. 2019 ("Do Better ImageNet Models Transfer Better?",
CVPR; Appendix A.1 for the splits, Table 1 for the metrics), and EuroSAT, SVHN and CLEVR (VTAB), each read through
torchvision's own class: it downloads (checking its MD5s) and parses the official split files. The
images are then read by path (folders.FileListDataset), so both data paths see plain (path, label)
samples: the tensor path's cache key and dataset.on_bad_image work as for an ImageFolder. SVHN's images
come as arrays in .mat files and are held in memory (TensorImages), as digits' are.

A set lives in `data_dir` under torchvision's folder for it (food-101/, ...) and is downloaded there
when missing, online and `download` is true. `root` is a local copy, never downloaded into: that
folder itself (named as torchvision names it) or the folder holding it; point it at the set's own
folder so that the run's identity fingerprints that set's files only."""

from pathlib import Path

import numpy as np
from torchvision import datasets
from torchvision.datasets.utils import download_url

from tlbench.data.folders import FileListDataset
from tlbench.data.sources import (SOURCES, SUN397_PARTITIONS, drawn, hint, listed, locate, official, part,
                                  read)
from tlbench.data.splits import DataSplits, TensorImages, offline, stratified_indices
from tlbench.errors import ConfigError, DataNotFoundError

CALTECH_TRAIN_PER_CLASS = 30  # Kornblith et al. 2019, A.1: 30 random training images per class, the rest test
EUROSAT_FRACTIONS = (0.6, 0.2)  # train, val of every class; the rest is test (VTAB's 60/20/20)
PARTITIONS = range(1, 11)  # DTD's and SUN397's 10 official train/test partitions
TFDS_PARTITION = "tfds"  # sun397's dataset.partition for TFDS's own split (VTAB's)
SUN397_TFDS_LISTS = ("https://raw.githubusercontent.com/tensorflow/datasets/master/tensorflow_datasets/"
                     "image_classification/")  # sun397_tfds_{tr,va,te}.txt, which TFDS's sun397 builder reads
# VTAB's CLEVR tasks (google-research/task_adaptation data/clevr.py): the number of objects less 3 (3-10: 8
# classes; dataset=clevr), or the depth of the closest object binned by these thresholds (6; clevr_distance)
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)


def food101(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """101 dishes, 750 training and 250 test images each (75,750 / 25,250)."""
    base, fetch = locate("food101", data_dir, root, download)
    train, test = (read("food101", base, fetch, datasets.Food101, base, split=s, download=fetch)
                   for s in ("train", "test"))
    return official("food101", base, listed(train._image_files, train._labels),
                     listed(test._image_files, test._labels), train.classes, image_size, "official train/test split")


def fgvc_aircraft(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """100 aircraft variants, official train / val / test (3,334 / 3,333 / 3,333)."""
    base, fetch = locate("fgvc_aircraft", data_dir, root, download)
    train, val, test = (read("fgvc_aircraft", base, fetch, datasets.FGVCAircraft, base, split=s,
                              annotation_level="variant", download=fetch) for s in ("train", "val", "test"))
    return official("fgvc_aircraft", base, listed(train._image_files, train._labels),
                     listed(test._image_files, test._labels), train.classes, image_size,
                     "official train/val/test split, variants", val=listed(val._image_files, val._labels))


def stanford_cars(data_dir, root=None, image_size=224) -> DataSplits:
    """196 car models, 8,144 training and 8,041 test images. torchvision cannot download it (the
    Stanford URLs are dead), so there is no `download` key: the copy is supplied by hand (SOURCES)."""
    base, _ = locate("stanford_cars", data_dir, root, download=False)
    train, test = (read("stanford_cars", base, False, datasets.StanfordCars, base, split=s) for s in ("train", "test"))
    return official("stanford_cars", base, listed(*zip(*train._samples)), listed(*zip(*test._samples)),
                     train.classes, image_size, "official train/test split")


def dtd(data_dir, root=None, download=True, partition=1, image_size=224) -> DataSplits:
    """47 textures, 40 images each in train, val and test (1,880 each) of one of the 10 official
    partitions; Kornblith et al. 2019 report partition 1."""
    _check_partition("dtd", partition)
    base, fetch = locate("dtd", data_dir, root, download)
    train, val, test = (read("dtd", base, fetch, datasets.DTD, base, split=s, partition=partition, download=fetch)
                        for s in ("train", "val", "test"))
    _same_classes("dtd", base, train, val, test)
    return official("dtd", base, listed(train._image_files, train._labels), listed(test._image_files, test._labels),
                     train.classes, image_size, f"official train/val/test split, partition {partition}",
                     val=listed(val._image_files, val._labels))


def oxford_pets(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """37 cat and dog breeds: the official trainval (3,680) trains, test (3,669)."""
    base, fetch = locate("oxford_pets", data_dir, root, download)
    train, test = (read("oxford_pets", base, fetch, datasets.OxfordIIITPet, base, split=s, download=fetch)
                   for s in ("trainval", "test"))
    _same_classes("oxford_pets", base, train, test)
    return official("oxford_pets", base, listed(train._images, train._labels), listed(test._images, test._labels),
                     train.classes, image_size, "official trainval/test split")


def caltech101(data_dir, root=None, download=True, image_size=224, split_seed=0, background=False) -> DataSplits:
    """101 object classes with no official split: as Kornblith et al. 2019, 30 random training
    images per class (drawn with split_seed), the rest test (3,030 / 5,647). torchvision leaves
    out BACKGROUND_Google; `background=True` reads it as a 102nd class, as Kornblith et al. and VTAB
    (TFDS) count it (3,060 / 6,084: their Table 1's and TFDS's sizes; dataset=caltech101_background)."""
    base, fetch = locate("caltech101", data_dir, root, download)
    found = read("caltech101", base, fetch, datasets.Caltech101, base, download=fetch)
    images = Path(found.root) / "101_ObjectCategories"
    samples = [(images / found.categories[label] / f"image_{index:04d}.jpg", label)
               for label, index in zip(found.y, found.index)]
    classes = list(found.categories)
    if background:  # last, so the other classes keep their labels
        samples += [(path, len(classes)) for path in sorted((images / "BACKGROUND_Google").glob("*.jpg"))]
        classes.append("BACKGROUND_Google")
    labels = [label for _, label in samples]
    train = stratified_indices(labels, 1.0, split_seed, CALTECH_TRAIN_PER_CLASS)
    test = sorted(set(range(len(samples))) - set(train))
    return official("caltech101", base, part(samples, train), part(samples, test), classes, image_size,
                     f"{CALTECH_TRAIN_PER_CLASS} training images per class (split_seed={split_seed}), the rest test; "
                     + ("BACKGROUND_Google as the 102nd class" if background else "BACKGROUND_Google left out"))


def flowers102(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """102 flowers, official train / val / test (1,020 / 1,020 / 6,149: 10 + 10 per class in train and val)."""
    base, fetch = locate("flowers102", data_dir, root, download)
    train, val, test = (read("flowers102", base, fetch, datasets.Flowers102, base, split=s, download=fetch)
                        for s in ("train", "val", "test"))
    return official("flowers102", base, listed(train._image_files, train._labels),
                     listed(test._image_files, test._labels), train.classes, image_size,
                     "official train/val/test split", val=listed(val._image_files, val._labels))


def sun397(data_dir, root=None, download=True, partition=1, image_size=224) -> DataSplits:
    """397 scene classes. torchvision lists all 108,754 images and no split; Kornblith et al. 2019
    use the first of the 10 official partitions (50 training and 50 test images per class:
    19,850 / 19,850), read from Training_NN.txt / Testing_NN.txt in the data set's folder.
    partition=tfds: TFDS's sun397/tfds split, VTAB's (70/10/20: 76,128 / 10,875 / 21,750), from TFDS's
    lists sun397_tfds_{tr,va,te}.txt in that folder (fetched from TFDS's repository where missing and online)."""
    if partition != TFDS_PARTITION:
        _check_partition("sun397", partition)
    base, fetch = locate("sun397", data_dir, root, download)
    found = read("sun397", base, fetch, datasets.SUN397, base, download=fetch)
    folder = Path(found._data_dir)
    label_of = {path.relative_to(folder).as_posix(): label for path, label in zip(found._image_files, found._labels)}
    if partition == TFDS_PARTITION:
        online = download and root is None and not offline()
        train, val, test = (_sun397_partition(folder, _sun397_tfds_list(folder, split, online), label_of, partition)
                            for split in ("tr", "va", "te"))
        splits = official("sun397", base, train, test, found.classes, image_size,
                          "TFDS's sun397/tfds split (sun397_tfds_{tr,va,te}.txt), VTAB's", val=val)
        splits.val_source = "TFDS's sun397/tfds validation list"
        return splits
    train, test = (_sun397_partition(folder, f"{prefix}_{partition:02d}.txt", label_of, partition)
                   for prefix in ("Training", "Testing"))
    return official("sun397", base, train, test, found.classes, image_size,
                     f"official partition {partition} (Training_{partition:02d}.txt / Testing_{partition:02d}.txt)")


def _sun397_tfds_list(folder: Path, split: str, online: bool) -> str:
    """The name of TFDS's list of one sun397/tfds split in `folder`, fetched first where missing and allowed."""
    name = f"sun397_tfds_{split}.txt"
    if not (folder / name).is_file() and online:
        try:
            download_url(SUN397_TFDS_LISTS + name, str(folder), name)
        except (OSError, RuntimeError) as err:
            raise DataNotFoundError(f"sun397: {folder / name} is missing and fetching it from {SUN397_TFDS_LISTS} "
                                    f"failed ({err})") from err
    return name


def _sun397_partition(folder: Path, name: str, label_of: dict, partition: int) -> FileListDataset:
    """The images one SUN397 partition file lists (`/a/abbey/sun_x.jpg` lines), with their labels."""
    listed = folder / name
    if not listed.is_file() and partition == TFDS_PARTITION:
        raise DataNotFoundError(f"sun397: {listed} does not exist: it lists a split of TFDS's sun397/tfds "
                                f"(dataset.partition=tfds, VTAB's). Supply it: put sun397_tfds_tr.txt, _va.txt and "
                                f"_te.txt from {SUN397_TFDS_LISTS} into {folder}, or run online")
    if not listed.is_file():
        raise DataNotFoundError(f"sun397: {listed} does not exist: it lists the images of official partition "
                                f"{partition} (dataset.partition). Supply it: extract {name} (and its Training/Testing "
                                f"twin) from {SUN397_PARTITIONS} into {folder}")
    relative = [line.strip().lstrip("/") for line in listed.read_text().splitlines() if line.strip()]
    missing = [path for path in relative if path not in label_of]
    if missing:
        raise DataNotFoundError(f"sun397: {len(missing)} of the images {listed} lists are not in {folder}, e.g. "
                                f"{missing[0]}; extract the whole SUN397.tar.gz there")
    return FileListDataset([(folder / path, label_of[path]) for path in relative])


def eurosat(data_dir, root=None, download=True, image_size=64, split_seed=0) -> DataSplits:
    """10 land-use classes in 27,000 Sentinel-2 RGB tiles of 64 px, with no official split: a
    stratified 60/20/20 train/val/test draw with split_seed, VTAB's proportions (16,200 / 5,400 / 5,400)."""
    base, fetch = locate("eurosat", data_dir, root, download)
    found = read("eurosat", base, fetch, datasets.EuroSAT, base, download=fetch)
    samples = [(Path(path), label) for path, label in found.samples]
    return drawn("eurosat", base, [label for _, label in samples], lambda indices: part(samples, indices), found.classes,
                 image_size, split_seed, EUROSAT_FRACTIONS)


def svhn(data_dir, root=None, download=True, image_size=32) -> DataSplits:
    """Street View House Numbers, cropped digits (VTAB's svhn: the official train and test splits, 73,257 and
    26,032 images of 32 px; the `extra` split is not used, as in VTAB). Digit 0 is label 0 (the files say 10)."""
    base, fetch = locate("svhn", data_dir, root, download)
    folder = base / SOURCES["svhn"].folder
    train, test = (_svhn_split(base, folder, split, fetch) for split in ("train", "test"))
    return official("svhn", base, train, test, [str(digit) for digit in range(10)], image_size,
                     "official train/test split (cropped digits)")


def _svhn_split(base: Path, folder: Path, split: str, fetch: bool) -> TensorImages:
    import scipy.io
    import torch

    path = folder / f"{split}_32x32.mat"
    if not path.is_file():  # torchvision fetches it (and checks its MD5) where allowed
        read("svhn", base, fetch, datasets.SVHN, folder, split=split, download=fetch)
    try:
        loaded = scipy.io.loadmat(path)
        images = torch.from_numpy(np.ascontiguousarray(np.transpose(loaded["X"], (3, 2, 0, 1))))
        labels = torch.from_numpy(loaded["y"].reshape(-1).astype(np.int64) % 10)
    except (OSError, ValueError, KeyError) as err:
        raise DataNotFoundError(hint("svhn", base, f"has an unreadable {path.name} ({err})")) from err
    return TensorImages(images, labels)


def clevr(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """CLEVR v1.0's rendered scenes as VTAB's clevr-count: how many objects (3-10, 8 classes). CLEVR's train
    split (70,000) trains, its val split (15,000; TFDS's "validation") is the test split, as in VTAB; labels
    come from the scene files (CLEVR's test split has none)."""
    return _clevr("clevr", data_dir, root, download, image_size, "count_all")


def clevr_distance(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """VTAB's clevr-dist: the same scenes and splits as `clevr`, labelled by the closest object's depth in 6
    bins (CLEVR_DISTANCE_THRESHOLDS)."""
    return _clevr("clevr_distance", data_dir, root, download, image_size, "closest_object_distance")


def _clevr(name, data_dir, root, download, image_size, task) -> DataSplits:
    base, fetch = locate("clevr", data_dir, root, download)
    read("clevr", base, fetch, datasets.CLEVRClassification, base, split="val", download=fetch)  # fetched, checked
    folder = base / SOURCES["clevr"].folder / "CLEVR_v1.0"
    if task == "count_all":
        classes = [str(count) for count in range(3, 11)]
    else:
        bins = CLEVR_DISTANCE_THRESHOLDS
        classes = [f"{low:g}-{high:g}" for low, high in zip(bins, bins[1:])]
    train, test = (_clevr_split("clevr", base, folder, split, task) for split in ("train", "val"))
    splits = official("clevr", base, train, test, classes, image_size, f"CLEVR v1.0 train / val (VTAB's test), {task}")
    splits.source = splits.source.replace("torchvision clevr", f"torchvision {name}", 1)
    return splits


def _clevr_split(name, base: Path, folder: Path, split: str, task: str) -> FileListDataset:
    import json

    scenes_file = folder / "scenes" / f"CLEVR_{split}_scenes.json"
    try:
        scenes = json.loads(scenes_file.read_text())["scenes"]
    except (OSError, ValueError, KeyError) as err:
        raise DataNotFoundError(hint(name, base, f"has no readable {scenes_file.name} ({err})")) from err
    return FileListDataset([(folder / "images" / split / scene["image_filename"], _clevr_label(scene, task))
                            for scene in scenes])


def _clevr_label(scene: dict, task: str) -> int:
    """VTAB's: the object count less 3, or the index of the last threshold below the closest depth."""
    objects = scene["objects"]
    if task == "count_all":
        return len(objects) - 3
    depth = min(obj["pixel_coords"][2] for obj in objects)
    return max(i for i, threshold in enumerate(CLEVR_DISTANCE_THRESHOLDS) if threshold < depth)


def _check_partition(name, partition) -> None:
    if not isinstance(partition, int) or isinstance(partition, bool) or partition not in PARTITIONS:
        raise ConfigError(f"dataset.partition={partition!r} is not one of {name}'s official partitions; use 1 to 10 "
                          "(Kornblith et al. 2019 report 1)")


def _same_classes(name, base: Path, *found) -> None:
    """DTD and Pets number their classes per split file: the splits must agree, or labels would mix."""
    if any(split.classes != found[0].classes for split in found):
        raise DataNotFoundError(hint(name, base, "has split files that name different classes"))


