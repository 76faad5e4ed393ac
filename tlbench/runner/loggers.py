"""Experiment trackers (`logger=csv|tensorboard|mlflow|wandb`, several at once as
`logger=[csv,mlflow]`): copies of result.json, which stays the one source of truth. Each tracker
is one small class with the same three methods, `start(config, run)`, `log_epoch(record,
iter_losses)` and `finish(result)`; `build` makes them from the `logger` config group.

A tracker never fails or stops a run: a missing package or any exception in a call logs one
warning naming the tracker and the fix, and that tracker is off for the rest of the run.

Every start copies what result.json already holds, so a tracker's copy always matches it:
- a resumed run: the epochs kept from the earlier attempt are copied first, then the new ones
  (csv and tensorboard rewrite their files whole; wandb rewrites its offline run; mlflow goes on
  in the same MLflow run, by the id kept in `<run>/mlflow.json`, adding the epochs it lacks);
- a run that is complete already (re-running a finished command, e.g. with a logger added: the
  logger settings are not part of a run's identity) trains nothing: its result.json is copied."""

import contextlib
import csv
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tlbench.records import atomic, identity, results
from tlbench.errors import ConfigError

log = logging.getLogger("tlbench")
DEFAULT_EXPERIMENT = "tlbench"  # the experiment (MLflow) or project (W&B) of a run outside a sweep


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    run_dir: Path
    experiment: str = DEFAULT_EXPERIMENT  # the sweep folder's name; DEFAULT_EXPERIMENT outside a sweep

    @property
    def name(self) -> str:
        """`<run folder>-<run_id>`, e.g. `3-1f2e3d4c5b6a` for job 3 of a sweep."""
        return f"{Path(self.run_dir).name}-{self.run_id}"


def scalars(record: dict) -> dict:
    """The numeric fields of an epoch record or summary (no `epoch`, text, flags or lists)."""
    return {k: v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class CsvLogger:
    """logger=csv: result.json's epochs as a table beside it, rewritten atomically after every epoch."""
    name = extra = "csv"
    fix = "check that the run folder is writable"

    def __init__(self, file: str = "metrics.csv"):
        self.file = file

    def start(self, config: dict, run: RunInfo) -> None:
        self.path, self.rows = Path(run.run_dir) / self.file, []

    def log_epoch(self, record: dict, iter_losses: list[float]) -> None:
        self.rows.append({k: v for k, v in record.items() if not isinstance(v, (list, dict))})
        columns = list(dict.fromkeys(k for row in self.rows for k in row))

        def write(handle):
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        atomic.write_atomic(self.path, write, binary=False)

    def finish(self, result: dict) -> None:
        pass


class TensorBoardLogger:
    """logger=tensorboard: event files in the run folder: `train/loss_iter` per step, each epoch's
    `train|val|test/loss|acc`, `epoch/lr`, `epoch/images_per_s`, ... per epoch, and at the end the
    config as hparams with `summary/*` (final and best metrics) as their metrics."""
    name = extra = "tensorboard"
    fix = "check that the run folder is writable"

    def __init__(self, flush_secs: int = 30):
        self.flush_secs = flush_secs

    def start(self, config: dict, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        for old in Path(run.run_dir).glob("events.out.tfevents.*"):  # an earlier attempt's copy: rewritten whole
            old.unlink()
        self.config, self.step = config, 0
        self.writer = SummaryWriter(str(run.run_dir), flush_secs=self.flush_secs)

    def log_epoch(self, record: dict, iter_losses: list[float]) -> None:
        for loss in iter_losses:
            self.step += 1
            self.writer.add_scalar("train/loss_iter", loss, self.step)
        for key, value in scalars(record).items():
            self.writer.add_scalar(self.tag(key), value, record["epoch"])

    @staticmethod
    def tag(key: str) -> str:
        """train_loss -> train/loss, val_acc -> val/acc; the rest under epoch/ (epoch/lr)."""
        split, _, metric = key.partition("_")
        return f"{split}/{metric}" if split in ("train", "val", "test") and metric else f"epoch/{key}"

    def finish(self, result: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        summary = {f"summary/{k}": v for k, v in scalars(result.get("summary") or {}).items()}
        params = {k: v if isinstance(v, (int, float, str)) or v is None else json.dumps(v)
                  for k, v in identity.flatten(self.config).items()}
        for part in hparams(params, summary):
            self.writer.file_writer.add_summary(part)
        last = result["epochs"][-1]["epoch"] if result["epochs"] else 0
        for tag, value in summary.items():
            self.writer.add_scalar(tag, value, last)
        self.writer.close()


class MlflowLogger:
    """logger=mlflow: one MLflow run per tlbench run (name `<folder>-<run_id>`) in the experiment
    named after the sweep folder: the config as parameters (dotted keys), each epoch's metrics
    (step = epoch), `summary/*` at the end, result.json and the run's PNG charts as artifacts, and
    the status (ok, failed, interrupted: FINISHED, FAILED, KILLED). The MLflow run's id is kept in
    `<run>/mlflow.json`: a resumed run goes on in the same MLflow run."""
    name = extra = "mlflow"
    fix = "check logger.mlflow.tracking_uri: a sqlite:///PATH whose folder is writable, or a reachable server"
    STATE_FILE = "mlflow.json"
    STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
    SERVERS = ("http", "https", "databricks", "databricks-uc")  # stores that choose their own artifact location

    def __init__(self, tracking_uri: str, artifact_location: str | None = None, experiment: str | None = None,
                 artifacts: bool = True):
        self.tracking_uri, self.artifact_location = tracking_uri, artifact_location
        self.experiment, self.artifacts = experiment, artifacts

    def start(self, config: dict, run: RunInfo) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run.run_dir)
        with _store_lock(self.tracking_uri):  # parallel jobs would race to create the sqlite tables
            self.client = MlflowClient(self.tracking_uri)
            self.run_id = self._resumed() or self._created(config, run)
        history = self.client.get_metric_history(self.run_id, "val_acc")
        self.logged = max((m.step for m in history), default=0)  # epochs the MLflow run has already

    def _resumed(self) -> str | None:
        try:
            state = json.loads((self.run_dir / self.STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if state.get("tracking_uri") != self.tracking_uri:
            return None
        try:
            found = self.client.get_run(state["run_id"])
        except Exception:  # noqa: BLE001 - gone from this store (deleted, another database): a new run
            return None
        if found.info.lifecycle_stage != "active":
            return None
        self.client.update_run(found.info.run_id, status="RUNNING")
        return found.info.run_id

    def _created(self, config: dict, run: RunInfo) -> str:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        experiment_id = self._experiment_id(self.experiment or run.experiment)
        created = self.client.create_run(experiment_id, run_name=run.name, tags={
            "tlbench.run_id": run.run_id, "tlbench.run_dir": str(self.run_dir.resolve())})
        params = [Param(_mlflow_key(k)[:MAX_ENTITY_KEY_LENGTH],
                        (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM_VAL_LENGTH])
                  for k, v in identity.flatten(config).items()]
        for first in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(created.info.run_id, params=params[first:first + MAX_PARAMS_TAGS_PER_BATCH])
        state = {"tracking_uri": self.tracking_uri, "experiment_id": experiment_id, "run_id": created.info.run_id}
        atomic.write_atomic(self.run_dir / self.STATE_FILE, lambda handle: json.dump(state, handle), binary=False)
        return created.info.run_id

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.artifact_location and self.tracking_uri.partition(":")[0] not in self.SERVERS:
            location = str(Path(self.artifact_location).resolve() / name)
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - another job of the sweep created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_epoch(self, record: dict, iter_losses: list[float]) -> None:
        if record["epoch"] <= self.logged:  # copied by an earlier attempt
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_mlflow_key(k), v, now, record["epoch"])
                                                    for k, v in scalars(record).items()])
        self.logged = record["epoch"]

    def finish(self, result: dict) -> None:
        from mlflow.entities import Metric

        now, last = int(time.time() * 1000), self.logged
        summary = [Metric(f"summary/{k}", v, now, last) for k, v in scalars(result.get("summary") or {}).items()
                   if math.isfinite(v)]
        if summary:
            self.client.log_batch(self.run_id, metrics=summary)
        if self.artifacts:
            for path in [self.run_dir / results.RESULT_FILE, *_charts(self.run_dir)]:
                folder = path.parent.relative_to(self.run_dir).as_posix()
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        self.client.set_terminated(self.run_id, self.STATUS.get(result["status"], "FAILED"))


class WandbLogger:
    """logger=wandb: a Weights & Biases run in `<run>/wandb/`, offline by default (no account, no
    network; `wandb sync <run>/wandb/latest-run` uploads it later). Same metrics as tensorboard:
    `train/loss_iter` against `iter`, the epoch metrics against `epoch`, the summary at the end.
    Each start rewrites the offline run whole (one per tlbench run folder, same W&B id)."""
    name = extra = "wandb"
    fix = "check logger.wandb.mode (offline needs no account; online needs `wandb login`)"

    def __init__(self, mode: str = "offline", project: str | None = None, entity: str | None = None):
        self.mode, self.project, self.entity = mode, project, entity

    def start(self, config: dict, run: RunInfo) -> None:
        import wandb

        run_dir = Path(run.run_dir)
        wandb_id = hashlib.sha256(f"{run_dir.resolve()}|{run.run_id}".encode()).hexdigest()[:12]
        for old in (run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"):  # an earlier attempt's copy
            shutil.rmtree(old)
        self.run = wandb.init(mode=self.mode, dir=str(run_dir), project=self.project or run.experiment,
                              entity=self.entity, name=run.name, id=wandb_id, config=config, resume="allow",
                              reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        self.run.define_metric("train/loss_iter", step_metric="iter")
        self.run.define_metric("*", step_metric="epoch")
        self.step = 0

    def log_epoch(self, record: dict, iter_losses: list[float]) -> None:
        for loss in iter_losses:
            self.step += 1
            self.run.log({"train/loss_iter": loss, "iter": self.step})
        self.run.log({"epoch": record["epoch"], **{TensorBoardLogger.tag(k): v for k, v in scalars(record).items()}})

    def finish(self, result: dict) -> None:
        self.run.summary.update({f"summary/{k}": v for k, v in scalars(result.get("summary") or {}).items()})
        self.run.finish(exit_code=0 if result["status"] == "ok" else 1)


LOGGERS = {cls.name: cls for cls in (CsvLogger, TensorBoardLogger, MlflowLogger, WandbLogger)}


class Loggers:
    """The run's trackers, fed from result.json as it grows: `start(result)` once it is first
    written, `update(result)` after each epoch's write, `finish(result)` after the last write;
    `copy(result)` gives a complete run to trackers that may not have it yet."""

    def __init__(self, loggers: list, run: RunInfo):
        self.active, self.run, self.sent = list(loggers), run, 0

    def start(self, result: dict) -> None:
        for logger in list(self.active):
            self._call(logger, "start", result["config"], self.run)
        self.update(result)  # what an earlier attempt left: a resumed run's kept epochs

    def update(self, result: dict) -> None:
        per_epoch = result.get("iters_per_epoch") or 0
        for record in result["epochs"][self.sent:]:
            losses = result["iter_loss"][(record["epoch"] - 1) * per_epoch:record["epoch"] * per_epoch]
            for logger in list(self.active):
                self._call(logger, "log_epoch", record, losses)
        self.sent = len(result["epochs"])

    def finish(self, result: dict) -> None:
        self.update(result)
        for logger in list(self.active):
            self._call(logger, "finish", result)

    def copy(self, result: dict) -> None:
        if self.active:
            self.start(result)
            self.finish(result)
        if self.active:
            log.info("logger=%s: copied the complete run %s from its result.json (nothing trained)",
                     ",".join(logger.name for logger in self.active), self.run.run_id)

    def _call(self, logger, method: str, *args) -> None:
        try:
            getattr(logger, method)(*args)
        except ImportError as err:
            self.active.remove(logger)
            log.warning("logger=%s is off for this run, which goes on without it: %s; install it with "
                        "pip install 'tlbench[%s]'", logger.name, err, logger.extra)
        except Exception as err:  # noqa: BLE001 - a tracker is a copy of result.json: never fail the run over it
            self.active.remove(logger)
            log.warning("logger=%s failed in %s (%s: %s) and is off for the rest of this run, which goes on "
                        "(result.json has everything); %s", logger.name, method, type(err).__name__, err, logger.fix)


def build(settings: dict | None, run: RunInfo) -> Loggers:
    """`settings`: the composed `logger` group, {name: {its keyword arguments}}; None = no tracker."""
    loggers = []
    for name, kwargs in (settings or {}).items():
        if name not in LOGGERS:
            raise ConfigError(f"logger.{name} is not a logger; choose from {', '.join(LOGGERS)}")
        try:
            loggers.append(LOGGERS[name](**(kwargs or {})))
        except TypeError as err:
            raise ConfigError(f"logger.{name}: {err}") from None
    return Loggers(loggers, run)


def _charts(run_dir: Path) -> list[Path]:
    """The PNG charts a run drew (the LR finder's), not those of archived attempts."""
    return sorted(p for p in run_dir.rglob("*.png") if "archive" not in p.relative_to(run_dir).parts)


def _mlflow_key(key: str) -> str:
    """MLflow names take letters, digits, _ - . / and spaces."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _store_lock(tracking_uri: str):
    """A file lock beside a local sqlite store, else nothing to hold."""
    if not tracking_uri.startswith("sqlite:///"):
        return contextlib.nullcontext()
    from filelock import FileLock

    path = Path(tracking_uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{path}.lock")
