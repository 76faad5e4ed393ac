"""The one training core every run goes through. It takes objects (model, loaders, freeze
strategy, optimizer factory, schedule, device), never the config, so tests and other tools can
drive it directly. CPU, CUDA (bf16 autocast, channels_last) and MPS run the same code."""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tlbench.records import results
from tlbench.training import checkpoint
from tlbench.training.compiled import IGNORE_INDEX
from tlbench.training.freeze import FreezeStrategy, apply_phase, set_train_mode
from tlbench.training.optim import OptimizerFactory, carry_state
from tlbench.training.schedules import LrSchedule
from tlbench.training.step import StepOptions, forward_loss, loss_input, to_device, train_step

log = logging.getLogger("tlbench")


@dataclass(kw_only=True)
class TrainOptions(StepOptions):
    """How `fit` runs: the step's options (step.StepOptions) and the epochs around it."""
    epochs: int
    steps: int | None = None             # an exact budget in optimizer steps: the last epoch stops once it is
                                         # reached (None = every epoch runs over the whole loader)
    best_checkpoint: Path | None = None  # where to keep the best epoch's state_dict, or None
    select_on: str = "val_acc"           # the epoch record's field that picks the best epoch: the data set's
                                         # metric on val (results.selection_field: val_mean_class_acc for some)
    select_epoch: str = results.OLD_SELECT_RULE  # the rule that picks it (specs.SELECT_RULES)
    checkpoint: Path | None = None       # where to save the full training state (see checkpoint_every_s)
    checkpoint_every_s: float = 0.0      # save when this long has passed since the last save (or the start),
                                         # and after the last epoch; 0 = after every epoch
    checkpoint_info: dict = field(default_factory=dict)  # stored with it (the run_id that owns it)
    show_progress: bool = False          # a tqdm bar (on a terminal); plain log lines otherwise
    eval_view: Callable[[nn.Module], nn.Module] | None = None  # the model that val and test see, made from the
                                         # trained one each epoch (freeze=lora: adapters.merged, a copy with the
                                         # adapters merged: 1.3-1.7x faster); None = the trained model itself


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    iter_loss: list[float] = field(default_factory=list)
    iters_per_epoch: int = 0
    compile: dict | None = None  # compile=true: Compiled.record (result.json `compile`); None = eager


class FitHooks:
    """Where a way of running the model plugs into `fit` (compiled.CompileHooks for compile=true);
    this one runs it eagerly, val and test scored on `eval_view(model)` when one is given."""

    def __init__(self, eval_view: Callable[[nn.Module], nn.Module] | None = None):
        self.eval_view = eval_view

    def start(self, history: History, train_loader) -> None:
        """Before the first epoch of this attempt (after a resume's state is restored)."""

    def phase_ready(self, epoch: int, phase_name: str, warm_up: Callable[[], None]) -> float:
        """A phase's first epoch of this attempt is about to train; returns seconds spent preparing it."""
        return 0.0

    def scored(self, model: nn.Module) -> nn.Module:
        """The model that val and test see this epoch."""
        return self.eval_view(model) if self.eval_view else model

    def epoch_done(self, epoch: int) -> None:
        """After an epoch's val and test scores."""


def fit(model: nn.Module, train_loader, val_loader, freeze: FreezeStrategy, optimizers: OptimizerFactory,
        schedule: LrSchedule, device: torch.device, options: TrainOptions, history: History | None = None,
        on_epoch_end=None, resume: dict | None = None, test_loader=None, hooks=None, ema=None) -> History:
    """Trains `options.epochs` epochs, evaluating on `val_loader` (what selects: the best epoch and
    best.pt, on `options.select_on`, and the plateau rule) and on `test_loader` (what is reported;
    None = val is the test split, and test metrics repeat val's). `history` is filled in place, so
    a caller that catches an exception still has every epoch completed before it.
    `on_epoch_end(record)` is called after each epoch, once its checkpoint (if one is due) is
    written. `resume`: a state loaded by checkpoint.load, from which training goes on exactly as
    if it had never stopped. `hooks`: a FitHooks (default: eager, with `options.eval_view`). `ema`: a moving
    average of the weights (timm's ModelEmaV3 of the model as it starts), updated after every step, scored on
    val and test each epoch (the epoch fields ema_*) and checkpointed.
    Checkpoints and best.pt: `_Saver`."""
    history = history if history is not None else History()
    history.iters_per_epoch = len(train_loader)
    hooks = hooks or FitHooks(options.eval_view)
    plain = getattr(model, "_orig_mod", model)  # torch.compile's wrapper renames parameters
    total_params = sum(p.numel() for p in plain.parameters())
    phase, optimizer, trainable, first_epoch, prepared = None, None, 0, 0, None
    saver = _Saver(options, train_loader, ema)
    if resume is not None:
        first_epoch = resume["epoch"]
        phase, trainable, optimizer = _restore(plain, freeze, optimizers, schedule, train_loader, history, resume)
        if ema is not None:
            ema.module.load_state_dict(resume["ema"])
        saver.resumed(history, plain)
    hooks.start(history, train_loader)
    for epoch in range(first_epoch, options.epochs):
        if freeze.phase(epoch) != phase:  # a phase change rebuilds the optimizer over the new set
            phase, trainable, optimizer = _enter_phase(plain, freeze, optimizers, schedule, epoch, phase, optimizer)
        set_train_mode(plain, freeze.train_bn, freeze.bn_eval)
        compile_s = 0.0
        if prepared != phase:  # a new phase, or this attempt's first epoch
            compile_s = hooks.phase_ready(epoch + 1, phase.name, lambda: warm_up(
                model, val_loader, train_loader.batch_size, device, options, freeze))
            prepared = phase
        started = time.perf_counter()  # compile time stays out of time_s and images_per_s
        first_step = epoch * len(train_loader)
        train = train_one_epoch(model, train_loader, optimizer, schedule, first_step, device, options,
                                desc=f"epoch {epoch + 1}/{options.epochs}",
                                limit=None if options.steps is None else options.steps - first_step,
                                after_step=None if ema is None else lambda done: ema.update(plain, step=done))
        train_time_s = time.perf_counter() - started
        scores = _scores(hooks.scored(model), val_loader, test_loader, device, options)
        if ema is not None:
            scores.update({f"ema_{k}": v for k, v in _scores(ema.module, val_loader, test_loader, device,
                                                               options).items()})
        record = dict(epoch=epoch + 1, train_loss=train["loss"], train_acc=train["acc"], **scores,
                      lr=optimizer.param_groups[-1]["lr"], time_s=time.perf_counter() - started,
                      images_per_s=train["images"] / train_time_s, trainable_params=trainable,
                      trainable_fraction=trainable / total_params, freeze_phase=phase.name,
                      train_images=train["images"], compile_s=compile_s)
        hooks.epoch_done(epoch + 1)
        history.epochs.append(record)
        history.iter_loss.extend(train["iter_loss"])
        schedule.epoch_end(record)
        saved = saver.epoch_end(record, plain, optimizer, schedule, phase, history)
        if on_epoch_end:
            on_epoch_end(record)
        log.info("epoch %d/%d [%s, %d trainable] train loss %.4f acc %.2f%% | val loss %.4f acc %.2f%% | "
                 "test acc %.2f%% | %.0f img/s, %.1f s%s", epoch + 1, options.epochs, phase.name, trainable,
                 train["loss"], 100 * train["acc"], record["val_loss"], 100 * record["val_acc"],
                 100 * record["test_acc"], record["images_per_s"], record["time_s"], saved)
    return history


def _enter_phase(model, freeze, optimizers, schedule, epoch, previous_phase, previous_optimizer) -> tuple:
    """The freeze phase of `epoch` takes over: its requires_grad set, a new optimizer over it
    (the old one's state carried with `keep_optimizer_state`). Returns (phase, trainable, optimizer)."""
    if previous_phase is not None:
        schedule.phase_changed()
    phase = freeze.phase(epoch)
    trainable = apply_phase(model, phase)
    optimizer = optimizers.build(model, phase)
    if freeze.keep_optimizer_state and previous_optimizer is not None:
        carry_state(previous_optimizer, optimizer)
    return phase, trainable, optimizer


def _scores(scored, val_loader, test_loader, device, options) -> dict:
    """The epoch record's val_* and test_* fields (test repeats val when val is the test split)."""
    val = evaluate(scored, val_loader, device, options)
    test = evaluate(scored, test_loader, device, options) if test_loader else val
    return dict(val_loss=val[0], val_acc=val[1], val_mean_class_acc=val[2], test_loss=test[0], test_acc=test[1],
                test_mean_class_acc=test[2])


class _Saver:
    """Checkpoint cadence and best.pt. The full state is saved to `options.checkpoint` once
    `checkpoint_every_s` has passed since the last save (or the start) and after the last epoch: a
    resnet18 + Adam checkpoint (128 MiB, fsynced) took 0.2-0.4 s on a local disk, more on network
    file systems, against 1.2 s for a CIFAR-10 epoch on an H100, while a slow epoch still saves
    every time. A resume trains the epochs after the last save again. The best epoch's weights wait
    in host memory and go to `best_checkpoint` at the same moments, so best.pt never holds an epoch
    newer than the checkpoint a resume starts from.

    best.pt holds the epoch results.chosen_position picks, the one the summary reports: each epoch,
    once its key is settled (results.settled: smoothed waits one epoch, whose weights wait in host
    memory meanwhile), replaces the kept one if the rule ranks it higher."""

    def __init__(self, options: TrainOptions, train_loader, ema=None):
        self.options, self.train_loader, self.ema = options, train_loader, ema
        self.kept, self.best_state, self.last_saved = None, None, time.monotonic()
        self.waiting: dict[int, dict] = {}  # position -> weights of epochs not settled yet

    def resumed(self, history: History, model) -> None:
        """After a resume: the kept epoch from the restored history (best.pt on disk holds it), and the
        restored weights (the last saved epoch's) waiting if that epoch is not settled yet."""
        done = len(history.epochs)
        ready = results.settled(self.options.select_epoch, done, done == self.options.epochs)
        keys = self._keys(history)
        self.kept = max(range(ready), key=keys.__getitem__) if ready else None
        if self.options.best_checkpoint and ready < done:
            self.waiting[done - 1] = _host_copy(model)

    def epoch_end(self, record: dict, model, optimizer, schedule, phase, history: History) -> str:
        """Keeps the epoch's weights if it is the best so far; saves if due. Returns a note for the log."""
        options = self.options
        if options.best_checkpoint:
            self._choose(history, model)
        if record["epoch"] != options.epochs and time.monotonic() - self.last_saved < options.checkpoint_every_s:
            return ""
        started = time.monotonic()
        if self.best_state is not None:  # best.pt first: the other order, killed between the writes, would resume
            checkpoint.write_atomic(self.best_state, options.best_checkpoint)  # a kept epoch whose weights are lost
            self.best_state = None
        if options.checkpoint:
            kept = history.epochs[self.kept][options.select_on] if self.kept is not None else -1.0
            checkpoint.save(dict(**options.checkpoint_info, epoch=record["epoch"], phase=phase.name,
                                 best_val_acc=kept, model=model.state_dict(),
                                 optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                                 scaler=None,  # bf16 autocast needs no GradScaler
                                 rng=checkpoint.rng_state(self.train_loader), history=asdict(history),
                                 **({} if self.ema is None else {"ema": self.ema.module.state_dict()})),
                            options.checkpoint)
        self.last_saved = time.monotonic()
        return f", saved in {self.last_saved - started:.1f} s"

    def _choose(self, history: History, model) -> None:
        """The newest epoch waits (its weights copied only if it may still be chosen); each epoch
        settled now replaces the kept one when the rule ranks it strictly higher (the first wins a tie)."""
        done, rule = len(history.epochs), self.options.select_epoch
        ready = results.settled(rule, done, done == self.options.epochs)
        keys = self._keys(history)
        newest = done - 1
        if newest >= ready or self.kept is None or keys[newest] > keys[self.kept]:
            self.waiting[newest] = _host_copy(model)
        for position in sorted(p for p in self.waiting if p < ready):
            state = self.waiting.pop(position)
            if self.kept is None or keys[position] > keys[self.kept]:
                self.kept, self.best_state = position, state

    def _keys(self, history: History) -> list[tuple]:
        epochs = history.epochs
        return results.selection_keys([e[self.options.select_on] for e in epochs],
                                      [e["val_loss"] for e in epochs], self.options.select_epoch)


def _host_copy(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _restore(model, freeze, optimizers, schedule, train_loader, history, state) -> tuple:
    """Puts the model, optimizer, schedule, history and random states back as they were at the
    end of epoch `state["epoch"]`; returns (phase, trainable count, optimizer)."""
    if state["history"]["iters_per_epoch"] != len(train_loader):
        raise ValueError(f"the checkpoint was made with {state['history']['iters_per_epoch']} steps per epoch, "
                         f"this run has {len(train_loader)}: the data, batch size or compile setting changed "
                         f"(compile=true drops the partial last batch)")
    phase = freeze.phase(state["epoch"] - 1)
    if phase.name != state["phase"]:
        raise ValueError(f"the checkpoint's freeze phase is {state['phase']!r}, the strategy says {phase.name!r} "
                         f"after epoch {state['epoch']}: the freeze settings changed")
    trainable = apply_phase(model, phase)
    optimizer = optimizers.build(model, phase)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    history.epochs[:] = state["history"]["epochs"]
    history.iter_loss[:] = state["history"]["iter_loss"]
    checkpoint.restore_rng(state["rng"], train_loader)
    return phase, trainable, optimizer


def warm_up(model, val_loader, batch_size, device, options, freeze) -> None:
    """Compiles the current phase's graphs before its epoch is timed: one training step's forward
    and backward and one evaluation batch, at the shapes and modes training uses (the first val
    batch, which draws no random numbers, cut or tiled to `batch_size` for the step). Leaves no
    trace: BatchNorm statistics, gradients, random states and train/eval modes are put back."""
    plain = model._orig_mod
    images, _ = to_device(next(iter(val_loader))[0], torch.zeros(0), device, options.channels_last)
    train_images = images.repeat(math.ceil(batch_size / len(images)), 1, 1, 1)[:batch_size]
    buffers = {name: buffer.clone() for name, buffer in plain.named_buffers()}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        labels = torch.zeros(batch_size, dtype=torch.long, device=device)
        unmixed = replace(options, mix=None)  # mixing draws numpy's random numbers: the warm-up must not
        forward_loss(model, train_images, labels, unmixed)[0].backward()  # the step's graphs, without stepping
        model.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.amp):
            model(images)
    with torch.no_grad():
        for name, buffer in plain.named_buffers():
            buffer.copy_(buffers[name])
    for param in plain.parameters():
        param.grad = None
    set_train_mode(plain, freeze.train_bn, freeze.bn_eval)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the warm-up's kernels finish inside compile_s, not in the epoch


def train_one_epoch(model, loader, optimizer, schedule, first_step, device, options, desc="",
                    limit: int | None = None, after_step: Callable[[int], None] | None = None) -> dict:
    """One pass over `loader`, or its first `limit` batches (a `steps` budget's last epoch); `after_step(n)` after
    each optimizer step, n counting the run's steps from 1 (the weight EMA's update). No step reads a tensor back to the host where that makes the host
    wait for the device (`_reads_stall`): losses and the correct count stay on the device, and the
    losses are read in bulk every `check_every` steps, which is when divergence is caught and the
    progress bar gets its numbers, and once more at the end. On the CPU reading is free, so
    divergence is caught at the very step."""
    losses, read, correct, seen = [], [], torch.zeros((), dtype=torch.long, device=device), 0
    check_every = 50 if _reads_stall(device) else 1
    bar = _progress(loader, desc) if options.show_progress else None
    started = time.perf_counter()
    for i, (images, labels) in enumerate(bar if bar is not None else loader):
        if limit is not None and i >= limit:
            break
        schedule.apply(optimizer, first_step + i)
        loss, batch_correct = train_step(model, optimizer, images, labels, device, options)
        if after_step is not None:
            after_step(first_step + i + 1)
        losses.append(loss)
        correct += batch_correct
        seen += len(labels)
        if (i + 1) % check_every == 0:
            read += _check_finite(losses[len(read):], len(read), desc)
            if bar is not None:
                bar.set_postfix(loss=f"{read[-1]:.3f}", img_s=f"{seen / (time.perf_counter() - started):.0f}")
    read += _check_finite(losses[len(read):], len(read), desc)
    return {"loss": sum(read) / len(read), "acc": correct.item() / seen, "images": seen, "iter_loss": read}


def _reads_stall(device: torch.device) -> bool:
    """True where reading a value on the host (`.item()`, `.tolist()`, `if tensor:`) waits for all
    work queued on the device (CUDA, MPS), so that the host can no longer run ahead of it."""
    return device.type != "cpu"


def _check_finite(losses, done, desc) -> list[float]:
    """Reads `losses` (those of steps `done` + 1 onwards) back in one transfer and returns them;
    raises at the first one that is not finite."""
    if not losses:
        return []
    values = torch.stack(losses).float().tolist()
    for step, value in enumerate(values, start=done + 1):
        if not math.isfinite(value):
            raise FloatingPointError(f"diverged at step {step} of {desc or 'the epoch'}: loss is {value}; "
                                     f"lower optimizer.lr or set clip_grad_norm")
    return values


@torch.no_grad()
def evaluate(model, loader, device, options) -> tuple[float, float, float]:
    """(mean cross-entropy, top-1 accuracy, mean per-class accuracy) over the whole split. The
    loss has no label smoothing (on sigmoid outputs under `sigmoid_before_loss`, as write-up C
    measured it); the per-class mean is over the classes present in the split (scikit-learn's
    balanced_accuracy_score). The per-batch loss sums and correct counts and the per-class tallies
    stay on the device and are read back together once, at the end of the split."""
    model.eval()
    loss_sums, corrects, counts, hits, totals = [], [], [], 0, 0
    for images, labels in loader:
        images, labels = to_device(images, labels, device, options.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.amp):
            logits = model(images)
        # padding samples (compile=true's static shapes) carry IGNORE_INDEX: no loss, never correct, not counted
        loss_sums.append(F.cross_entropy(loss_input(logits, options), labels, reduction="sum"))
        correct = logits.argmax(1) == labels
        corrects.append(correct.sum())
        counts.append((labels != IGNORE_INDEX).sum())
        # a (batch x classes) comparison, not bincount or one_hot, which read the labels' maximum back
        member = labels[:, None] == torch.arange(logits.shape[1], device=device)  # padding is in no class
        hits, totals = hits + (member & correct[:, None]).sum(0), totals + member.sum(0)
    # float32 holds each batch's counts and each class's tallies exactly (< 2**24); summed in Python as
    # before, in batch order
    loss_sums, corrects, counts, hits, totals = _read_together(
        torch.stack(loss_sums), torch.stack(corrects), torch.stack(counts), hits, totals)
    return sum(loss_sums) / sum(counts), sum(corrects) / sum(counts), mean_class_accuracy(hits, totals)


def mean_class_accuracy(hits, totals) -> float:
    """The mean over classes with images (`totals` > 0) of hits / totals: Kornblith et al.'s
    mean per-class accuracy, balanced_accuracy_score in scikit-learn."""
    rates = [hit / total for hit, total in zip(hits, totals) if total > 0]
    return sum(rates) / len(rates)


def _read_together(*tensors) -> list[list[float]]:
    """The tensors' values as float32, in one transfer to the host."""
    values = torch.cat([tensor.float().flatten() for tensor in tensors]).tolist()
    out, start = [], 0
    for tensor in tensors:
        out.append(values[start:start + tensor.numel()])
        start += tensor.numel()
    return out


def _progress(loader, desc):
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
