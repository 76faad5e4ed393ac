"""fast.ai's ImageNet subsets (Imagewoof, Imagenette) at 160 px, checked as fast.ai checks them."""

import hashlib
import os
from pathlib import Path

from tlbench.data.local import imagefolder
from tlbench.data.splits import DataSplits, offline
from tlbench.errors import DataNotFoundError

# fast.ai's archives with the check fast.ai publishes for each (fastai/data/checks.txt): the size
# in bytes and the MD5 of the first MiB. CIFAR downloads are checked by torchvision (full MD5).
FASTAI_ARCHIVES = {
    "imagewoof": ("https://s3.amazonaws.com/fast-ai-imageclas/imagewoof2-160.tgz", 92612825,
                  "3559b194123981a540b87132dbda412f"),
    "imagenette": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", 99003388,
                   "c475f8f7617a200ba35b9facc48443c3"),
}



def _fastai(name, data_dir, root, download, image_size) -> DataSplits:
    url = FASTAI_ARCHIVES[name][0]
    extracted = Path(root).expanduser() if root else Path(data_dir).expanduser() / Path(url).name.removesuffix(".tgz")
    if not (extracted / "train").is_dir() and not root:
        if not download or offline():
            raise DataNotFoundError(_fastai_hint(name, extracted, url, "offline mode is set" if download else "download=false"))
        _fetch_fastai(name, extracted.parent)
    return imagefolder(extracted, image_size)


def _fetch_fastai(name, folder: Path) -> None:
    """Downloads (unless already there), checks against fast.ai's published size and hash, then
    extracts. A file that fails the check is renamed `.rejected`, kept, and never extracted."""
    from torchvision.datasets.utils import download_url, extract_archive

    url, size, md5_first_mib = FASTAI_ARCHIVES[name]
    archive = folder / Path(url).name
    try:
        if not archive.is_file():
            download_url(url, str(folder))
    except (OSError, RuntimeError) as err:
        raise DataNotFoundError(_fastai_hint(name, folder / archive.stem, url, f"download failed: {err}")) from err
    found = (archive.stat().st_size, _md5_first_mib(archive))
    if found != (size, md5_first_mib):
        rejected = archive.with_name(archive.name + ".rejected")
        os.replace(archive, rejected)
        raise DataNotFoundError(f"{archive} is not fast.ai's {name} archive: size {found[0]} and MD5 of the first MiB "
                                f"{found[1]}, expected {size} and {md5_first_mib} (fast.ai's published check); it is "
                                f"kept as {rejected}. Delete it and run again to download afresh, or set dataset.root "
                                f"to an extracted copy")
    extract_archive(str(archive), str(folder))


def _md5_first_mib(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.md5(handle.read(2**20)).hexdigest()


def _fastai_hint(name, expected, url, why) -> str:
    return (f"{name} is not in {expected} and could not be fetched from {url} ({why}). Supply it: extract "
            f"that archive into data_dir, or set dataset.root to a folder holding its train/ and val/.")


def imagewoof(data_dir, root=None, download=True, image_size=160) -> DataSplits:
    return _fastai("imagewoof", data_dir, root, download, image_size)


def imagenette(data_dir, root=None, download=True, image_size=160) -> DataSplits:
    return _fastai("imagenette", data_dir, root, download, image_size)
