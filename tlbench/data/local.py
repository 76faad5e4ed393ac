"""The user's own images: an ImageFolder tree, or file lists of `path label` lines."""

from tlbench.data import folders
from tlbench.data.splits import DataSplits


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
