"""Throughput benchmark: `python -m tlbench.bench [--check] [--models ...] [--sizes ...] [--out FILE]`.

For each model and input size, in one process on one device, training images per second of:
  (a) seed loop: the write-ups' way: uint8 images in host memory, per-image PIL transforms
      (RandomCrop pad 4, flip, ColorJitter, RandomRotation 15, ToTensor, Normalize; plus Resize
      for upsampled sizes), DataLoader(batch_size=64), fp32, NCHW, no TF32, cuDNN's default
      kernel choice (the write-ups set none of these);
  (b) tlbench loop: the fast path as `python -m tlbench` runs it (cached uint8 tensor on the
      device, the same augmentation batched per sample on the device, bf16 + channels_last on
      CUDA) through the real training core, at tlbench's batch size for the device, batches drawn
      as they are trained on;
  (c) ceiling: the same model and batch size fed one ready device batch, no data work.
Also evaluation images/s and the time of one CIFAR-10-sized epoch (50,000 train + 10,000 val).
Each rate is the median of several timed windows after a warm-up; the spread across windows
((max - min) / median) is reported beside it. `--check` prints a PASS or FAIL line per target
(TARGETS: one H100 on CUDA, this project's 2-core machine on CPU) and exits 1 unless all pass."""

import argparse
import itertools
import json
import math
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from tlbench.runner import devices
from tlbench.training import engine, freeze, optim, schedules, step
from tlbench.data import tensor_data
from tlbench.data.augment import NORMALIZATIONS
from tlbench import specs

MEAN, STD = NORMALIZATIONS["cifar"]
WRITEUP_AUGMENT = dict(pad=4, hflip=0.5, color_jitter=[0.2, 0.2, 0.2, 0.1], rotation_deg=15)
CIFAR_TRAIN, CIFAR_VAL = 50_000, 10_000
SEED_BATCH = 64  # the write-ups' DataLoader batch
# Per device type. CUDA: 5 windows of 40 steps (200 timed), enough to see a straggling window;
# CPU: 3 windows of 8 steps, so `--check` takes about a minute on 2 cores.
DEFAULTS = {
    "cuda": dict(models="resnet18,efficientnet_b0", sizes="32,224", steps=200, windows=5, warmup=10,
                 eval_images=10_000),
    "cpu": dict(models="resnet18,tf_efficientnet_lite0", sizes="32,64", steps=24, windows=3, warmup=3,
                eval_images=4096),
}


@dataclass(frozen=True)
class Target:
    model: str
    input_px: int
    min_images_per_s: float | None = None  # tlbench loop, absolute
    min_speedup: float | None = None       # tlbench loop / seed loop
    min_fraction_of_ceiling: float = 0.8
    max_eval_fraction: float = 0.15        # evaluation's share of a CIFAR-10 epoch


# Issue #12's targets. CUDA's are set for one H100 (docs/results/speed.md: 41,202 and 4,295 img/s measured).
TARGETS = {
    "cuda": (Target("resnet18", 32, min_images_per_s=40_000), Target("efficientnet_b0", 224, min_images_per_s=3_500)),
    "cpu": (Target("resnet18", 32, min_speedup=1.8),),
}


class HostUint8(Dataset):
    """Like torchvision's CIFAR10: a uint8 HWC array, one PIL image made per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def fake_cifar(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count)


@dataclass(frozen=True)
class Timing:
    device: torch.device
    warmup: int     # steps before the first window, not timed
    windows: int
    steps: int      # per window


class WindowClock:
    """Images per second over consecutive windows of `timing.steps` steps, after the warm-up;
    call `step(images)` after each step. The device is synchronized only at window edges."""

    def __init__(self, timing: Timing):
        self.timing, self.done, self.images, self.rates = timing, 0, 0, []
        self.started = _now(timing.device) if timing.warmup == 0 else None

    def step(self, images: int) -> None:
        self.done += 1
        if self.done <= self.timing.warmup:
            if self.done == self.timing.warmup:
                self.started = _now(self.timing.device)
            return
        self.images += images
        if (self.done - self.timing.warmup) % self.timing.steps == 0:
            now = _now(self.timing.device)
            self.rates.append(self.images / (now - self.started))
            self.started, self.images = now, 0

    @property
    def finished(self) -> bool:
        return len(self.rates) == self.timing.windows


@contextmanager
def writeup_numerics(device):
    """fp32 as the write-ups ran it: no TF32 in matmuls or convolutions and no cuDNN autotuning
    (none of them set these flags); the previous settings come back afterwards."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def seed_loop(model, size, timing: Timing, workers: int) -> list[float]:
    ops = [T.Resize(size)] if size != 32 else []
    transform = T.Compose(ops + [T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(),
                                 T.ColorJitter(0.2, 0.2, 0.2, 0.1), T.RandomRotation(15), T.ToTensor(),
                                 T.Normalize(MEAN, STD)])
    images, labels = fake_cifar(SEED_BATCH * (timing.warmup + timing.windows * timing.steps))
    loader = DataLoader(HostUint8(images, labels, transform), batch_size=SEED_BATCH, shuffle=True, num_workers=workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    clock = WindowClock(timing)
    with writeup_numerics(timing.device):
        for x, y in loader:
            loss = F.cross_entropy(model(x.to(timing.device)), y.to(timing.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.step(len(y))
            if clock.finished:
                break
    return clock.rates


class Take:
    """`count` batches from fresh passes over `batches` (as many as needed), drawn as they are consumed."""

    def __init__(self, batches, count: int):
        self.batches, self.count = batches, count

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(itertools.chain.from_iterable(itertools.repeat(self.batches)), self.count)


def _in_memory_split(images, labels) -> tensor_data.CachedSplit:
    """NHWC uint8 arrays as the tensor path holds them (NCHW, nothing cached on disk)."""
    return tensor_data.CachedSplit(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                                   torch.from_numpy(labels).long(), None, False)


def tlbench_loop(model, size, batch_size, timing: Timing, options) -> list[float]:
    """Each window is one pass (an "epoch": reshuffled, augmented batch by batch) over
    batch_size x steps images, through engine.train_one_epoch as training runs it."""
    device = timing.device
    split = _in_memory_split(*fake_cifar(batch_size * timing.steps))
    transform = tensor_data.BatchTransform(32, size, MEAN, STD, **WRITEUP_AUGMENT)
    batches = tensor_data.DeviceBatches(split, batch_size, transform, device, True, 0, 4 * 2**30)
    optimizer = optim.OptimizerFactory("adam", lr=1e-4, fused=device.type == "cuda").build(model, _all_trainable(model))
    schedule = schedules.build_schedule("constant", epochs=1, steps_per_epoch=len(batches))
    model.train()
    if timing.warmup:
        engine.train_one_epoch(model, Take(batches, timing.warmup), optimizer, schedule, 0, device, options)
    rates = []
    for _ in range(timing.windows):
        started = _now(device)
        result = engine.train_one_epoch(model, batches, optimizer, schedule, 0, device, options)
        rates.append(result["images"] / (_now(device) - started))
    return rates


def ceiling(model, size, batch_size, timing: Timing, options) -> list[float]:
    device = timing.device
    x = torch.randn(batch_size, 3, size, size, device=device)
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = optim.OptimizerFactory("adam", lr=1e-4, fused=device.type == "cuda").build(model, _all_trainable(model))
    model.train()
    clock = WindowClock(timing)
    while not clock.finished:
        step.train_step(model, optimizer, x, y, device, options)  # the product's own step, on one resident batch
        clock.step(batch_size)
    return clock.rates


def eval_speed(model, size, batch_size, count, timing: Timing, options) -> list[float]:
    """One timed pass over `count` images per window, after one untimed batch."""
    device = timing.device
    split = _in_memory_split(*fake_cifar(count, seed=1))
    batches = tensor_data.DeviceBatches(split, batch_size, tensor_data.BatchTransform(32, size, MEAN, STD, train=False),
                                        device, False, 0, 4 * 2**30)
    engine.evaluate(model, Take(batches, 1), device, options)
    rates = []
    for _ in range(timing.windows):
        started = _now(device)
        engine.evaluate(model, batches, device, options)
        rates.append(count / (_now(device) - started))
    return rates


def _all_trainable(model):
    return freeze.NoFreeze([[n for n, _ in model.named_parameters()]], specs.NoFreezeSettings()).phase(0)


def _now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def measure(name, size, device, args) -> dict:
    cuda = device.type == "cuda"
    batch_size = (256 if size >= 160 else 512) if cuda else 256
    options = engine.TrainOptions(epochs=1, amp=cuda, channels_last=cuda)
    timing = Timing(device, args.warmup, args.windows, max(1, math.ceil(args.steps / args.windows)))

    def fresh(channels_last=cuda):
        model = timm.create_model(name, num_classes=10).to(device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    row = {"model": name, "input_px": size, "tlbench_batch_size": batch_size, "seed_loop_batch_size": SEED_BATCH,
           "windows": timing.windows, "steps_per_window": timing.steps, "warmup_steps": timing.warmup}
    _add_rates(row, "seed_loop", seed_loop(fresh(channels_last=False), size, timing, args.workers))
    _add_rates(row, "tlbench", tlbench_loop(fresh(), size, batch_size, timing, options))
    _add_rates(row, "ceiling", ceiling(fresh(), size, batch_size, timing, options))
    _add_rates(row, "eval", eval_speed(fresh(), size, 2 * batch_size, args.eval_images, timing, options))
    row["speedup_vs_seed_loop"] = row["tlbench_images_per_s"] / row["seed_loop_images_per_s"]
    row["fraction_of_ceiling"] = row["tlbench_images_per_s"] / row["ceiling_images_per_s"]
    train_s, eval_s = CIFAR_TRAIN / row["tlbench_images_per_s"], CIFAR_VAL / row["eval_images_per_s"]
    row.update(cifar_epoch_s=train_s + eval_s, eval_fraction_of_epoch=eval_s / (train_s + eval_s),
               seed_loop_cifar_epoch_s=CIFAR_TRAIN / row["seed_loop_images_per_s"] + eval_s)
    return row


def _add_rates(row: dict, name: str, rates: list[float]) -> None:
    median = statistics.median(rates)
    row[f"{name}_images_per_s"] = median
    row[f"{name}_windows_images_per_s"] = rates
    row[f"{name}_spread"] = (max(rates) - min(rates)) / median


def check_lines(rows: list[dict], device, require_all: bool) -> list[tuple[bool, str]]:
    """(passed, line) for each criterion of each target of this device type. A target whose row
    was not measured is skipped, or fails when `require_all` (--check)."""
    measured = {(row["model"], row["input_px"]): row for row in rows}
    lines = []
    targets = TARGETS.get(device.type, ())
    if require_all and not targets:
        lines.append((False, f"FAIL no targets are set for {device.type} (only for {', '.join(TARGETS)})"))
    for target in targets:
        what = f"{target.model} @ {target.input_px} px on {device.type}"
        row = measured.get((target.model, target.input_px))
        if row is None:
            if require_all:
                lines.append((False, f"FAIL {what}: not measured (--models {target.model} --sizes {target.input_px})"))
            continue
        for passed, detail in _criteria(target, row):
            lines.append((passed, f"{'PASS' if passed else 'FAIL'} {what}: {detail}"))
    return lines


def _criteria(target: Target, row: dict) -> list[tuple[bool, str]]:
    """(passed, what was measured against what is required) for each criterion of `target`."""
    rate, ceiling_share, speedup = row["tlbench_images_per_s"], row["fraction_of_ceiling"], row["speedup_vs_seed_loop"]
    found = []
    if target.min_images_per_s is not None:
        batch = row["tlbench_batch_size"]
        found.append((rate >= target.min_images_per_s,
                      f"tlbench loop {rate:,.0f} img/s at batch {batch} >= {target.min_images_per_s:,.0f}"))
    found.append((ceiling_share >= target.min_fraction_of_ceiling,
                  f"tlbench loop at {ceiling_share:.0%} of the ceiling >= {target.min_fraction_of_ceiling:.0%}"))
    if target.min_speedup is not None:
        found.append((speedup >= target.min_speedup,
                      f"tlbench loop {speedup:.2f}x the seed loop >= {target.min_speedup}x"))
    share = row["eval_fraction_of_epoch"]
    found.append((share <= target.max_eval_fraction,
                  f"evaluation {share:.0%} of a CIFAR-10 epoch <= {target.max_eval_fraction:.0%}"))
    return found


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for key in ("steps", "windows", "eval_images"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tlbench.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="print PASS/FAIL per target and exit 1 unless all pass; measures only the targets' "
                             "models and sizes unless --models or --sizes is given")
    parser.add_argument("--models", default=None, help=f"default: {DEFAULTS['cpu']['models']} on CPU, "
                                                       f"{DEFAULTS['cuda']['models']} on CUDA")
    parser.add_argument("--sizes", default=None, help="input sizes in px (default: 32,64 on CPU, 32,224 on CUDA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per measurement, split into "
                                                                "--windows windows (default: 24 on CPU, 200 on CUDA)")
    parser.add_argument("--windows", type=int, default=None, help="timed windows; the median is reported "
                                                                  "(default: 3 on CPU, 5 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 on CPU, 10 on CUDA)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the seed loop")
    parser.add_argument("--eval-images", type=int, default=None, help="images per timed evaluation pass "
                                                                      "(default: 4096 on CPU, 10000 on CUDA)")
    parser.add_argument("--out", default=None, help="JSON file (default: results/bench/bench-<device>-<time>.json)")
    return parser


def planned_rows(args, device) -> list[tuple[str, int]]:
    """(model, px) pairs: under --check with no --models/--sizes, just the targets' own."""
    if args.check and args.models is None and args.sizes is None:
        return [(t.model, t.input_px) for t in TARGETS.get(device.type, ())]
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    models = (args.models or defaults["models"]).split(",")
    sizes = [int(s) for s in (args.sizes or defaults["sizes"]).split(",")]
    return [(model, size) for model in models for size in sizes]


def main(argv=None) -> int:
    """Returns the exit status: 1 when --check finds a target not met, else 0."""
    args = parse_args(argv)
    device = devices.resolve_device(args.device)
    for key, value in DEFAULTS["cuda" if device.type == "cuda" else "cpu"].items():
        if getattr(args, key, None) is None and key not in ("models", "sizes"):
            setattr(args, key, value)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as tlbench's runs set it (fixed shapes)
    started = time.perf_counter()
    rows = []
    for name, size in planned_rows(args, device):
        rows.append(measure(name, size, device, args))
        print(_format(rows[-1]), flush=True)
    checks = check_lines(rows, device, require_all=args.check)
    for _, line in checks:
        print(line)
    passed = all(ok for ok, _ in checks)
    report = {"peak_host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_device_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
              "device": str(device), "device_name": devices.device_name(device), "torch": torch.__version__,
              "timm": timm.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args),
              "wall_s": time.perf_counter() - started, "rows": rows,
              "checks": {"passed": passed, "lines": [line for _, line in checks]}}
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"results/bench/bench-{device.type}-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    return 1 if args.check and not passed else 0


def _format(row) -> str:
    def rate(name):
        return f"{row[f'{name}_images_per_s']:,.0f} (spread {100 * row[f'{name}_spread']:.0f}%)"

    return (f"{row['model']} @ {row['input_px']} px: seed loop {rate('seed_loop')} img/s | tlbench {rate('tlbench')} "
            f"(bs {row['tlbench_batch_size']}) | ceiling {rate('ceiling')} | b/a {row['speedup_vs_seed_loop']:.2f}x | "
            f"b/c {100 * row['fraction_of_ceiling']:.0f}% | eval {rate('eval')} img/s | CIFAR-10 epoch "
            f"{row['cifar_epoch_s']:.0f} s (seed loop {row['seed_loop_cifar_epoch_s']:.0f} s), eval "
            f"{100 * row['eval_fraction_of_epoch']:.0f}% of it | medians of {row['windows']} windows of "
            f"{row['steps_per_window']} steps")


if __name__ == "__main__":
    sys.exit(main())
