"""Image files on disk: ImageFolder trees and `<path> <label>` list files, validated up front
so that a typo or a missing folder fails at startup, naming the path and the fix."""

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from tlbench.errors import BadImageError, ConfigError, DataNotFoundError

# Where a list entry was found: relative paths are tried against the list's folder, then the cwd.
LIST_FOLDER, WORKING_DIR, ABSOLUTE = "list folder", "working directory", "absolute"

log = logging.getLogger("tlbench")

# What tlbench-predict reads (through PIL); ImageFolder trees read torchvision's IMG_EXTENSIONS, without .gif.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def load_rgb(path) -> Image.Image:
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"cannot decode image {path} ({type(err).__name__}: {err}); delete or replace the file, "
                            "or set dataset.on_bad_image=skip to leave such files out (result.json counts "
                            "them)", path=path) from err


LAYOUTS = """tlbench reads one of these layouts:
  photos/<class>/*.jpg          one folder per class: tlbench holds out dataset.test_split of every
                                class as the test split (stratified, dataset.split_seed)
  photos/train/<class>/*.jpg    split folders with the same class folders in each: test/ is the test
  photos/test/<class>/*.jpg     split (a val/ without test/ becomes the test split)"""
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class Layout:
    """Where an ImageFolder root's splits are: `train`, and `test` with `test_source` saying which
    folder became test (for the log and data_info), or None: the test split is held out of train."""
    train: Path
    test: Path | None = None
    test_source: str = ""


def image_folder(split_dir: Path) -> ImageFolder:
    """One sub-folder per class; an empty class folder is an error, not a silently smaller set."""
    if not split_dir.is_dir():
        raise DataNotFoundError(f"{split_dir} does not exist. {LAYOUTS}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"{split_dir} has no class folders; put each class's images in "
                                f"{split_dir}/<class name>/. {LAYOUTS}")
    for name in classes:
        # ImageFolder's own list (no .gif), so that a folder it would find empty fails here, with the fix
        if not any(f.suffix.lower() in IMG_EXTENSIONS for f in (split_dir / name).rglob("*")):
            raise DataNotFoundError(f"class folder {split_dir / name} holds no images ({', '.join(IMG_EXTENSIONS)}); "
                                    "add images (convert .gif files to .png) or remove the folder")
    return ImageFolder(str(split_dir), loader=load_rgb)


def layout(root) -> Layout:
    """A root of class folders, or of split folders (train/ and test/ or val/, or train/ alone);
    anything else (split and class folders mixed, val/ without train/, no folders) fails now,
    showing the layouts."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"dataset.root={str(root)!r} does not exist. {LAYOUTS}")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    splits = [name for name in SPLIT_FOLDERS if name in folders]
    others = [name for name in folders if name not in SPLIT_FOLDERS]
    if not folders:
        raise DataNotFoundError(f"dataset.root={str(root)!r} holds no folders; put each class's images in a folder "
                                f"of its own. {LAYOUTS}")
    if not splits:
        return Layout(root)
    if others:
        raise DataNotFoundError(f"dataset.root={str(root)!r} mixes split folders ({', '.join(splits)}) with other "
                                f"folders ({', '.join(others[:5])}); use one layout. {LAYOUTS}")
    if "train" not in splits:
        raise DataNotFoundError(f"dataset.root={str(root)!r} has {'/ and '.join(splits)}/ but no train/. {LAYOUTS}")
    if "test" in splits and "val" in splits:  # the choice before issue 23, kept so that such runs keep their results
        log.warning("dataset.root=%s holds train/, val/ and test/: val/ is the test split and test/ is not read "
                    "(as in earlier versions); to test on test/, move val/ out of the root", root)
        return Layout(root / "train", root / "val", "the val/ folder (test/ is not read)")
    if "val" in splits:
        return Layout(root / "train", root / "val", "the val/ folder (there is no test/ folder)")
    if "test" in splits:
        return Layout(root / "train", root / "test", "the test/ folder")
    return Layout(root / "train")


def same_classes(train: ImageFolder, test: ImageFolder, root: Path, test_name: str) -> None:
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DataNotFoundError(f"train/ and {test_name}/ in {root} have different classes: only in train: "
                                f"{only_train or 'none'}; only in {test_name}: {only_test or 'none'}")


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
