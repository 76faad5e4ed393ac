"""What a run does with what an earlier attempt left in its folder: skip (complete already),
resume (from the last epoch checkpoint) or start fresh. Nothing is deleted: files that a fresh
start would overwrite are moved into `archive/<time>/` first."""

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tlbench.training import checkpoint
from tlbench.records import results

log = logging.getLogger("tlbench")
RESULT_FILE = results.RESULT_FILE
ARCHIVED_RESULT = "result.archived.json"  # not named result.json, so reports do not count it twice
RUN_FILES = (RESULT_FILE, checkpoint.CHECKPOINT_FILE, "best.pt", "model.safetensors", "model.json",
             "best.safetensors", "best.json")


@dataclass
class Plan:
    action: str                        # "skip", "resume" or "fresh"
    previous: dict | None = None       # the earlier result.json (skip and resume)
    state: dict | None = None          # the loaded checkpoint (resume)


def plan(run_dir: Path, run_id: str, resume: bool) -> Plan:
    run_dir = Path(run_dir)
    result_path, checkpoint_path = run_dir / RESULT_FILE, run_dir / checkpoint.CHECKPOINT_FILE
    if not any((run_dir / name).exists() for name in RUN_FILES):
        return Plan("fresh")
    if not resume:
        return _fresh(run_dir, "resume=false")
    previous = _read(result_path)
    if previous is None:
        return _fresh(run_dir, f"{result_path} is missing or unreadable")
    if previous.get("run_id") != run_id:
        return _fresh(run_dir, f"it holds run {previous.get('run_id')}, a different configuration than {run_id}")
    if previous.get("status") == "ok":
        summary = previous.get("summary") or {}
        log.info("run %s in %s is complete already (final test acc %.2f%%): skipped; pass resume=false to train "
                 "it again", run_id, run_dir, 100 * summary.get("final_test_acc", float("nan")))
        return Plan("skip", previous)
    if not checkpoint_path.is_file():
        return _fresh(run_dir, f"its earlier attempt ({previous.get('status')}) left no checkpoint")
    try:
        state = checkpoint.load(checkpoint_path)
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint means starting over, never a crash
        return _fresh(run_dir, f"{checkpoint_path} cannot be read ({type(err).__name__}: {err})")
    if state.get("run_id") != run_id:
        return _fresh(run_dir, f"{checkpoint_path} belongs to run {state.get('run_id')}, not {run_id}")
    log.info("resuming run %s in %s after epoch %d", run_id, run_dir, state["epoch"])
    return Plan("resume", previous, state)


def archive(run_dir: Path) -> Path | None:
    """Moves the run files of an earlier attempt into `archive/<time>/`; returns that folder."""
    present = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if not present:
        return None
    target = run_dir / "archive" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    target.mkdir(parents=True)
    for path in present:
        os.replace(path, target / (ARCHIVED_RESULT if path.name == RESULT_FILE else path.name))
    return target


def _fresh(run_dir: Path, why: str) -> Plan:
    target = archive(run_dir)
    log.warning("starting %s afresh: %s; the earlier files are kept in %s", run_dir, why, target)
    return Plan("fresh")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
