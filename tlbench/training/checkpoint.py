"""The per-epoch training checkpoint: everything needed to continue a run as if it had never
stopped (model, optimizer, schedule, random states, history, epoch, freeze phase), written
atomically and read back with `weights_only=True` (only tensors and plain Python values, so a
checkpoint cannot run code).

Checkpoints are portable between machines: one written on N GPUs resumes on M GPUs or on the CPU
(and back). `portable_rng` states the rule: every random state that applies on this machine is
restored; one that cannot be (a generator saved on another device type, a CUDA state the
checkpoint lacks) is reseeded deterministically, and the run records which in `resumes`."""

import hashlib
import random
from pathlib import Path

import numpy as np
import torch

from tlbench.records import atomic

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 2  # 2: the device of every generator state is stored with it, CUDA for the job's GPU only
READS = (1, 2)


def rng_state(train_loader) -> dict:
    """Python, NumPy, torch's CPU generator, the CUDA generator of the job's GPU (None when CUDA
    never started: a CPU run draws nothing from it) and the train loader's own generators (the
    shuffle order and the device-side augmentation draws), each with its device type."""
    version, mt_state, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt_state), gauss],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": _cuda_state(),
        "loader": [{"device": g.device.type, "state": g.get_state()} for g in loader_generators(train_loader)],
    }


def _cuda_state() -> dict | None:
    if not torch.cuda.is_initialized():
        return None
    index = torch.cuda.current_device()  # the job's GPU: run.py makes it the current device
    return {"device": f"cuda:{index}", "state": torch.cuda.get_rng_state(index)}


def restore_rng(state: dict, train_loader, device=None) -> list[str]:
    """Puts back the random states `portable_rng` finds applicable on `device` and reseeds the
    rest; returns what was reseeded. `device` defaults to the one the state was fitted for (a
    state passed through `portable_rng` is applied as it is), else the current CUDA device when
    CUDA is in use, else the CPU."""
    if device is None:
        device = state["fitted_for"] if "fitted_for" in state else _current_device()
    state, reseeded = portable_rng(state, train_loader, torch.device(device))
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        _set_cuda(state["cuda"])
    for generator, saved in zip(loader_generators(train_loader), state["loader"]):
        if "state" in saved:
            generator.set_state(saved["state"])
        else:
            generator.manual_seed(saved["seed"])
    return reseeded


def portable_rng(state: dict, train_loader, device: torch.device) -> tuple[dict, list[str]]:
    """The saved random states fitted to a run on `device`, and what had to be reseeded.

    - Python, NumPy and torch's CPU generator: always restored.
    - CUDA: on a GPU, the state of the GPU the checkpoint's job trained on goes to the GPU this
      job trains on, whatever their numbers (a format-1 checkpoint saved every GPU's state and
      not which one trained: the state with this GPU's number is used, if there is one). On the
      CPU or MPS the CUDA state is not used.
    - Each loader generator: its saved state if it was saved on the same device type (format 1:
      if its size matches, e.g. 5056 bytes for a CPU generator, 16 for a CUDA one).
    Anything else is reseeded from a digest of the saved state it replaces, so the same
    checkpoint always resumes the same way and each epoch's checkpoint differently."""
    if state.get("fitted_for") == str(device):
        return state, []
    fitted, reseeded = dict(state, fitted_for=str(device), cuda=None), []
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        fitted["cuda"], note = _fit_cuda(state.get("cuda"), index, state["torch"])
        reseeded += [note] if note else []
    generators = loader_generators(train_loader)
    if len(generators) != len(state["loader"]):
        raise ValueError(f"the checkpoint holds {len(state['loader'])} data-order generator states, "
                         f"this train loader has {len(generators)}: was data.pipeline changed?")
    fitted["loader"] = []
    for i, (generator, saved) in enumerate(zip(generators, state["loader"])):
        entry, note = _fit_generator(generator, saved)
        fitted["loader"].append(entry)
        if note:
            reseeded.append(f"train loader generator {i + 1}/{len(generators)} ({note})")
    return fitted, reseeded


def describe(reseeded: list[str]) -> str:
    """For result.json's `resumes` entry."""
    return f"partly reseeded: {'; '.join(reseeded)}" if reseeded else "restored"


def _fit_cuda(saved, index: int, cpu_state: torch.Tensor) -> tuple[dict, str | None]:
    here = f"cuda:{index}"
    if isinstance(saved, dict):  # format 2: the state of the GPU its job trained on
        return {**saved, "device": here}, None
    if saved and index < len(saved):  # format 1: every GPU of the machine that wrote it
        return {"device": here, "state": saved[index]}, None
    why = (f"the checkpoint holds CUDA states for {len(saved)} GPU(s), none for {here}" if saved
           else "the checkpoint was written without CUDA")
    return {"device": here, "seed": _seed_from(cpu_state, b"cuda")}, f"CUDA generator of {here}: {why}"


def _fit_generator(generator: torch.Generator, saved) -> tuple[dict, str | None]:
    here = generator.device.type
    if not isinstance(saved, dict):  # format 1: a bare state; its size tells the device type apart
        saved = {"device": here if saved.numel() == generator.get_state().numel() else "another device",
                 "state": saved}
    if saved["device"] == here:
        return saved, None
    return ({"device": here, "seed": _seed_from(saved["state"])},
            f"saved on {saved['device']} ({saved['state'].numel()} bytes), now on {here}")


def _set_cuda(entry: dict) -> None:
    index = torch.device(entry["device"]).index
    if "state" in entry:
        torch.cuda.set_rng_state(entry["state"], index)
    else:
        with torch.cuda.device(index):
            torch.cuda.manual_seed(entry["seed"])


def _seed_from(state: torch.Tensor, salt: bytes = b"") -> int:
    digest = hashlib.sha256(state.contiguous().view(torch.uint8).numpy().tobytes() + salt).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch generator takes it


def _current_device() -> torch.device:
    if torch.cuda.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def loader_generators(loader) -> list[torch.Generator]:
    """DeviceBatches (the tensor path) exposes `generators`; a torch DataLoader its `generator`.
    The per-image transforms of a DataLoader with num_workers=0 draw from torch's global RNG."""
    if hasattr(loader, "generators"):
        return list(loader.generators)
    generator = getattr(loader, "generator", None)
    return [generator] if generator is not None else []


def portable(state: dict, train_loader, device: torch.device, kernels: dict) -> tuple[dict, list[str]]:
    """A loaded checkpoint fitted to a run on `device`, and what was reseeded: its random states
    (`portable_rng`) and its optimizer's kernels (`kernels`: the `fused` and `foreach` this run's
    optimizer is built with; torch's load_state_dict would bring back the writer's otherwise,
    e.g. CUDA's fused kernels into a CPU run)."""
    rng, reseeded = portable_rng(state["rng"], train_loader, device)
    optimizer = dict(state["optimizer"])
    optimizer["param_groups"] = [{**group, **kernels} for group in optimizer["param_groups"]]
    return {**state, "rng": rng, "optimizer": optimizer}, reseeded


def save(state: dict, path: Path) -> Path:
    return write_atomic({"format": FORMAT, **state}, path)


def write_atomic(tensors, path: Path) -> Path:
    """torch.save through atomic.write_atomic: a kill at any moment leaves the previous file or
    the new one, never a torn file."""
    return atomic.write_atomic(path, lambda handle: torch.save(tensors, handle))


def load(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") not in READS:
        raise ValueError(f"{path} has checkpoint format {state.get('format')}, this tlbench reads "
                         f"{', '.join(map(str, READS))}")
    return state
