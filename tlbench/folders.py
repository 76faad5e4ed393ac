"""Image files on disk: ImageFolder trees and `<path> <label>` list files, validated up front
so that a typo or a missing folder fails at startup, naming the path and the fix."""

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from tlbench.errors import BadImageError, ConfigError, DataNotFoundError

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


def read_file_list(list_path, allow_absolute_paths: bool = False) -> list[tuple[Path, int]]:
    """Relative paths resolve against the list's own folder, and may not leave it unless
    `allow_absolute_paths` (a shared list must not point a run at arbitrary files)."""
    list_path = Path(list_path).expanduser()
    if not list_path.is_file():
        raise DataNotFoundError(f"file list {str(list_path)!r} does not exist; set dataset.train_list / "
                                "dataset.val_list to text files of `<image path> <integer label>` lines")
    base = list_path.parent.resolve()
    samples = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        samples.append(_parse_line(line, f"{list_path}:{number}", base, allow_absolute_paths))
    if not samples:
        raise DataNotFoundError(f"file list {list_path} has no samples")
    return samples


def _parse_line(line, where, base: Path, allow_absolute_paths) -> tuple[Path, int]:
    parts = line.rsplit(maxsplit=1)
    if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
        raise ConfigError(f"{where}: cannot parse {line!r}; expected `<image path> <integer label>`")
    raw, label = parts[0].strip(), int(parts[1])
    if label < 0:
        raise ConfigError(f"{where}: label {label} is negative; labels are 0 .. num_classes-1")
    path = (base / raw).resolve()
    if not allow_absolute_paths and not path.is_relative_to(base):
        raise ConfigError(f"{where}: {raw!r} points outside the list's folder {base}; move the images under "
                          "it or set dataset.allow_absolute_paths=true")
    if not path.is_file():
        raise DataNotFoundError(f"{where}: image {raw!r} does not exist (resolved to {path})")
    return path, label


def check_labels(samples, num_classes: int, list_path) -> None:
    bad = [label for _, label in samples if label >= num_classes]
    if bad:
        raise ConfigError(f"{list_path}: label {max(bad)} is out of range for dataset.num_classes="
                          f"{num_classes} (labels must be 0 .. {num_classes - 1})")
