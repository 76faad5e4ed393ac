"""No host-device sync inside a training step or an evaluation batch (issue #12).

A read of a tensor's value on the host (`.item()`, `.tolist()`, `if tensor:` ...) makes the host
wait for all work queued on a GPU, so the host can no longer prepare the next batch while the GPU
computes this one. The budget where reads stall (CUDA, MPS), per epoch of S training steps:
- a training step, the making of the next batch included: no read, except every 50th step, which
  reads the last 50 losses in one transfer (the divergence check; the progress bar shows its
  numbers): 1 read;
- the end of the epoch: 2 reads (the losses since the last check, the correct count);
- an evaluation batch: no read; the end of the split: 1 read (loss sums and correct counts together);
- a tensor made from Python numbers (a blocking host-to-device copy on a GPU): only while the first
  batch is made (BatchTransform's mean and std, once per device), never in a step.
The CPU tests count those calls with a TorchFunctionMode, on the CPU with `engine._reads_stall`
patched to True so the engine takes its GPU branch; the CUDA test runs the steps under
`torch.cuda.set_sync_debug_mode("error")`. On the CPU proper reads are free: one per step."""

from itertools import pairwise

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from tlbench.training import engine, freeze, optim, schedules
from tlbench.data import tensor_data
from tlbench import specs

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
WRITEUP_AUGMENT = dict(pad=2, hflip=0.5, color_jitter=[0.2, 0.2, 0.2, 0.1], rotation_deg=15)  # as tlbench.bench
CROP_AUGMENT = dict(random_resized_crop=[0.3, 1.0], pad=1, pad_mode="symmetric", vflip=0.5)


pytestmark = pytest.mark.usefixtures("one_thread")


class CountReads(TorchFunctionMode):
    READS = frozenset({Tensor.item, Tensor.tolist, Tensor.numpy, Tensor.cpu,
                       Tensor.__bool__, Tensor.__float__, Tensor.__int__, Tensor.__index__})
    FROM_NUMBERS = frozenset({torch.tensor, torch.as_tensor})

    def __init__(self):
        super().__init__()
        self.reads, self.from_numbers = 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.reads += 1
        elif func in self.FROM_NUMBERS and not isinstance(args[0], Tensor):
            self.from_numbers += 1
        return func(*args, **(kwargs or {}))

    def now(self) -> tuple[int, int]:
        return self.reads, self.from_numbers


class Marked:
    """`batches`, noting the counts as each batch is handed over and when they run out."""

    def __init__(self, batches, counter):
        self.batches, self.counter, self.marks = batches, counter, []

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.marks.append(self.counter.now())
            yield batch
        self.marks.append(self.counter.now())


def spans(run, batches) -> tuple[tuple, list[tuple], tuple]:
    """Runs `run(loader)` counting reads; returns the counts of: making the first batch, each
    step (with the making of the next batch), and what follows the last step."""
    counter = CountReads()
    marked = Marked(batches, counter)
    with counter:
        run(marked)
    marks = [(0, 0), *marked.marks, counter.now()]
    diffs = [(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(marks)]
    return diffs[0], diffs[1:-1], diffs[-1]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def device_batches(count, batch_size, device, train=True, augment=WRITEUP_AUGMENT, seed=0):
    """A split on `device` as tlbench.bench and build.make_loaders build it."""
    generator = torch.Generator().manual_seed(seed)
    split = tensor_data.CachedSplit(torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator),
                                    torch.randint(0, 4, (count,), generator=generator), None, False)
    transform = tensor_data.BatchTransform(8, 8, MEAN, STD, train=train, **(augment if train else {}))
    return tensor_data.DeviceBatches(split, batch_size, transform, device, train, seed, 2**30)


def trainer(model, device, steps, **options):
    """`loader -> result` of one epoch as fit runs it, everything built beforehand. Fused Adam, as
    run.py uses it on CUDA: its step counters then live on the device, never read back."""
    phase = freeze.NoFreeze([[n for n, _ in model.named_parameters()]], specs.NoFreezeSettings()).phase(0)
    optimizer = optim.OptimizerFactory("adam", lr=1e-3, fused=True).build(model, phase)
    schedule = schedules.build_schedule("cosine", epochs=1, steps_per_epoch=steps)
    options = engine.TrainOptions(epochs=1, clip_grad_norm=1.0, **options)
    model.train()
    return lambda loader: engine.train_one_epoch(model, loader, optimizer, schedule, 0, device, options, "epoch 1/1")


def evaluator(model, device, **options):
    return lambda loader: engine.evaluate(model, loader, device, engine.TrainOptions(epochs=1, **options))


@pytest.mark.parametrize("augment", [WRITEUP_AUGMENT, CROP_AUGMENT], ids=["writeups", "random_resized_crop"])
@pytest.mark.parametrize("show_progress", [False, True])
def test_a_training_step_reads_nothing_back_where_reads_stall(monkeypatch, augment, show_progress):
    monkeypatch.setattr(engine, "_reads_stall", lambda device: True)
    cpu, steps = torch.device("cpu"), 101
    first, per_step, end = spans(trainer(tiny_model(), cpu, steps, show_progress=show_progress),
                                 device_batches(4 * steps - 2, 4, cpu, augment=augment))  # a short last batch
    assert len(per_step) == steps
    assert first == (0, 2), "the first batch: no read; mean and std made once"
    budget = [(1 if step % 50 == 0 else 0, 0) for step in range(1, steps + 1)]
    assert per_step == budget, "reads or constants in a step beyond the divergence check every 50 steps"
    assert end == (2, 0), "the end of the epoch: remaining losses, correct count"


def test_an_evaluation_batch_reads_nothing_back():
    cpu = torch.device("cpu")
    first, per_batch, end = spans(evaluator(tiny_model(), cpu), device_batches(37, 8, cpu, train=False))
    assert first == (0, 2) and per_batch == [(0, 0)] * 5 and end == (1, 0)


def test_on_the_cpu_reading_every_step_still_catches_divergence_at_its_step():
    cpu = torch.device("cpu")
    _, per_step, end = spans(trainer(tiny_model(), cpu, 6), device_batches(24, 4, cpu))
    assert per_step == [(1, 0)] * 6 and end == (1, 0), "every loss read at its step; then the correct count"

    batches = list(device_batches(24, 4, cpu))
    batches[3] = (batches[3][0] * float("nan"), batches[3][1])
    with pytest.raises(FloatingPointError, match=r"diverged at step 4 of epoch 1/1: loss is nan"):
        trainer(tiny_model(), cpu, 6)(batches)


def test_divergence_where_reads_stall_is_caught_at_the_next_check_with_its_step(monkeypatch):
    monkeypatch.setattr(engine, "_reads_stall", lambda device: True)
    cpu = torch.device("cpu")
    batches = list(device_batches(4 * 60, 4, cpu))
    batches[6] = (batches[6][0] * float("nan"), batches[6][1])
    with pytest.raises(FloatingPointError, match=r"diverged at step 7 of epoch 1/1"):
        trainer(tiny_model(), cpu, 60)(batches)


def test_batches_keep_the_order_and_draws_of_a_host_permutation():
    """The order is the host generator's permutation, on every device; the augmentation draws
    come from the augmentation generator alone, batch after batch (what test_resume relies on)."""
    cpu = torch.device("cpu")
    batches = device_batches(10, 4, cpu, seed=3)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    draws = torch.Generator().manual_seed(3)
    for start, (images, labels) in zip(range(0, 10, 4), batches):
        index = order[start:start + 4]
        assert torch.equal(labels, batches.labels[index])
        assert torch.equal(images, batches.transform(batches.images[index], draws))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_steps_and_evaluation_batches_never_synchronize():
    cuda, fast = torch.device("cuda"), dict(amp=True, channels_last=True)  # as run.py on CUDA
    model = tiny_model().to(cuda, memory_format=torch.channels_last)
    for augment in (WRITEUP_AUGMENT, CROP_AUGMENT):
        batches = Strict(device_batches(4 * 49, 4, cuda, augment=augment))
        result = trainer(model, cuda, 49, show_progress=True, **fast)(batches)
        assert result["images"] == 4 * 49 and len(result["iter_loss"]) == 49
    loss, acc, mean_class_acc = evaluator(model, cuda, **fast)(Strict(device_batches(40, 8, cuda, train=False)))
    assert loss > 0 and 0 <= acc <= 1 and 0 <= mean_class_acc <= 1


class Strict:
    """Batches made and consumed under sync debug mode "error": any synchronizing CUDA call in a
    step (49 of them: the check at step 50 is a sync by design) raises. It is turned off when the
    batches run out, before the designed read at the end of the epoch or split."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.batches
        finally:
            torch.cuda.set_sync_debug_mode("default")
