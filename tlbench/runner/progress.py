"""A sweep says where it is: after each run of a multirun, one log line

    [sweep] 5/12 done (2 skipped), 1 failed, 6 left, ~4 min left

`done` counts runs complete now, `skipped` those of them this command did not train (complete
before: a killed sweep run again; or being trained by another live process), `failed` those that
ended without a result. The estimate is the mean wall time of the runs this command trained
(done or failed) x the runs left / the jobs the launcher runs at once; `estimating` until one has
finished. A single run keeps its per-epoch progress bar and prints no such line.

Joblib runs each job's callbacks in a worker process, so the runs' outcomes go to one file per
command in `<sweep>/.progress/`, appended under a lock; each job end reads it back to count."""

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from filelock import FileLock
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from tlbench.records.results import RESULT_FILE
from tlbench.runner import devices

log = logging.getLogger("tlbench")
PROGRESS_FOLDER = ".progress"  # in the sweep folder, beside .devices/


@dataclass(frozen=True)
class Finished:
    """One run's end, as a line of the progress file."""
    outcome: str   # "done" (trained now), "skipped" (not trained by this command) or "failed"
    seconds: float


def progress_line(finished: list[Finished], total: int | None, parallel: int) -> str:
    """`[sweep] 3/12 done, 1 failed, 8 left, ~6 min left`; without a known total, done and failed only."""
    skipped = sum(f.outcome == "skipped" for f in finished)
    failed = sum(f.outcome == "failed" for f in finished)
    done = len(finished) - failed
    parts = [f"{done}/{total} done" if total else f"{done} done"]
    parts[0] += f" ({skipped} skipped)" if skipped else ""
    parts.append(f"{failed} failed")
    if total:
        left = max(0, total - len(finished))
        parts.append(f"{left} left")
        if left:
            parts.append(_time_left(finished, left, parallel))
    return "[sweep] " + ", ".join(parts)


def _time_left(finished: list[Finished], left: int, parallel: int) -> str:
    trained = [f.seconds for f in finished if f.outcome != "skipped"]
    if not trained:
        return "estimating"
    seconds = sum(trained) / len(trained) * left / max(1, min(parallel, left))
    if seconds < 90:
        return f"~{math.ceil(seconds)} s left"
    if seconds < 90 * 60:
        return f"~{round(seconds / 60)} min left"
    return f"~{seconds / 3600:.1f} h left"


def planned_runs(overrides: list[str], sweeper: dict) -> int | None:
    """How many runs the sweep launches: Optuna's n_trials, or the product of the basic sweeper's
    lists (its `params` and the command's overrides; a key given twice counts once, as there).
    None when it cannot be known ahead (another sweeper, a sweep that is not a list)."""
    if sweeper.get("n_trials"):
        return int(sweeper["n_trials"])
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides([*params, *overrides])
        sizes = {o.get_key_element(): len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
                 for o in parsed}
    except Exception:  # noqa: BLE001 - the count only informs; Hydra reports a bad override itself
        return None
    return math.prod(sizes.values())


def outcome(run_dir: Path, before: tuple | None, job_failed: bool) -> str:
    """How a job ended, from its result.json and that file's identity before the job (`_stamp`)."""
    try:
        status = json.loads((run_dir / RESULT_FILE).read_text()).get("status")
    except (OSError, ValueError):
        status = None
    if job_failed or status not in ("ok", "running"):
        return "failed"
    if status == "running":  # after our job: another live process holds the run (run_lock=skip)
        return "skipped"
    return "skipped" if _stamp(run_dir) == before else "done"


def _stamp(run_dir: Path) -> tuple | None:
    """result.json's inode, size and time: every write replaces the file (write_json_atomic)."""
    try:
        stat = (run_dir / RESULT_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class SweepProgress(Callback):
    """conf/config.yaml lists it last: Hydra calls `*_end` hooks in reverse order, so its cleanup runs
    before ExitOnFailedRuns ends the process. The lines only inform: a failure to count (an unwritable
    sweep folder, a file system without locks) is a warning, never a failed run or sweep."""

    def __init__(self) -> None:
        self.file: Path | None = None  # set when a multirun starts; joblib's workers get a copy with it
        self.total: int | None = None
        self.parallel = 1
        self._job: tuple[float, tuple | None] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        hydra = config.hydra
        self.total = planned_runs(list(hydra.overrides.task), OmegaConf.to_container(hydra.sweeper, resolve=False))
        self.parallel = devices.parallel_jobs(OmegaConf.to_container(hydra.launcher, resolve=True), devices.cores())
        folder = Path(hydra.sweep.dir).resolve() / PROGRESS_FOLDER
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            log.warning("[sweep] no progress lines: %s", err)
            return
        self.file = folder / f"{datetime.now():%Y-%m-%d_%H-%M-%S}-{os.getpid()}.jsonl"
        log.info("%s", progress_line([], self.total, self.parallel))

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if self.file:
            self._job = time.monotonic(), _stamp(Path(config.hydra.runtime.output_dir))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if not self.file or self._job is None:
            return
        started, before = self._job
        end = Finished(outcome(Path(config.hydra.runtime.output_dir), before, job_return.status == JobStatus.FAILED),
                       time.monotonic() - started)
        try:
            with FileLock(self.file.with_suffix(".lock")):
                with self.file.open("a") as handle:
                    handle.write(json.dumps(asdict(end)) + "\n")
                finished = [Finished(**json.loads(line)) for line in self.file.read_text().splitlines()]
                log.info("%s", progress_line(finished, self.total, self.parallel))  # in order, across processes
        except OSError as err:  # a full disk, a file system without locks
            log.warning("[sweep] this run's end was not counted (%s): %s", self.file, err)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.file:
            for path in (self.file, self.file.with_suffix(".lock")):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.file.parent.rmdir()  # only when empty: another live command of the same sweep may use it
