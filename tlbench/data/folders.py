"""Image files on disk: ImageFolder trees and `<path> <label>` list files, validated up front
so that a typo or a missing folder fails at startup, naming the path and the fix."""

import logging
from collections import Counter
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from tlbench.errors import BadImageError, ConfigError, DataNotFoundError

# Where a list entry was found: relative paths are tried against the list's folder, then the cwd.
LIST_FOLDER, WORKING_DIR, ABSOLUTE = "list folder", "working directory", "absolute"

log = logging.getLogger("tlbench")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def load_rgb(path) -> Image.Image:
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot decode image {path} ({type(err).__name__}: {err}); delete or replace the file, "
                            "or set dataset.on_bad_image=skip to leave such files out (result.json counts "
                            "them)", path=path) from err


def image_folder(split_dir: Path) -> ImageFolder:
    """One sub-folder per class; an empty class folder is an error, not a silently smaller set."""
    if not split_dir.is_dir():
        raise DataNotFoundError(f"{split_dir} does not exist; an ImageFolder root needs train/ and val/ "
                                "(or test/), each with one sub-folder of images per class")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"{split_dir} has no class folders; put each class's images in "
                                f"{split_dir}/<class name>/")
    for name in classes:
        if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in (split_dir / name).rglob("*")):
            raise DataNotFoundError(f"class folder {split_dir / name} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                                    "add images or remove the folder")
    return ImageFolder(str(split_dir), loader=load_rgb)


def image_folder_splits(root) -> tuple[ImageFolder, ImageFolder, str]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"dataset.root={str(root)!r} does not exist; point it at a folder holding "
                                "train/ and val/ (or test/)")
    val_name = next((n for n in ("val", "test") if (root / n).is_dir()), None)
    if val_name is None:
        raise DataNotFoundError(f"dataset.root={str(root)!r} has no val/ or test/ folder next to train/")
    train, val = image_folder(root / "train"), image_folder(root / val_name)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataNotFoundError(f"train/ and {val_name}/ in {root} have different classes: only in train: "
                                f"{only_train or 'none'}; only in {val_name}: {only_val or 'none'}")
    return train, val, val_name


class FileListDataset(Dataset):
    """Samples from a `<image path> <integer label>` list (write-up D's train.txt/test.txt)."""

    def __init__(self, samples: list[tuple[Path, int]]):
        self.samples = samples
        self.targets = [label for _, label in samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return load_rgb(path), label


def read_file_lists(lists: dict) -> tuple[dict[str, list[tuple[Path, int]]], str]:
    """{split: samples} for {split: list file}, and how their relative paths were resolved, for
    DataSplits.source. Paths found only against the working directory make the run depend on where
    it is started, so that is logged once, with the fix."""
    cwd = Path.cwd()
    samples, bases, from_cwd = {}, Counter(), []
    for split, list_path in lists.items():
        samples[split], found = read_file_list(list_path, cwd)
        bases.update(found)
        if found[WORKING_DIR]:
            from_cwd.append(str(list_path))
    if from_cwd:
        log.warning("%d image paths in %s were found relative to the working directory %s, not to the list "
                    "file's folder: this run depends on the directory it is started from. To avoid that, write "
                    "the paths relative to the list file's folder (`../` is allowed) or as absolute paths",
                    bases[WORKING_DIR], ", ".join(from_cwd), cwd)
    return samples, describe_bases(bases, cwd)


def read_file_list(list_path, cwd: Path) -> tuple[list[tuple[Path, int]], Counter]:
    """The samples of one `<image path> <integer label>` list, and how many paths were found
    against each base (LIST_FOLDER, WORKING_DIR, ABSOLUTE)."""
    list_path = Path(list_path).expanduser()
    if not list_path.is_file():
        raise DataNotFoundError(f"file list {str(list_path)!r} does not exist; set dataset.train_list / "
                                "dataset.test_list to text files of `<image path> <integer label>` lines")
    # absolute(), not resolve(): symlinks and `..` stay for the OS to follow when the image is opened,
    # as `ls` would; resolving first, or normalising `link/..` by hand, can land on another folder.
    bases = (list_path.parent.absolute(), cwd)
    samples, found = [], Counter()
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        path, label, base = _parse_line(line, f"{list_path}:{number}", bases)
        samples.append((path, label))
        found[base] += 1
    if not samples:
        raise DataNotFoundError(f"file list {list_path} has no samples")
    return samples, found


def _parse_line(line, where, bases: tuple[Path, Path]) -> tuple[Path, int, str]:
    parts = line.rsplit(maxsplit=1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ConfigError(f"{where}: cannot parse {line!r}; expected `<image path> <integer label>`")
    raw, label = parts[0].strip(), int(parts[1])
    if label < 0:
        raise ConfigError(f"{where}: label {label} is negative; labels are 0 .. num_classes-1")
    if Path(raw).is_absolute():
        if not Path(raw).is_file():
            raise DataNotFoundError(f"{where}: {raw} not found")
        return Path(raw), label, ABSOLUTE
    for base, kind in zip(bases, (LIST_FOLDER, WORKING_DIR)):
        if (base / raw).is_file():
            return base / raw, label, kind
    looked_in = " and ".join(dict.fromkeys(map(str, bases)))  # one folder when the list sits in the cwd
    raise DataNotFoundError(f"{where}: {raw} not found (looked in {looked_in})")


def describe_bases(bases: Counter, cwd: Path) -> str:
    """How list entries were found, e.g. "paths relative to the lists' folder", or a count per base
    ("3 relative to the lists' folder, 2 to the working directory /home/me") when they mix."""
    whole = {LIST_FOLDER: "paths relative to the lists' folder", ABSOLUTE: "absolute paths",
             WORKING_DIR: f"paths relative to the working directory {cwd}"}
    used = [kind for kind in whole if bases[kind]]
    if len(used) == 1:
        return whole[used[0]]
    parts = [f"{bases[LIST_FOLDER]} relative to the lists' folder"] if bases[LIST_FOLDER] else []
    if bases[WORKING_DIR]:
        parts.append(f"{bases[WORKING_DIR]} {'to' if parts else 'relative to'} the working directory {cwd}")
    if bases[ABSOLUTE]:
        parts.append(f"{bases[ABSOLUTE]} absolute")
    return ", ".join(parts)


def check_labels(samples, num_classes: int, list_path) -> None:
    bad = [label for _, label in samples if label >= num_classes]
    if bad:
        raise ConfigError(f"{list_path}: label {max(bad)} is out of range for dataset.num_classes="
                          f"{num_classes} (labels must be 0 .. {num_classes - 1})")
