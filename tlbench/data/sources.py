"""Where each downloadable data set comes from and how a copy is found: a set's Source (its folder, what
is read there, how to supply it by hand, its literature's metric), the lookup of a copy in data_dir or
dataset.root, and the error that names the folder and the fix. Shared by transfer.py (Kornblith et al.'s
sets, EuroSAT, SVHN, CLEVR: read by torchvision's classes) and vtab.py (VTAB's other tasks)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_url

from tlbench.data.folders import FileListDataset
from tlbench.data.splits import DataSplits, offline, stratified_indices
from tlbench.errors import DataNotFoundError

SUN397_PARTITIONS = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"  # its 10, as text files


@dataclass(frozen=True)
class Source:
    folder: str                # the set's folder (torchvision's name for it), inside the root it is given
    holds: str                 # what is read there
    by_hand: str               # how to supply it without a download ({base}: where the folder goes)
    metric: str                # what Kornblith et al. 2019 report (Table 1); VTAB's top-1 for EuroSAT
    downloadable: bool = True  # False: torchvision's download is broken upstream, or there is none
    reader: str = "torchvision"  # who reads (and downloads) it: torchvision's class, or tlbench itself
    manual_why: str = "its URLs are dead"  # why it is not downloadable


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
    # VTAB's other tasks (vtab.py)
    "resisc45": Source("NWPU-RESISC45", "<class>/<class>_NNN.jpg, 45 class folders of 700 images",
                       "extract NWPU-RESISC45.rar (the OneDrive link on TFDS's resisc45 page, "
                       "tensorflow.org/datasets/catalog/resisc45) into {base}", "top1", downloadable=False,
                       reader="tlbench", manual_why="its only copy is a RAR archive behind a OneDrive link"),
    "patch_camelyon": Source("pcam", "camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5 (needs h5py)",
                             "put those six files, gunzipped, from github.com/basveeling/pcam into {base}/pcam",
                             "top1"),
    "dsprites": Source("dsprites", "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
                       "put that file from github.com/deepmind/dsprites-dataset into {base}/dsprites", "top1",
                       reader="tlbench"),
    "smallnorb": Source("smallnorb", "smallnorb-5x46789x9x18x6x2x96x96-training-{dat,info}.mat and "
                        "smallnorb-5x01235x9x18x6x2x96x96-testing-{dat,info}.mat (or the same names with .gz)",
                        "put those four files from https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/ into "
                        "{base}/smallnorb", "top1", reader="tlbench"),
    "dmlab": Source("dmlab", "dmlab-{train,validation,test}.tfrecord* (TFDS's source files: tf.train.Example records "
                    "of a JPEG `image`, a `filename` and a `label`), anywhere below that folder",
                    "extract https://storage.googleapis.com/dmlab-vtab/dmlab.tar.gz into {base}/dmlab", "top1",
                    reader="tlbench"),
    "diabetic_retinopathy": Source(
        "diabetic_retinopathy", "train/*.jpeg, test/*.jpeg, trainLabels.csv (Kaggle's) and retinopathy_solution.csv "
        "(the test labels with their Usage, Public or Private; tlbench fetches it where missing and online); "
        "Graham's preprocessing needs OpenCV (the vtab extra)",
        "download train.zip.* and test.zip.* and trainLabels.csv.zip from "
        "https://www.kaggle.com/c/diabetic-retinopathy-detection/data (a Kaggle login), unpack them into "
        "{base}/diabetic_retinopathy/train, .../test and trainLabels.csv, and put retinopathy_solution.csv from "
        + "https://storage.googleapis.com/kaggle-forum-message-attachments/90528/2877/retinopathy_solution.csv next "
        "to them", "top1", downloadable=False, reader="tlbench",
        manual_why="Kaggle serves it to a logged-in user only"),
    "kitti": Source("Kitti", "raw/training/image_2/*.png and raw/training/label_2/*.txt (the object benchmark's "
                    "training images and labels) and raw/mapping/train_{rand,mapping}.txt (its devkit)",
                    "extract data_object_image_2.zip, data_object_label_2.zip and devkit_object.zip from "
                    "https://s3.eu-central-1.amazonaws.com/avg-kitti/ into {base}/Kitti/raw", "top1"),
}


def locate(name, data_dir, root, download) -> tuple[Path, bool]:
    """The folder to hand torchvision as its root, and whether it may download there. A set that is
    neither there nor fetchable fails now, naming the folder and how to supply it."""
    source = SOURCES[name]
    given = Path(root).expanduser() if root else None
    base = (given.parent if given.name == source.folder else given) if given else Path(data_dir).expanduser()
    fetch = given is None and download and source.downloadable and not offline()
    if not (base / source.folder).is_dir() and not fetch:
        why = ("dataset.root is a local copy, never downloaded into" if given else
               f"{source.reader} cannot download it: {source.manual_why}" if not source.downloadable else
               "download=false" if not download else "offline mode is set, TLBENCH_OFFLINE=1")
        raise DataNotFoundError(hint(name, base, f"does not exist and was not fetched ({why})"))
    return base, fetch


def read(name, base: Path, fetch: bool, cls, *args, **kwargs):
    """torchvision's `cls(*args, **kwargs)`; what it raises on a missing or damaged file (or a
    failed download) becomes a DataNotFoundError saying what torchvision expects."""
    try:
        return cls(*args, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        what = "could not be fetched or read" if fetch else "cannot be read"
        raise DataNotFoundError(hint(name, base, f"{what} by torchvision.datasets.{cls.__name__} "
                                                  f"({type(err).__name__}: {err})")) from err


def hint(name, base: Path, problem: str) -> str:
    source = SOURCES[name]
    folder = base / source.folder
    by_hand = source.by_hand.format(base=base)
    checks = " and checks its MD5s" if source.reader == "torchvision" else ""
    fetch = f"run online with dataset.download=true ({source.reader} downloads it{checks}), or " \
        if source.downloadable else ""
    return (f"{name}: {folder} {problem}. {source.reader} reads {source.holds} there. Supply it: {fetch}{by_hand}; "
            f"or point dataset.root at a copy laid out so (that folder, or the folder holding it).")


def listed(files, labels) -> FileListDataset:
    return FileListDataset([(Path(path), int(label)) for path, label in zip(files, labels)])


def part(samples: list[tuple[Path, int]], indices) -> FileListDataset:
    return FileListDataset([samples[i] for i in indices])


def official(name, base: Path, train, test, classes, image_size, split: str, val=None) -> DataSplits:
    """`val`: the set's official validation split, or its own draw (EuroSAT); None = carved from train."""
    return DataSplits(train, test, list(classes), image_size, f"{SOURCES[name].reader} {name} in {base / SOURCES[name].folder}: "
                      f"{split}", val=val, metric=SOURCES[name].metric)


def drawn(name, base: Path, targets, take, classes, image_size, split_seed: int,
          fractions: tuple[float, float]) -> DataSplits:
    """A set with no official split, drawn stratified into train / val / test by `fractions` (train's and
    val's shares; the rest is test) with split_seed: VTAB's 60/20/20 for EuroSAT and RESISC45, 80/10/10 for
    dSprites. `take(indices)`: that part of the set, as a dataset."""
    targets = np.asarray(targets)
    train_share, val_share = fractions
    train = stratified_indices(targets, train_share, split_seed)
    rest = np.setdiff1d(np.arange(len(targets)), train)
    val = rest[stratified_indices(targets[rest], val_share / (1 - train_share), split_seed)]
    shares = "/".join(f"{round(100 * f)}" for f in (train_share, val_share, 1 - train_share - val_share))
    splits = official(name, base, take(train), take(np.setdiff1d(rest, val)), classes, image_size,
                      f"stratified {shares} train/val/test (split_seed={split_seed})", val=take(val))
    splits.val_source = f"{round(100 * val_share)}% of every class, stratified, split_seed={split_seed} (VTAB's {shares})"
    return splits


def fetched(name: str, base: Path, file: str, url: str, fetch: bool) -> Path:
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
