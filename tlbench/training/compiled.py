"""`compile=true`: torch.compile with static shapes, a recompile budget sized to the run's freeze
phases, a loud fallback to eager, and compile time kept out of the timed epochs.

Dynamo compiles a new graph whenever a guard of the cached ones fails. In a run those are: the
parameters' requires_grad (each freeze phase), grad mode and the modules' train/eval flags
(training and evaluation, BatchNorm layers kept in eval mode while frozen) and the input's shape.
Shapes are made static here (`StaticBatches`), so a run needs at most two graphs per freeze phase
(train, eval; `graphs_needed`). With torch's default limit (8 per compiled frame) freeze=gradual
on a 6-stage model ran out: measured on timm's test_resnet, 6 epochs, the 9th graph (phase top5)
hit it and epochs 5-6 ran eagerly, with one dynamo log line and nothing in result.json. `Compiled` raises the limit
to what the phases need, only while the model runs, and turns hitting it into a warning, a record
in result.json (`compile.fell_back_to_eager`) and eager execution, never a silent fallback.

The engine compiles each phase's graphs in a warm-up before its epoch is timed (engine.warm_up);
`Compiled.record` is result.json's `compile` block (docs/reference/result-json.md)."""

import logging
import time

import torch
from torch import nn

from tlbench.training.checkpoint import loader_generators
from tlbench.errors import ConfigError

log = logging.getLogger("tlbench")
BACKEND = "inductor"  # torch.compile's default. Tests use "aot_eager": the same guards and recompiles
                      # without inductor's C++ build, which takes minutes per graph on 2 busy CPU cores
IGNORE_INDEX = -100   # F.cross_entropy's default ignore_index: the label of a padding sample


def graphs_needed(freeze, epochs: int) -> int:
    """Graphs one compiled frame needs in a run: train and eval for each freeze phase."""
    return 2 * len({freeze.phase(epoch).name for epoch in range(epochs)})


def limit_setting() -> str:
    """The recompile limit's name in this torch (cache_size_limit before torch 2.6, an alias after)."""
    import torch._dynamo

    return "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process (its own counter, read by tests too)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class Compiled(nn.Module):
    """`model` through torch.compile (static shapes) until dynamo gives up, then eagerly, loudly.
    `_orig_mod` is the plain model, as on torch.compile's own wrapper (the engine trains, freezes
    and saves that one); the compiled callable is not a submodule, so the parameters are listed once."""

    def __init__(self, model: nn.Module, graphs_needed: int):
        super().__init__()
        # A process runs one compiled run at a time, and joblib reuses its workers between jobs: the
        # graphs of an earlier run would count against this run's limit and flatter its compile_s.
        torch._dynamo.reset()
        self._orig_mod = model
        object.__setattr__(self, "_compiled", torch.compile(model, backend=BACKEND, dynamic=False))
        self.limit_setting = limit_setting()
        limit = max(getattr(torch._dynamo.config, self.limit_setting), graphs_needed)  # never below torch's default
        self.limits = {self.limit_setting: limit, "fail_on_recompile_limit_hit": True}
        self.record = {"backend": BACKEND, "dynamic": False, "graphs_needed": graphs_needed, "recompile_limit": limit,
                       "compile_s": 0.0, "phases": [], "graphs_in_timed_epochs": 0, "fell_back_to_eager": False,
                       "fallback_reason": None}
        self._graphs_at = compiled_graphs()

    def forward(self, images):
        if not self.record["fell_back_to_eager"]:
            try:
                with torch._dynamo.config.patch(**self.limits):
                    return self._compiled(images)
            except torch._dynamo.exc.FailOnRecompileLimitHit as err:  # raised before the frame runs
                self._fall_back(err)
        return self._orig_mod(images)

    def _fall_back(self, err: Exception) -> None:
        reason = str(err).strip().splitlines()[0]
        log.warning("compile=true: dynamo hit its recompile limit (%s=%d) and the model now runs EAGERLY for the "
                    "rest of the run (result.json compile.fell_back_to_eager): %s", self.limit_setting,
                    self.limits[self.limit_setting], reason)
        self.record.update(fell_back_to_eager=True, fallback_reason=reason)

    def resume(self, earlier: dict | None) -> None:
        """Keeps the warm-ups and fallback of an earlier attempt of the run (from its checkpoint)."""
        if earlier:
            self.record.update(compile_s=earlier["compile_s"], phases=list(earlier["phases"]),
                               graphs_in_timed_epochs=earlier["graphs_in_timed_epochs"])

    def compile_phase(self, epoch: int, phase: str, steps) -> float:
        """Runs `steps()` (what compiles the phase's graphs), records its time as the phase's
        compile_s and returns it."""
        started, graphs = time.perf_counter(), compiled_graphs()
        steps()
        compile_s = time.perf_counter() - started
        self._graphs_at = compiled_graphs()
        self.record["phases"].append({"epoch": epoch, "phase": phase, "compile_s": compile_s,
                                      "graphs": self._graphs_at - graphs})
        self.record["compile_s"] += compile_s
        log.info("compiled phase %s in %.1f s (%d graphs)", phase, compile_s, self._graphs_at - graphs)
        return compile_s

    def check_timed(self, epoch: int) -> None:
        """After a timed epoch: graphs compiled inside it (its images/s then includes compile time)."""
        late, self._graphs_at = compiled_graphs() - self._graphs_at, compiled_graphs()
        if late:
            log.warning("compile=true: %d graph(s) compiled during epoch %d, outside the warm-up: its time_s and "
                        "images_per_s include compile time (result.json compile.graphs_in_timed_epochs)", late, epoch)
            self.record["graphs_in_timed_epochs"] += late


class CompileHooks:
    """engine.fit's hooks for a Compiled model: the compile record carried across a resume, each
    phase's graphs compiled (engine.warm_up) before its first epoch is timed, val and test scored on
    the compiled model itself (no eval view: its graphs are the ones compiled), and a check that a
    timed epoch compiled nothing."""

    def __init__(self, model: Compiled):
        self.model = model

    def start(self, history, train_loader) -> None:
        self.model.resume(history.compile)
        history.compile = self.model.record
        self.model.record["dropped_train_images"] = getattr(train_loader, "dropped", 0)  # per epoch (StaticBatches)

    def phase_ready(self, epoch: int, phase_name: str, warm_up) -> float:
        return self.model.compile_phase(epoch, phase_name, warm_up)

    def scored(self, model: nn.Module) -> nn.Module:
        return model

    def epoch_done(self, epoch: int) -> None:
        self.model.check_timed(epoch)


class StaticBatches:
    """`loader` with every batch `batch_size` long, so the compiled model sees one shape. Training
    drops the partial last batch: padding it would put made-up samples into BatchNorm's batch
    statistics, and with a new shuffle every epoch each image still trains as often on average
    (the count is `dropped` per epoch, recorded). Evaluation pads it with zero images labelled
    IGNORE_INDEX, which the loss ignores and the accuracy does not count, so every image is scored."""

    def __init__(self, loader, batch_size: int, size: int, train: bool):
        if train and size < batch_size:
            raise ConfigError(f"compile=true drops the partial last training batch, and the train split has {size} "
                              f"images, fewer than batch_size={batch_size}: lower batch_size or set compile=false")
        self.loader, self.batch_size, self.train = loader, batch_size, train
        self.dropped = size % batch_size if train else 0

    @property
    def generators(self) -> list[torch.Generator]:
        """The inner loader's random generators (saved in checkpoints)."""
        return loader_generators(self.loader)

    def __len__(self):
        return len(self.loader) - (1 if self.dropped else 0)

    def __iter__(self):
        for images, labels in self.loader:
            short = self.batch_size - len(labels)
            if short and self.train:
                continue
            if short:
                images = torch.cat([images, images.new_zeros((short, *images.shape[1:]))])
                labels = torch.cat([labels, labels.new_full((short,), IGNORE_INDEX)])
            yield images, labels


def static_loaders(loaders: dict, sizes: dict, batch_size: int, eval_batch_size: int) -> dict:
    """Every loader of a run as StaticBatches; `sizes`: images per split."""
    return {name: StaticBatches(loader, batch_size if name == "train" else eval_batch_size, sizes[name],
                                train=name == "train") for name, loader in loaders.items()}
