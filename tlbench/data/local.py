"""The user's own images: an ImageFolder tree, or file lists of `path label` lines."""

import logging
from pathlib import Path

from tlbench import specs
from tlbench.data import folders
from tlbench.data.splits import DataSplits, hold_out

log = logging.getLogger("tlbench")


def imagefolder(root, image_size=224, test_split=0.2, split_seed=0) -> DataSplits:
    """`root`: class folders (test_split of every class is held out as the test split, stratified,
    with split_seed), or train/ and test/ (or val/) folders of the same class folders (folders.layout)."""
    specs.require(0 < test_split < 1, "dataset.test_split", test_split,
                  "must be a fraction in (0, 1): the share of every class held out as the test split")
    found = folders.layout(root)
    train = folders.image_folder(found.train)
    classes, folder = train.classes, found.train.relative_to(Path(root).expanduser())
    if found.test is None:
        train, test = hold_out(train, test_split, split_seed, "dataset.test_split", "or lower dataset.test_split")
        where = "the class folders" if folder == Path(".") else f"{folder}/"
        test_source = f"{test_split:g} of {where}, stratified, split_seed={split_seed} (dataset.test_split)"
        source = f"ImageFolder {root} ({'class folders' if folder == Path('.') else f'{folder}/'})"
    else:
        test = folders.image_folder(found.test)
        folders.same_classes(train, test, Path(root), found.test.name)
        test_source, source = found.test_source, f"ImageFolder {root} (train/, {found.test.name}/)"
    log.info("dataset.root=%s: the test split is %s", root, test_source)
    return DataSplits(train, test, classes, image_size, source, test_source=test_source)


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
                      f"file lists {', '.join(map(str, lists.values()))} ({paths})", val=datasets.get("val"),
                      test_source=f"dataset.test_list {test_list}")
