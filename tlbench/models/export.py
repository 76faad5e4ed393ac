"""A trained model kept in its run folder, usable without the run's config: `<stem>.safetensors`
(the plain state_dict) and `<stem>.json` (how to rebuild and feed it). `model` is the final
epoch's model, `best` the val-chosen epoch's, `ema` the weight EMA after the last step (`ema.decay` > 0).
safetensors rather than torch.save: reading it
cannot run code, and other tools read it too.

`<stem>.json` holds the meta dict given to `save_model`, plus `format` and `weights`:

    {"format": "tlbench-model/1",
     "weights": "model.safetensors",               # next to the JSON
     "model": {"name": "resnet18",                 # as for models.build_model
               "source": "timm",                   # timm | torchvision
               "kwargs": null},                    # the builder's extra arguments, or null
     "classes": ["cat", "dog"],                    # class names in label order
     "preprocessing": {"image_size": 32,           # images are resized to this side first (mode squash), or
                       # mode crop: shorter side to floor(image_size / crop_fraction), central square (absent: squash)
                       "input_size": 32,           # then to the model's input side (null = image_size)
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
     "run_id": "...", "epoch": 5, "which": "final",  # final | best | ema
     "test_acc": 0.93}                             # at that epoch, or null

The safetensors file is written first and the JSON last, both atomically: a JSON on disk means
its weights are complete."""

import json
from pathlib import Path

import safetensors.torch
from torch import nn

from tlbench.records import atomic
from tlbench.data import augment
from tlbench import models, specs
from tlbench.models import weights as weight_files
from tlbench.errors import ConfigError, DataNotFoundError, WeightsMismatchError

FORMAT = "tlbench-model/1"
STEMS = {"final": "model", "best": "best", "ema": "ema"}  # --which -> the file stem in a run folder
KEYS_NAMED = 5  # mismatched state_dict keys named in an error


def save_model(folder, stem: str, state_dict: dict, meta: dict) -> Path:
    """Writes `<folder>/<stem>.safetensors` and `<folder>/<stem>.json`; returns the JSON's path."""
    folder = Path(folder)
    weights = folder / f"{stem}.safetensors"
    tensors = plain_tensors(state_dict)
    atomic.write_atomic(weights, lambda handle: handle.write(safetensors.torch.save(tensors)))
    card = {**meta, "format": FORMAT, "weights": weights.name}
    return atomic.write_atomic(folder / f"{stem}.json", lambda handle: json.dump(card, handle, indent=1),
                               binary=False)


def plain_tensors(state_dict: dict) -> dict:
    """Contiguous CPU tensors (a channels_last model's are not), none sharing memory with another:
    safetensors refuses both."""
    plain, storages = {}, set()
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in storages:  # tied weights: stored once per name
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        plain[key] = tensor
    return plain


def load_model(path, which: str = "final") -> tuple[nn.Module, dict]:
    """`path`: a run folder (reads `model.json`, or `best.json` for which="best") or a model JSON.
    Returns the model in eval mode on the CPU, and the JSON's contents."""
    card_path = model_card(path, which)
    meta = read_meta(card_path)
    model = rebuild(meta, card_path)
    weights = card_path.parent / meta["weights"]
    if not weights.is_file():
        raise DataNotFoundError(f"{card_path} names weights {meta['weights']!r}, but {weights} does not exist; "
                                "copy it next to the JSON")
    try:
        state = safetensors.torch.load_file(weights)
    except Exception as err:  # safetensors raises its own error type for a torn or foreign file
        raise WeightsMismatchError(f"cannot read {weights} as safetensors ({err}); save the model again") from err
    load_strict(model, state, weights)
    return model.eval(), meta


def model_card(path, which: str) -> Path:
    """The model JSON that `path` (a run folder or the JSON itself) points to."""
    if which not in STEMS:
        raise ConfigError(f"which={which!r} is not known; use one of {', '.join(STEMS)}")
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist; give a run folder or its {STEMS[which]}.json")
    if not path.is_dir():
        return path
    card = path / f"{STEMS[which]}.json"
    if card.is_file():
        return card
    runs = sorted(found.parent.name for found in path.glob(f"*/{card.name}"))
    hint = f"; it looks like a sweep folder: give one of its runs, e.g. {path / runs[0]}" if runs else ""
    raise DataNotFoundError(
        f"{path} holds no saved model ({card.name}): the run may have failed or still be running, been run with "
        f"save_model=false{_SWITCHED_OFF.get(which, '')}, or by a tlbench older than {_SAVED_SINCE.get(which, 'model export')}"
        f"{hint}")


_SWITCHED_OFF = {"best": " or save_best=false", "ema": " or without a weight EMA (ema.decay=0)"}
_SAVED_SINCE = {"ema": "its EMA model files"}


def read_meta(card_path: Path) -> dict:
    try:
        meta = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read model file {card_path}: {err}; give a run folder or its model.json") from err
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != FORMAT:
        raise ConfigError(f"{card_path} has format {found!r}; this tlbench reads {FORMAT!r} (the model.json "
                          "next to a run's model.safetensors)")
    missing = [key for key in ("weights", "model", "classes", "preprocessing") if key not in meta]
    missing += [f"model.{key}" for key in ("name", "source") if key not in meta.get("model", {})]
    missing += [f"preprocessing.{key}" for key in ("image_size", "mean", "std") if key not in meta.get("preprocessing", {})]
    if missing:
        raise ConfigError(f"{card_path} lacks {', '.join(missing)}; it was not written by tlbench's save_model")
    return meta


def rebuild(meta: dict, card_path: Path) -> nn.Module:
    """The architecture alone: random weights, no download (pretrained=False)."""
    name, source = meta["model"]["name"], meta["model"]["source"]
    try:
        return models.build_model(name=name, source=source, num_classes=len(meta["classes"]), pretrained=False,
                                  kwargs=meta["model"].get("kwargs"), head_init="library").model
    except (ConfigError, TypeError, ValueError, RuntimeError) as err:  # unknown name, kwargs this version lacks
        raise ConfigError(f"cannot rebuild model {name!r} (source {source}) saved in {card_path}: {err} "
                          "(was it saved with another timm or torchvision version?)") from err


def load_strict(model: nn.Module, state: dict, weights: Path) -> None:
    missing, unexpected, reshaped = weight_files.mismatches(model, state)
    reshaped = [f"{key} {given} in the file, {expected} in the model" for key, given, expected in reshaped]
    problems = [f"{label} ({len(keys)}): {', '.join(keys[:KEYS_NAMED])}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)) if keys]
    if problems:
        raise WeightsMismatchError(f"{weights} does not fit the model its JSON describes; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def eval_transform(meta: dict):
    """One PIL image -> the normalized tensor the model saw in evaluation during training."""
    pre = meta["preprocessing"]
    preprocess = specs.Preprocess(pre.get("mode", "squash"), pre.get("crop_fraction", specs.DEFAULT_CROP_FRACTION))
    return augment.eval_transform(pre["image_size"], pre["mean"], pre["std"], input_size=pre.get("input_size"),
                                  preprocess=preprocess)

