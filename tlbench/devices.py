"""Device choice, mixed precision and seeding: passed explicitly, never global."""

import os
import random

import numpy as np
import torch

from tlbench.errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    """`auto` picks cuda, then Apple mps, then cpu (the order of write-up D)."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"device={requested!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={requested!r} but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={requested!r} but MPS is not available here; use device=auto or device=cpu")
    return device


def job_device(device: str, devices: list | None, job_num: int | None) -> str:
    """With a `devices` list, job i of a sweep takes devices[i mod N] (parallel launchers put one
    job on each GPU); a single run takes the first. Without one, `device` as given."""
    if not devices:
        return device
    return str(list(devices)[(job_num or 0) % len(devices)])


def set_threads(requested, launcher: dict | None) -> int:
    """CPU threads for this run. `auto`: the launcher's share — submitit's `cpus_per_task`, or
    the cores divided by joblib's `n_jobs` (so parallel jobs do not oversubscribe the cores) —
    else torch's default. Returns the number in use, for the JSON."""
    if requested != "auto":
        if not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"threads={requested!r} must be a positive integer or auto")
        torch.set_num_threads(requested)
        return requested
    share = _launcher_share(launcher or {}, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else os.cpu_count() or 1)
    if share:
        torch.set_num_threads(share)
    return torch.get_num_threads()


def _launcher_share(launcher: dict, cores: int) -> int | None:
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 1:
        running = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = every core
        return max(1, cores // running)
    return None


def resolve_flag(value, device: torch.device) -> bool:
    """`auto` flags (amp, channels_last) are on for CUDA only: on CPU bf16 autocast is slower."""
    if value == "auto":
        return device.type == "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f"expected true, false or auto, got {value!r}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    return platform.processor() or platform.machine()


def set_deterministic(requested: bool, device: torch.device) -> bool:
    """`deterministic=true`: deterministic kernels (cuDNN and cuBLAS included) at some speed cost;
    an op with no deterministic version warns. CPU training is deterministic either way."""
    if not isinstance(requested, bool):
        raise ConfigError(f"deterministic={requested!r} must be true or false")
    if requested:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = requested  # set both ways: a worker process may run many jobs
    torch.use_deterministic_algorithms(requested, warn_only=True)
    return requested


def seed_everything(seed: int) -> dict:
    """Seeds Python, NumPy and torch from `seed`; returns the seeds used, for the JSON."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return {"python": seed, "numpy": seed % 2**32, "torch": seed, "data_order": seed}
