"""CIFAR-10 and CIFAR-100 through torchvision (downloaded and checked by it), or a local ImageFolder copy."""

from pathlib import Path

from tlbench.data.local import imagefolder
from tlbench.data.splits import DataSplits, offline
from tlbench.errors import DataNotFoundError


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
