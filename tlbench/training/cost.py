"""What a run costs, recorded as result.json `cost`: parameters (total and trainable), forward
GMACs per image at the run's input size, training images/s, wall time and peak memory (host, and
the device's on CUDA). The report's accuracy-vs-cost frontier reads these."""

import resource
import sys

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_gmacs(model: nn.Module, input_size: int, device: torch.device) -> float:
    """Multiply-accumulates (1e9) of one forward pass of one image, counted by torch's
    FlopCounterMode (a multiply-add counts as 2 FLOPs there, hence / 2). In eval mode and without
    gradients, so no BatchNorm statistic moves and no random number is drawn; the mode is put back."""
    was_training = model.training
    model.eval()
    try:
        image = torch.zeros(1, 3, input_size, input_size, device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


def peak_host_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def peak_device_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def summary(total_params: int, epochs: list[dict], gmacs: float | None, input_size: int, wall_s: float,
            device: torch.device) -> dict:
    """The `cost` block: trainable params are the most any epoch trained (the freeze phase with
    the most), images/s the mean over epochs."""
    speeds = [e["images_per_s"] for e in epochs if e.get("images_per_s")]
    return {"total_params": total_params,
            "trainable_params": max((e["trainable_params"] for e in epochs if e.get("trainable_params") is not None),
                                    default=None),
            "gmacs_per_image": gmacs, "input_size": input_size,
            "train_images_per_s": sum(speeds) / len(speeds) if speeds else None,
            "wall_s": wall_s, "peak_host_mib": peak_host_mib(), "peak_device_mib": peak_device_mib(device)}
