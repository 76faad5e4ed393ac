"""Hugging Face `datasets` sets (dataset=hf, the `hf` extra): a Hub name, or a local copy that loads
offline: a save_to_disk folder, a folder of Parquet or Arrow files, an imagefolder tree. Each split
becomes (PIL image, int label) rows whose labels are read without decoding any image, so it is
decoded once into the tensor cache like any other set."""

import contextlib
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from tlbench.data.splits import DataSplits, offline
from tlbench.errors import BadImageError, ConfigError, DataNotFoundError

CACHE_FOLDER = "huggingface"  # under data_dir: Hub downloads and datasets' Arrow copies of local files
OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")  # what datasets and huggingface_hub take as true
SPLIT_KEYS = {"train": "train_split", "test": "test_split", "val": "val_split_name"}


def hf(path, data_dir, config_name=None, revision=None, data_files=None, train_split="train", test_split="test",
       val_split_name=None, image_column="image", label_column="label", download=True,
       image_size=224) -> DataSplits:
    """`val_split_name`: an official validation split; None = carve one from train (dataset.val_split)."""
    datasets = _import_datasets()
    cache = Path(data_dir).expanduser() / CACHE_FOLDER
    loaded, how = _load(datasets, path, config_name, revision, _plain(data_files), cache, download)
    names = {"train": train_split, "test": test_split, **({"val": val_split_name} if val_split_name else {})}
    chosen = {split: _split(loaded, path, split, wanted) for split, wanted in names.items()}
    chosen = {split: _image_rows(rows, image_column, path, names[split]) for split, rows in chosen.items()}
    classes, targets, labels_from = _labels(chosen, label_column, path, names)
    where = f"{path}{f' ({config_name})' if config_name else ''}"
    wrapped = {split: HFImages(rows, image_column, targets[split], f"{where}[{names[split]}]",
                               _cache_key(where, revision, names[split], rows, image_column, label_column, classes))
               for split, rows in chosen.items()}
    splits = ", ".join(f"{split}={name}" for split, name in names.items())
    source = (f"Hugging Face {how} {where} ({splits}; classes {labels_from}; "
              f"fingerprint {chosen['train']._fingerprint})")
    return DataSplits(wrapped["train"], wrapped["test"], classes, image_size, source, val=wrapped.get("val"))


class HFImages(Dataset):
    """One split's (RGB PIL image, int label) rows. `targets` comes from the label column alone, and
    `source_fingerprint` keys the tensor cache (tensor_data.fingerprint): it changes with the data."""

    encoded_images = True  # a row may not decode: the PIL path reads them all first when skipping (image_check)

    def __init__(self, rows, image_column: str, targets: list[int], where: str, source_fingerprint: str):
        self.rows = rows.select_columns([image_column])  # a row read decodes its image and nothing else
        self.image_column, self.targets, self.where = image_column, targets, where
        self.source_fingerprint = source_fingerprint

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        try:
            image = self.rows[int(index)][self.image_column].convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise BadImageError(f"cannot decode the image of row {index} of {self.where} ({type(err).__name__}: "
                                f"{err}); fix the data set, or set dataset.on_bad_image=skip to leave such rows out "
                                "(result.json counts them)", path=f"{self.where} row {index}") from err
        return image, self.targets[index]


def _plain(value):
    """A config's mapping or list as the dict or list datasets tests for (OmegaConf's containers are neither)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


def _import_datasets():
    try:
        import datasets
    except ImportError as err:
        raise ConfigError("dataset=hf needs the Hugging Face `datasets` package: pip install 'tlbench[hf]' "
                          "(or pip install 'datasets>=3')") from err
    return datasets


def _load(datasets, path: str, config_name, revision, data_files, cache: Path, download: bool):
    """The set as a DatasetDict, and how it was found (for DataSplits.source)."""
    local = Path(path).expanduser()
    if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
        unused = [key for key, value in (("config_name", config_name), ("revision", revision),
                                         ("data_files", data_files)) if value is not None]
        if unused:
            raise ConfigError(f"dataset.path={path!r} is a save_to_disk folder, which holds its splits as saved: "
                              f"leave {', '.join(f'dataset.{key}' for key in unused)} at null")
        return datasets.load_from_disk(str(local)), "save_to_disk folder"
    if not local.exists() and (local.is_absolute() or path.startswith((".", "~"))):
        raise DataNotFoundError(f"dataset.path={path!r} does not exist; point it at a local copy ({_COPIES}) or "
                                "at a Hugging Face Hub name")
    hub = not local.exists() and path not in _packaged()
    offline_now = not download or offline() or _offline_env()
    try:
        with _hub_offline(offline_now):
            loaded = datasets.load_dataset(str(local) if local.exists() else path, name=config_name,
                                           revision=revision, data_files=data_files,
                                           cache_dir=str(cache))
    except (ConnectionError, FileNotFoundError) as err:
        why = ("offline mode is set" if offline_now and hub else f"{type(err).__name__}: {err}").splitlines()[0]
        raise DataNotFoundError(_not_found_hint(path, cache, hub, why)) from err
    except ValueError as err:  # e.g. an unknown config name: the library's message lists the ones there are
        raise ConfigError(f"dataset.path={path!r} (dataset.config_name={config_name!r}) cannot be loaded: "
                          f"{err}") from err
    if not isinstance(loaded, datasets.DatasetDict):
        raise ConfigError(f"dataset.path={path!r} is a single split without a name; load it with "
                          "dataset.data_files={train: ..., test: ...}, or save a DatasetDict")
    return loaded, ("Hub data set" if hub else "local copy")


_COPIES = ("a folder written by Dataset(Dict).save_to_disk, a folder of Parquet or Arrow files (e.g. a download "
           "of the Hub repository), or an imagefolder tree train/<class>/*.png, test/<class>/*.png")


def _not_found_hint(path, cache: Path, hub: bool, why: str) -> str:
    looked = f"the Hub data set {path!r} is not in {cache}" if hub else f"{path!r} could not be loaded"
    return (f"{looked} and could not be fetched ({why}). Supply it: set dataset.path to a local copy ({_COPIES}); "
            "or go online (unset TLBENCH_OFFLINE, HF_HUB_OFFLINE and HF_DATASETS_OFFLINE, dataset.download=true) "
            f"to download it into {cache}")


def _packaged() -> set[str]:
    """datasets' own builders (imagefolder, parquet, arrow, ...): names that load local data_files."""
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    return set(_PACKAGED_DATASETS_MODULES)


def _offline_env() -> bool:
    return any(os.environ.get(name, "").upper() in OFFLINE_VALUES for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@contextlib.contextmanager
def _hub_offline(on: bool):
    """datasets and huggingface_hub read HF_HUB_OFFLINE once, when imported: a flag set later (tlbench's
    offline(), dataset.download=false, an environment changed after import) would still let them try
    the Hub, five retries over ~25 s before the cache is even looked at. Their flags are set for the call."""
    if not on:
        yield
        return
    from datasets import config
    from huggingface_hub import constants

    saved = config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _split(loaded, path, split: str, wanted: str):
    if wanted not in loaded:
        raise ConfigError(f"dataset.{SPLIT_KEYS[split]}={wanted!r}: {path} has no such split; it has "
                          f"{', '.join(loaded)}")
    return loaded[wanted]


def _image_rows(rows, column: str, path, split_name: str):
    """The rows with `column` as a decoding Image feature: file paths and image bytes are cast to one."""
    from datasets import Image as ImageFeature

    _check_column(rows, column, "image_column", path, split_name)
    feature = rows.features[column]
    if isinstance(feature, ImageFeature) and feature.decode:
        return rows
    try:
        return rows.cast_column(column, ImageFeature())
    except (TypeError, ValueError) as err:
        raise ConfigError(f"dataset.image_column={column!r} of {path} holds {feature}, not images, file paths or "
                          f"image bytes ({type(err).__name__}: {err})") from err


def _check_column(rows, column: str, key: str, path, split_name: str) -> None:
    if column not in rows.column_names:
        columns = ", ".join(f"{name} ({type(feature).__name__})" for name, feature in rows.features.items())
        raise ConfigError(f"dataset.{key}={column!r} is not a column of {path} ({split_name} split); its columns: "
                          f"{columns}")


def _labels(chosen: dict, column: str, path, names: dict) -> tuple[list[str], dict[str, list[int]], str]:
    """(class names, {split: int labels}, where the classes came from): a ClassLabel feature's names,
    else the sorted distinct values over all the splits used, numbered in that order."""
    from datasets import ClassLabel, Value

    for split, rows in chosen.items():
        _check_column(rows, column, "label_column", path, names[split])
    features = {split: rows.features[column] for split, rows in chosen.items()}
    raw = {split: rows.select_columns([column]).to_dict()[column] for split, rows in chosen.items()}  # no image decoded
    train = features["train"]
    if isinstance(train, ClassLabel):
        for split, feature in features.items():
            if feature != train:
                raise ConfigError(f"dataset.label_column={column!r}: the {names[split]} split's classes "
                                  f"{feature.names} differ from the {names['train']} split's {train.names}")
            if -1 in raw[split]:  # datasets' "no label", e.g. a competition's hidden test labels
                raise ConfigError(f"dataset.label_column={column!r}: {raw[split].count(-1)} rows of the "
                                  f"{names[split]} split have no label (-1); choose another "
                                  f"dataset.{SPLIT_KEYS[split]}")
        return list(train.names), raw, f"from the ClassLabel feature {column!r}"
    if not all(isinstance(feature, Value) for feature in features.values()):
        raise ConfigError(f"dataset.label_column={column!r} of {path} holds {train}, not one class per image "
                          "(a ClassLabel, integers or strings)")
    values = sorted(set().union(*map(set, raw.values())) - {None})
    if any(None in labels for labels in raw.values()):
        raise ConfigError(f"dataset.label_column={column!r} of {path} has rows without a label")
    index = {value: i for i, value in enumerate(values)}
    targets = {split: [index[value] for value in labels] for split, labels in raw.items()}
    return [str(value) for value in values], targets, f"numbered from the sorted distinct values of {column!r}"


def _cache_key(where: str, revision, split_name: str, rows, image_column: str, label_column: str,
               classes: list[str]) -> str:
    """datasets' own fingerprint of the split (it follows the data: a save_to_disk folder's state, the
    local files' modification times, the Hub revision), with what tlbench reads of it."""
    parts = [where, str(revision), split_name, rows._fingerprint, image_column, label_column, *classes]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
