"""The per-epoch training checkpoint: everything needed to continue a run as if it had never
stopped (model, optimizer, schedule, random states, history, epoch, freeze phase), written
atomically and read back with `weights_only=True` (only tensors and plain Python values, so a
checkpoint cannot run code)."""

import random
from pathlib import Path

import numpy as np
import torch

from tlbench import atomic

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


def rng_state(train_loader) -> dict:
    """Python, NumPy, torch (CPU and every CUDA device) and the train loader's own generators:
    the shuffle order and the device-side augmentation draws."""
    version, mt_state, gauss = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(mt_state), gauss],
        "numpy": [name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "loader": [g.get_state() for g in loader_generators(train_loader)],
    }


def restore_rng(state: dict, train_loader) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generators = loader_generators(train_loader)
    if len(generators) != len(state["loader"]):
        raise ValueError(f"the checkpoint holds {len(state['loader'])} data-order generator states, "
                         f"this train loader has {len(generators)}: was data.pipeline changed?")
    for generator, saved in zip(generators, state["loader"]):
        generator.set_state(saved)


def loader_generators(loader) -> list[torch.Generator]:
    """DeviceBatches (the tensor path) exposes `generators`; a torch DataLoader its `generator`.
    The per-image transforms of a DataLoader with num_workers=0 draw from torch's global RNG."""
    if hasattr(loader, "generators"):
        return list(loader.generators)
    generator = getattr(loader, "generator", None)
    return [generator] if generator is not None else []


def save(state: dict, path: Path) -> Path:
    return write_atomic({"format": FORMAT, **state}, path)


def write_atomic(tensors, path: Path) -> Path:
    """torch.save through atomic.write_atomic: a kill at any moment leaves the previous file or
    the new one, never a torn file."""
    return atomic.write_atomic(path, lambda handle: torch.save(tensors, handle))


def load(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} has checkpoint format {state.get('format')}, this tlbench reads {FORMAT}")
    return state
