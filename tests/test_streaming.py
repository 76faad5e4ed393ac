"""The streaming path: a split over `data.device_budget_gb` stays in host memory and is copied to
the device one batch at a time through two staging buffers allocated once (tensor_data.HostBatches).
On a CPU the same code runs with plain buffers and synchronous copies (forced with `stream=True`:
a CPU run never streams by itself); the CUDA tests at the end skip without a GPU:

    python -m pytest -q tests/test_streaming.py"""

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY

from tlbench.data import tensor_data
from tlbench.runner.run import run

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
AUGMENT = dict(pad=2, hflip=0.5, color_jitter=[0.2, 0.2, 0.2, 0.1], rotation_deg=15)  # every random op, as tlbench.bench
CPU = torch.device("cpu")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def random_split(count, size=8, seed=0) -> tensor_data.CachedSplit:
    generator = torch.Generator().manual_seed(seed)
    return tensor_data.CachedSplit(torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator),
                                   torch.randint(0, 4, (count,), generator=generator), None, False)


def loader(split, batch_size, device, stream, train=True, transform=None):
    size = split.images.shape[-1]
    transform = transform or tensor_data.BatchTransform(size, size, MEAN, STD, train=train, **(AUGMENT if train else {}))
    return tensor_data.DeviceBatches(split, batch_size, transform, device, train, 0, 2**30, stream=stream)


def epochs_of(batches, epochs) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    return [[(images.cpu(), labels.cpu()) for images, labels in batches] for _ in range(epochs)]


def assert_same_batches(resident, streamed, epochs=3):
    expected, got = epochs_of(resident, epochs), epochs_of(streamed, epochs)
    assert [len(epoch) for epoch in got] == [len(epoch) for epoch in expected] == [len(resident)] * epochs
    for epoch, (want, have) in enumerate(zip(expected, got)):
        for step, ((images, labels), (streamed_images, streamed_labels)) in enumerate(zip(want, have)):
            assert torch.equal(streamed_images, images), f"epoch {epoch + 1}, batch {step + 1}: images differ"
            assert torch.equal(streamed_labels, labels), f"epoch {epoch + 1}, batch {step + 1}: labels differ"
    assert not torch.equal(expected[0][0][0], expected[1][0][0]), "the epochs are not shuffled: nothing was tested"
    for mine, theirs in zip(streamed.generators, resident.generators):  # what a checkpoint saves
        assert torch.equal(mine.get_state(), theirs.get_state())
    return got


@pytest.mark.parametrize("batch_size, last", [(16, 11), (29, 29), (50, 3), (256, 203)])
def test_streamed_batches_equal_the_resident_ones_bit_for_bit(batch_size, last):
    """Three shuffled epochs of 203 images with every random augmentation, including a short last
    batch and a batch size over the split's size (the staging buffers then hold the split)."""
    split = random_split(203)
    resident, streamed = loader(split, batch_size, CPU, stream=False), loader(split, batch_size, CPU, stream=True)
    assert resident.on_device and not streamed.on_device
    got = assert_same_batches(resident, streamed)
    assert len(got[0][-1][1]) == last


def test_a_cpu_run_keeps_its_split_resident_whatever_the_budget():
    assert loader(random_split(20), 4, CPU, stream=None).on_device  # budget 2**30; and with none at all:
    split = random_split(20)
    transform = tensor_data.BatchTransform(8, 8, MEAN, STD, train=False)
    assert tensor_data.DeviceBatches(split, 4, transform, CPU, False, 0, 0).on_device


class Spy:
    """A transform that records, for each batch, which staging buffer it came through and where
    the buffers are, and hands the batch on unchanged."""

    def __init__(self):
        self.slots, self.addresses, self.host = [], [], None

    def __call__(self, images, generator):
        staging = self.host.staging
        self.addresses.append(tuple(buffer.data_ptr() for buffer in staging))
        self.slots.append([s for s, buffer in enumerate(staging) if torch.equal(buffer[:len(images)], images)])
        assert images.data_ptr() not in self.addresses[-1], "a batch handed out aliases a staging buffer"
        return images


def test_the_two_staging_buffers_are_allocated_once_and_reused_in_turn():
    spy = Spy()
    streamed = loader(random_split(203), 16, CPU, stream=True, transform=spy)
    spy.host = streamed.host
    first = tuple(buffer.data_ptr() for buffer in streamed.host.staging)
    assert [tuple(b.shape) for b in streamed.host.staging] == [(16, 3, 8, 8)] * 2  # at the largest batch size
    batches = epochs_of(streamed, 3)
    steps = len(streamed)
    assert spy.addresses == [first] * 3 * steps, "a staging buffer was reallocated"
    assert spy.slots == [[k % 2] for k in range(steps)] * 3, "batch k must come through buffer k mod 2"
    assert [len(labels) for _, labels in batches[0]] == [16] * 12 + [11]


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="reads the resident set size from /proc")
def test_streaming_holds_about_one_copy_of_the_split_in_host_memory():
    """A 200 MB split streamed for an epoch: resident memory grows by the two staging buffers and
    the few batches alive at once (the consumer's last one, the one handed out, the next one
    already copied; 13 MiB measured at batch 512), not by a second copy of the split (the earlier
    path pinned one). The same measurement does see a copy, made at the end."""
    count, batch_size = 65_000, 512  # 65,000 x 3 x 32 x 32 = 200 MB of uint8; 1.5 MB a batch
    images = torch.empty((count, 3, 32, 32), dtype=torch.uint8).fill_(7)  # touched: its pages are resident
    split = tensor_data.CachedSplit(images, torch.zeros(count, dtype=torch.long), None, False)
    before, peak = _rss_bytes(), 0

    def sample(batch, generator):
        nonlocal peak
        peak = max(peak, _rss_bytes())
        return batch[:1]  # the consumer keeps nothing of the batch

    streamed = loader(split, batch_size, CPU, stream=True, transform=sample)
    assert streamed.images.data_ptr() == images.data_ptr() and streamed.host.images.data_ptr() == images.data_ptr()
    held = sum(buffer.nbytes for buffer in streamed.host.staging)
    assert held == 2 * batch_size * 3 * 32 * 32
    assert sum(1 for _ in streamed) == len(streamed)
    grown = max(peak, _rss_bytes()) - before
    assert grown < 0.1 * images.nbytes, f"host memory grew by {grown / 2**20:.1f} MiB streaming a 200 MB split"

    copy = images.clone()
    assert _rss_bytes() - before > 0.9 * copy.nbytes, "the measurement cannot see a second copy: it proves nothing"


def test_a_streamed_run_trains_exactly_as_a_resident_one(make_cfg, tmp_path, monkeypatch):
    """The real core through run(): the same losses step by step and the same accuracies."""
    overrides = [*TINY, "epochs=1", "pretrained=false", "save_model=false", "augment=crop_flip", "device=cpu"]
    resident = run(make_cfg(*overrides), output_dir=tmp_path / "resident")
    made = []

    class Streamed(tensor_data.DeviceBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, stream=True)
            made.append(self)

    monkeypatch.setattr(tensor_data, "DeviceBatches", Streamed)
    streamed = run(make_cfg(*overrides), output_dir=tmp_path / "streamed")
    assert made and not any(batches.on_device for batches in made)
    assert streamed["iter_loss"] == resident["iter_loss"]
    assert [e["test_acc"] for e in streamed["epochs"]] == [e["test_acc"] for e in resident["epochs"]]


# ---- CUDA: what only a GPU shows (not yet run on one) ----

@cuda_only
def test_streaming_on_cuda_equals_resident_and_pins_nothing_per_batch():
    """Bit for bit equal to the resident path, and the pinned host allocator hands out no block per
    batch: after the first epoch (which pins the normalization constants once) an epoch takes one,
    for its shuffled order (batch_augment.to_device), however many batches it has."""
    cuda = torch.device("cuda")
    split = random_split(203)
    resident, streamed = loader(split, 16, cuda, stream=False), loader(split, 16, cuda, stream=True)
    assert not streamed.on_device and all(buffer.is_pinned() for buffer in streamed.host.staging)
    assert_same_batches(resident, streamed)

    def handed_out():
        torch.cuda.synchronize()
        return torch.cuda.host_memory_stats()["active_requests.allocated"]  # blocks ever handed out

    created = torch.cuda.host_memory_stats()["num_host_alloc"]  # blocks ever allocated from CUDA
    counts = [handed_out()]
    for _ in range(3):
        for _ in streamed:
            pass
        counts.append(handed_out())
    per_epoch = [b - a for a, b in zip(counts, counts[1:])]
    assert all(n <= 1 for n in per_epoch), f"pinned blocks handed out per epoch of {len(streamed)} batches: {per_epoch}"
    assert torch.cuda.host_memory_stats()["num_host_alloc"] - created <= 1


def _trace(tmp_path, work) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        work()
        torch.cuda.synchronize()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    return json.loads(path.read_text())["traceEvents"]


@cuda_only
def test_streamed_copies_run_on_a_side_stream_while_the_step_computes(tmp_path):
    """The profiler's trace: each batch's host-to-device copy (12 MiB) runs on a stream of its own
    and, from the second batch on, at the same time as kernels on the training stream."""
    cuda, count, batch_size = torch.device("cuda"), 8192, 1024
    split = random_split(count, size=64)
    transform = tensor_data.BatchTransform(64, 64, MEAN, STD, train=False)
    streamed = tensor_data.DeviceBatches(split, batch_size, transform, cuda, True, 0, 0)  # over the budget: streams
    assert not streamed.on_device
    weights = torch.randn(4096, 4096, device=cuda)

    def train():  # a stand-in step: 0.8 TFLOP of fp32 matmuls per batch (~10 ms), far longer than its copy
        for images, _ in streamed:
            x = weights
            for _ in range(6):
                x = (x @ weights).tanh()
            images.sum()

    train()  # warm-up: cuBLAS handles, allocator blocks
    events = _trace(tmp_path, train)
    batch_bytes = batch_size * 3 * 64 * 64
    copies = [e for e in events if e.get("cat") == "gpu_memcpy" and e.get("args", {}).get("bytes") == batch_bytes]
    kernels = [e for e in events if e.get("cat") == "kernel"]
    assert len(copies) == count // batch_size, [e["name"] for e in copies]
    copy_streams = {e["args"]["stream"] for e in copies}
    compute_streams = {e["args"]["stream"] for e in kernels}
    assert len(copy_streams) == 1 and not copy_streams & compute_streams, (copy_streams, compute_streams)

    def overlaps(copy):
        return any(k["ts"] < copy["ts"] + copy["dur"] and copy["ts"] < k["ts"] + k["dur"] for k in kernels)

    overlapped = sum(overlaps(c) for c in copies[1:])
    assert overlapped >= len(copies[1:]) // 2, f"only {overlapped} of {len(copies) - 1} copies overlapped a kernel"


@cuda_only
def test_a_run_over_the_device_budget_streams_and_trains_as_a_resident_one(make_cfg, tmp_path, monkeypatch):
    """data.device_budget_gb=0: every split streams; with deterministic kernels the run's losses
    equal the resident run's step by step."""
    overrides = [*TINY, "model=resnet18", "pretrained=false", "save_model=false", "augment=crop_flip", "device=cuda",
                 "deterministic=true"]
    made = []

    class Recorded(tensor_data.DeviceBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(tensor_data, "DeviceBatches", Recorded)
    resident = run(make_cfg(*overrides), output_dir=tmp_path / "resident")
    assert made and all(batches.on_device for batches in made)
    made.clear()
    streamed = run(make_cfg(*overrides, "data.device_budget_gb=0"), output_dir=tmp_path / "streamed")
    assert made and not any(batches.on_device for batches in made)
    assert streamed["iter_loss"] == resident["iter_loss"]
    assert [e["test_acc"] for e in streamed["epochs"]] == [e["test_acc"] for e in resident["epochs"]]
