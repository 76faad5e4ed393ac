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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets

from tlbench.data.folders import FileListDataset
from tlbench.data.splits import DataSplits, TensorImages, offline, stratified_indices
from tlbench.errors import ConfigError, DataNotFoundError

CALTECH_TRAIN_PER_CLASS = 30  # Kornblith et al. 2019, A.1: 30 random training images per class, the rest test
EUROSAT_FRACTIONS = (0.6, 0.2)  # train, val of every class; the rest is test (VTAB's 60/20/20)
PARTITIONS = range(1, 11)  # DTD's and SUN397's 10 official train/test partitions
SUN397_PARTITIONS = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"  # its 10, as text files
# VTAB's CLEVR tasks (google-research/task_adaptation data/clevr.py): the number of objects less 3 (3-10: 8
# classes; dataset=clevr), or the depth of the closest object binned by these thresholds (6; clevr_distance)
CLEVR_DISTANCE_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)


@dataclass(frozen=True)
class Source:
    folder: str                # torchvision's folder for the set, inside the root it is given
    holds: str                 # what torchvision reads there
    by_hand: str               # how to supply it without torchvision's download ({base}: where the folder goes)
    metric: str                # what Kornblith et al. 2019 report (Table 1); VTAB's top-1 for EuroSAT
    downloadable: bool = True  # False: torchvision's download is broken upstream


SOURCES = {
    "food101": Source("food-101", "meta/train.json, meta/test.json and images/<class>/<id>.jpg",
                      "extract http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz into {base}", "top1"),
    "fgvc_aircraft": Source(
        "fgvc-aircraft-2013b", "data/variants.txt, data/images_variant_{train,val,test}.txt and data/images/*.jpg",
        "extract https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz into {base}",
        "mean_per_class"),
    "stanford_cars": Source(
        "stanford_cars", "cars_train/*.jpg, cars_test/*.jpg, devkit/cars_meta.mat, devkit/cars_train_annos.mat and "
        "cars_test_annos_withlabels.mat",
        "take the Kaggle copy (kaggle.com/datasets/jessicali9530/stanford-cars-dataset) and move its nested "
        "cars_train/cars_train/ and cars_test/cars_test/ up one level, the devkit from "
        "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz into devkit/, and "
        "cars_test_annos_withlabels.mat (linked in https://github.com/pytorch/vision/issues/7545) next to them",
        "top1", downloadable=False),
    "dtd": Source("dtd", "dtd/images/<class>/*.jpg and dtd/labels/{train,val,test}<partition>.txt",
                  "extract https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz into {base}/dtd "
                  "(it unpacks as dtd/, hence dtd/dtd/)", "top1"),
    "oxford_pets": Source("oxford-iiit-pet", "images/*.jpg and annotations/{trainval,test}.txt",
                          "extract images.tar.gz and annotations.tar.gz from "
                          "https://www.robots.ox.ac.uk/~vgg/data/pets/data/ into {base}/oxford-iiit-pet",
                          "mean_per_class"),
    "caltech101": Source("caltech101", "101_ObjectCategories/<class>/image_NNNN.jpg",
                         "extract 101_ObjectCategories.tar.gz from "
                         "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip into {base}/caltech101",
                         "mean_per_class"),
    "flowers102": Source("flowers-102", "jpg/image_NNNNN.jpg, imagelabels.mat and setid.mat",
                         "extract 102flowers.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into "
                         "{base}/flowers-102 and put imagelabels.mat and setid.mat from there next to jpg/",
                         "mean_per_class"),
    "sun397": Source("SUN397", "ClassName.txt, <letter>/<class>/sun_*.jpg and the partition files Training_NN.txt "
                     "and Testing_NN.txt (NN = dataset.partition)",
                     "extract http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz into {base}; either way, "
                     "put Training_01.txt and Testing_01.txt (dataset.partition=1) from " + SUN397_PARTITIONS +
                     " into {base}/SUN397: torchvision does not fetch them", "top1"),
    "svhn": Source("svhn", "train_32x32.mat and test_32x32.mat",
                   "put train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into {base}/svhn",
                   "top1"),
    "clevr": Source("clevr", "CLEVR_v1.0/images/{train,val}/*.png and CLEVR_v1.0/scenes/CLEVR_{train,val}_scenes.json",
                    "extract https://dl.fbaipublicfiles.com/clevr/CLEVR_v1.0.zip into {base}/clevr", "top1"),
    "eurosat": Source("eurosat", "2750/<class>/*.jpg",
                      "extract EuroSAT.zip (torchvision's copy: huggingface.co/datasets/torchgeo/eurosat/resolve/"
                      "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip) into {base}/eurosat", "top1"),
}


def food101(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """101 dishes, 750 training and 250 test images each (75,750 / 25,250)."""
    base, fetch = _locate("food101", data_dir, root, download)
    train, test = (_read("food101", base, fetch, datasets.Food101, base, split=s, download=fetch)
                   for s in ("train", "test"))
    return _official("food101", base, _listed(train._image_files, train._labels),
                     _listed(test._image_files, test._labels), train.classes, image_size, "official train/test split")


def fgvc_aircraft(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """100 aircraft variants, official train / val / test (3,334 / 3,333 / 3,333)."""
    base, fetch = _locate("fgvc_aircraft", data_dir, root, download)
    train, val, test = (_read("fgvc_aircraft", base, fetch, datasets.FGVCAircraft, base, split=s,
                              annotation_level="variant", download=fetch) for s in ("train", "val", "test"))
    return _official("fgvc_aircraft", base, _listed(train._image_files, train._labels),
                     _listed(test._image_files, test._labels), train.classes, image_size,
                     "official train/val/test split, variants", val=_listed(val._image_files, val._labels))


def stanford_cars(data_dir, root=None, image_size=224) -> DataSplits:
    """196 car models, 8,144 training and 8,041 test images. torchvision cannot download it (the
    Stanford URLs are dead), so there is no `download` key: the copy is supplied by hand (SOURCES)."""
    base, _ = _locate("stanford_cars", data_dir, root, download=False)
    train, test = (_read("stanford_cars", base, False, datasets.StanfordCars, base, split=s) for s in ("train", "test"))
    return _official("stanford_cars", base, _listed(*zip(*train._samples)), _listed(*zip(*test._samples)),
                     train.classes, image_size, "official train/test split")


def dtd(data_dir, root=None, download=True, partition=1, image_size=224) -> DataSplits:
    """47 textures, 40 images each in train, val and test (1,880 each) of one of the 10 official
    partitions; Kornblith et al. 2019 report partition 1."""
    _check_partition("dtd", partition)
    base, fetch = _locate("dtd", data_dir, root, download)
    train, val, test = (_read("dtd", base, fetch, datasets.DTD, base, split=s, partition=partition, download=fetch)
                        for s in ("train", "val", "test"))
    _same_classes("dtd", base, train, val, test)
    return _official("dtd", base, _listed(train._image_files, train._labels), _listed(test._image_files, test._labels),
                     train.classes, image_size, f"official train/val/test split, partition {partition}",
                     val=_listed(val._image_files, val._labels))


def oxford_pets(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """37 cat and dog breeds: the official trainval (3,680) trains, test (3,669)."""
    base, fetch = _locate("oxford_pets", data_dir, root, download)
    train, test = (_read("oxford_pets", base, fetch, datasets.OxfordIIITPet, base, split=s, download=fetch)
                   for s in ("trainval", "test"))
    _same_classes("oxford_pets", base, train, test)
    return _official("oxford_pets", base, _listed(train._images, train._labels), _listed(test._images, test._labels),
                     train.classes, image_size, "official trainval/test split")


def caltech101(data_dir, root=None, download=True, image_size=224, split_seed=0, background=False) -> DataSplits:
    """101 object classes with no official split: as Kornblith et al. 2019, 30 random training
    images per class (drawn with split_seed), the rest test (3,030 / 5,647). torchvision leaves
    out BACKGROUND_Google; `background=True` reads it as a 102nd class, as Kornblith et al. and VTAB
    (TFDS) count it (3,060 / 6,084: their Table 1's and TFDS's sizes; dataset=caltech101_background)."""
    base, fetch = _locate("caltech101", data_dir, root, download)
    found = _read("caltech101", base, fetch, datasets.Caltech101, base, download=fetch)
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
    return _official("caltech101", base, _part(samples, train), _part(samples, test), classes, image_size,
                     f"{CALTECH_TRAIN_PER_CLASS} training images per class (split_seed={split_seed}), the rest test; "
                     + ("BACKGROUND_Google as the 102nd class" if background else "BACKGROUND_Google left out"))


def flowers102(data_dir, root=None, download=True, image_size=224) -> DataSplits:
    """102 flowers, official train / val / test (1,020 / 1,020 / 6,149: 10 + 10 per class in train and val)."""
    base, fetch = _locate("flowers102", data_dir, root, download)
    train, val, test = (_read("flowers102", base, fetch, datasets.Flowers102, base, split=s, download=fetch)
                        for s in ("train", "val", "test"))
    return _official("flowers102", base, _listed(train._image_files, train._labels),
                     _listed(test._image_files, test._labels), train.classes, image_size,
                     "official train/val/test split", val=_listed(val._image_files, val._labels))


def sun397(data_dir, root=None, download=True, partition=1, image_size=224) -> DataSplits:
    """397 scene classes. torchvision lists all 108,754 images and no split; Kornblith et al. 2019
    use the first of the 10 official partitions (50 training and 50 test images per class:
    19,850 / 19,850), read from Training_NN.txt / Testing_NN.txt in the data set's folder."""
    _check_partition("sun397", partition)
    base, fetch = _locate("sun397", data_dir, root, download)
    found = _read("sun397", base, fetch, datasets.SUN397, base, download=fetch)
    folder = Path(found._data_dir)
    label_of = {path.relative_to(folder).as_posix(): label for path, label in zip(found._image_files, found._labels)}
    train, test = (_sun397_partition(folder, f"{prefix}_{partition:02d}.txt", label_of, partition)
                   for prefix in ("Training", "Testing"))
    return _official("sun397", base, train, test, found.classes, image_size,
                     f"official partition {partition} (Training_{partition:02d}.txt / Testing_{partition:02d}.txt)")


def _sun397_partition(folder: Path, name: str, label_of: dict, partition: int) -> FileListDataset:
    """The images one SUN397 partition file lists (`/a/abbey/sun_x.jpg` lines), with their labels."""
    listed = folder / name
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
    base, fetch = _locate("eurosat", data_dir, root, download)
    found = _read("eurosat", base, fetch, datasets.EuroSAT, base, download=fetch)
    samples, targets = [(Path(path), label) for path, label in found.samples], np.asarray(found.targets)
    train_share, val_share = EUROSAT_FRACTIONS
    train = stratified_indices(targets, train_share, split_seed)
    rest = np.setdiff1d(np.arange(len(samples)), train)
    val = rest[stratified_indices(targets[rest], val_share / (1 - train_share), split_seed)]
    splits = _official("eurosat", base, _part(samples, train), _part(samples, np.setdiff1d(rest, val)), found.classes,
                       image_size, f"stratified 60/20/20 train/val/test (split_seed={split_seed})",
                       val=_part(samples, val))
    splits.val_source = f"20% of every class, stratified, split_seed={split_seed} (VTAB's 60/20/20)"
    return splits


def svhn(data_dir, root=None, download=True, image_size=32) -> DataSplits:
    """Street View House Numbers, cropped digits (VTAB's svhn: the official train and test splits, 73,257 and
    26,032 images of 32 px; the `extra` split is not used, as in VTAB). Digit 0 is label 0 (the files say 10)."""
    base, fetch = _locate("svhn", data_dir, root, download)
    folder = base / SOURCES["svhn"].folder
    train, test = (_svhn_split(base, folder, split, fetch) for split in ("train", "test"))
    return _official("svhn", base, train, test, [str(digit) for digit in range(10)], image_size,
                     "official train/test split (cropped digits)")


def _svhn_split(base: Path, folder: Path, split: str, fetch: bool) -> TensorImages:
    import scipy.io
    import torch

    path = folder / f"{split}_32x32.mat"
    if not path.is_file():  # torchvision fetches it (and checks its MD5) where allowed
        _read("svhn", base, fetch, datasets.SVHN, folder, split=split, download=fetch)
    try:
        loaded = scipy.io.loadmat(path)
        images = torch.from_numpy(np.ascontiguousarray(np.transpose(loaded["X"], (3, 2, 0, 1))))
        labels = torch.from_numpy(loaded["y"].reshape(-1).astype(np.int64) % 10)
    except (OSError, ValueError, KeyError) as err:
        raise DataNotFoundError(_hint("svhn", base, f"has an unreadable {path.name} ({err})")) from err
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
    base, fetch = _locate("clevr", data_dir, root, download)
    _read("clevr", base, fetch, datasets.CLEVRClassification, base, split="val", download=fetch)  # fetched, checked
    folder = base / SOURCES["clevr"].folder / "CLEVR_v1.0"
    if task == "count_all":
        classes = [str(count) for count in range(3, 11)]
    else:
        bins = CLEVR_DISTANCE_THRESHOLDS
        classes = [f"{low:g}-{high:g}" for low, high in zip(bins, bins[1:])]
    train, test = (_clevr_split("clevr", base, folder, split, task) for split in ("train", "val"))
    splits = _official("clevr", base, train, test, classes, image_size, f"CLEVR v1.0 train / val (VTAB's test), {task}")
    splits.source = splits.source.replace("torchvision clevr", f"torchvision {name}", 1)
    return splits


def _clevr_split(name, base: Path, folder: Path, split: str, task: str) -> FileListDataset:
    import json

    scenes_file = folder / "scenes" / f"CLEVR_{split}_scenes.json"
    try:
        scenes = json.loads(scenes_file.read_text())["scenes"]
    except (OSError, ValueError, KeyError) as err:
        raise DataNotFoundError(_hint(name, base, f"has no readable {scenes_file.name} ({err})")) from err
    return FileListDataset([(folder / "images" / split / scene["image_filename"], _clevr_label(scene, task))
                            for scene in scenes])


def _clevr_label(scene: dict, task: str) -> int:
    """VTAB's: the object count less 3, or the index of the last threshold below the closest depth."""
    objects = scene["objects"]
    if task == "count_all":
        return len(objects) - 3
    depth = min(obj["pixel_coords"][2] for obj in objects)
    return max(i for i, threshold in enumerate(CLEVR_DISTANCE_THRESHOLDS) if threshold < depth)


def _locate(name, data_dir, root, download) -> tuple[Path, bool]:
    """The folder to hand torchvision as its root, and whether it may download there. A set that is
    neither there nor fetchable fails now, naming the folder and how to supply it."""
    source = SOURCES[name]
    given = Path(root).expanduser() if root else None
    base = (given.parent if given.name == source.folder else given) if given else Path(data_dir).expanduser()
    fetch = given is None and download and source.downloadable and not offline()
    if not (base / source.folder).is_dir() and not fetch:
        why = ("dataset.root is a local copy, never downloaded into" if given else
               "torchvision cannot download it: its URLs are dead" if not source.downloadable else
               "download=false" if not download else "offline mode is set, TLBENCH_OFFLINE=1")
        raise DataNotFoundError(_hint(name, base, f"does not exist and was not fetched ({why})"))
    return base, fetch


def _read(name, base: Path, fetch: bool, cls, *args, **kwargs):
    """torchvision's `cls(*args, **kwargs)`; what it raises on a missing or damaged file (or a
    failed download) becomes a DataNotFoundError saying what torchvision expects."""
    try:
        return cls(*args, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        what = "could not be fetched or read" if fetch else "cannot be read"
        raise DataNotFoundError(_hint(name, base, f"{what} by torchvision.datasets.{cls.__name__} "
                                                  f"({type(err).__name__}: {err})")) from err


def _hint(name, base: Path, problem: str) -> str:
    source = SOURCES[name]
    folder = base / source.folder
    by_hand = source.by_hand.format(base=base)
    fetch = "run online with dataset.download=true (torchvision downloads it and checks its MD5s), or " \
        if source.downloadable else ""
    return (f"{name}: {folder} {problem}. torchvision reads {source.holds} there. Supply it: {fetch}{by_hand}; "
            f"or point dataset.root at a copy laid out so (that folder, or the folder holding it).")


def _check_partition(name, partition) -> None:
    if not isinstance(partition, int) or isinstance(partition, bool) or partition not in PARTITIONS:
        raise ConfigError(f"dataset.partition={partition!r} is not one of {name}'s official partitions; use 1 to 10 "
                          "(Kornblith et al. 2019 report 1)")


def _same_classes(name, base: Path, *found) -> None:
    """DTD and Pets number their classes per split file: the splits must agree, or labels would mix."""
    if any(split.classes != found[0].classes for split in found):
        raise DataNotFoundError(_hint(name, base, "has split files that name different classes"))


def _listed(files, labels) -> FileListDataset:
    return FileListDataset([(Path(path), int(label)) for path, label in zip(files, labels)])


def _part(samples: list[tuple[Path, int]], indices) -> FileListDataset:
    return FileListDataset([samples[i] for i in indices])


def _official(name, base: Path, train, test, classes, image_size, split: str, val=None) -> DataSplits:
    """`val`: the set's official validation split, or its own draw (EuroSAT); None = carved from train."""
    return DataSplits(train, test, list(classes), image_size, f"torchvision {name} in {base / SOURCES[name].folder}: "
                      f"{split}", val=val, metric=SOURCES[name].metric)
