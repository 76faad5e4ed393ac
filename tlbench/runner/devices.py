"""Device choice, mixed precision and seeding: passed explicitly, never global."""

import contextlib
import logging
import os
import platform
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from tlbench.errors import ConfigError

log = logging.getLogger("tlbench")
CLAIMS_FOLDER = ".devices"  # in the sweep folder: one lock file per entry of `devices`


def resolve_device(requested: str, setting: str = "device") -> torch.device:
    """`auto` picks cuda, then Apple mps, then cpu (the order of write-up D). `setting`: the
    config key named in errors."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ConfigError(f"{setting}={requested!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={requested!r} but CUDA is not available here; use device=auto or device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting}={requested!r} but this machine has {_gpus(torch.cuda.device_count())}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting}={requested!r} but MPS is not available here; use device=auto or device=cpu")
    return device


def check_devices(device: str, devices) -> list[torch.device]:
    """Every device this run may train on (`device`, or each entry of `devices`), checked at
    startup: a GPU number beyond those present fails now, not with a CUDA error after decoding."""
    if not devices:
        return [resolve_device(device)]
    if isinstance(devices, str) or not all(isinstance(name, str) for name in devices):
        raise ConfigError(f"devices={devices!r} must be a list of devices, e.g. devices=[cuda:0,cuda:1]")
    return [resolve_device(name, f"devices[{i}]") for i, name in enumerate(devices)]


def _gpus(count: int) -> str:
    """`2 GPUs: use cuda:0, cuda:1`, naming CUDA_VISIBLE_DEVICES when it hides some."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = ", ".join(f"cuda:{i}" for i in range(count))
    hidden = f" visible (CUDA_VISIBLE_DEVICES={visible})" if visible else ""
    return f"{count} GPU{'s' * (count != 1)}{hidden}: use {names}"


def select(device: torch.device) -> None:
    """Makes the job's GPU the process's current CUDA device, so what allocates on "the current
    device" (pinned host memory, the DataLoader's pin-memory thread, cuDNN and cuBLAS handles)
    does so there instead of opening a context on GPU 0. A no-op off CUDA."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def job_device(device: str, devices: list | None, job_num: int | None) -> str:
    """With a `devices` list, job i of a sweep takes devices[i mod N]; a single run takes the
    first. Without one, `device` as given. Parallel jobs claim a free device instead
    (`claim_device`); this is its fallback when there is no sweep folder to claim in."""
    if not devices:
        return device
    return str(list(devices)[(job_num or 0) % len(devices)])


@contextlib.contextmanager
def claim_device(device: str, devices: list | None, job_num: int | None, claims_dir: Path | None,
                 poll_s: float = 1.0):
    """Yields the device this job trains on, held for the job's whole run.

    Jobs that run side by side on this machine (`claims_dir`: a folder their sweep shares)
    claim a free entry of `devices` with a lock file per entry: job i tries devices[i mod N]
    first, then the others in order, and waits when all are taken. So a slow job never has a
    second one queued behind it on its GPU while another GPU idles (i mod N would). A device
    listed twice takes two jobs at once. The OS drops a lock when its process dies, so a killed
    job frees its device. Without `devices`, or without `claims_dir`: `job_device`'s choice."""
    if not devices or claims_dir is None or job_num is None:
        yield job_device(device, devices, job_num)
        return
    names = [str(name) for name in devices]
    first = job_num % len(names)
    order = [(i, names[i]) for i in [*range(first, len(names)), *range(first)]]
    Path(claims_dir).mkdir(parents=True, exist_ok=True)
    locks = {i: FileLock(Path(claims_dir) / claim_file(i, name)) for i, name in order}
    waiting_since = None
    while True:
        for i, name in order:
            try:
                locks[i].acquire(timeout=0)
            except Timeout:
                continue
            waited = f" after waiting {time.monotonic() - waiting_since:.0f} s" if waiting_since is not None else ""
            log.info("job %d claimed devices[%d]=%s%s", job_num, i, name, waited)
            try:
                yield name
            finally:
                locks[i].release()
            return
        if waiting_since is None:
            waiting_since = time.monotonic()
            log.info("job %d: every device of devices=[%s] is taken by another job of the sweep; waiting for one",
                     job_num, ",".join(names))
        time.sleep(poll_s)


def claim_file(position: int, name: str) -> str:
    """The lock file of entry `position` of `devices`: `1-cuda-1.lock`."""
    return f"{position}-{re.sub(r'[^a-z0-9.]', '-', name)}.lock"


def set_threads(requested, launcher: dict | None) -> int:
    """CPU threads for this run. `auto`: the launcher's share — submitit's `cpus_per_task`, or
    the cores divided by joblib's `n_jobs` (so parallel jobs do not oversubscribe the cores) —
    else torch's default. Returns the number in use, for the JSON."""
    if requested != "auto":
        if not isinstance(requested, int) or requested < 1:
            raise ConfigError(f"threads={requested!r} must be a positive integer or auto")
        torch.set_num_threads(requested)
        return requested
    share = _launcher_share(launcher or {}, cores())
    if share:
        torch.set_num_threads(share)
    return torch.get_num_threads()


def cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _launcher_share(launcher: dict, cores: int) -> int | None:
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    running = parallel_jobs(launcher, cores)
    return max(1, cores // running) if running != 1 else None


def parallel_jobs(launcher: dict, cores: int) -> int:
    """How many jobs the launcher runs at once on this machine: joblib's n_jobs (-1 = every core,
    -2 = all but one, as joblib counts), else 1."""
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int) and n_jobs != 0:
        return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return 1


def resolve_flag(value, device: torch.device) -> bool:
    """`auto` flags (amp) are on for CUDA only: on CPU bf16 autocast is slower."""
    if value == "auto":
        return device.type == "cuda"
    if isinstance(value, bool):
        return value
    raise ConfigError(f"expected true, false or auto, got {value!r}")


def resolve_channels_last(value, device: torch.device, depthwise: bool) -> bool:
    """`channels_last=auto`: on for CUDA, and on a CPU for a model with depthwise convolutions
    (`depthwise`: models.has_depthwise_conv), which oneDNN runs 1.3-1.6x faster in channels_last
    (tf_efficientnet_lite0/1, efficientnet_b0, mobilenetv3 at 64 px, training and evaluation, 2-core
    CPU, docs/results/speed.md); resnet18 and ViTs gain nothing there, so they stay NCHW."""
    if value == "auto":
        return device.type == "cuda" or (device.type == "cpu" and depthwise)
    return resolve_flag(value, device)


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


def env_info(device, device_name: str) -> dict:
    """result.json `env`: the software and the machine a run used."""
    import timm
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "device": str(device),
            "device_name": device_name, "git_sha": _git_sha(), "hostname": socket.gethostname(), "pid": os.getpid()}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
