"""Sweep-level pieces: the sweep folder's name, and the Hydra callback that makes a sweep with
failed runs exit non-zero, naming them. The callback is listed before the report callback in
conf/config.yaml: Hydra calls `on_multirun_end` hooks in reverse order, so the report (which
lists failed runs) is written first."""

import hashlib
import json
import logging
import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from tlbench.errors import USER_ERROR_EXIT, UserError
from tlbench.runner import runlock
from tlbench.records.identity import is_identity_key
from tlbench.records.results import RESULT_FILE

log = logging.getLogger("tlbench")


SWEEP_NAME_RESOLVER = "tlbench.sweep_name"


def sweep_name(overrides) -> str:
    """The sweep folder's name, from the command's overrides: the same command finds the same
    folder again (that is how a killed sweep resumes), a different one gets its own. Settings
    that do not change what is trained (resume, results_dir, num_workers, ...) are left out, so
    `resume=false` or a different launcher still lands in the same folder."""
    kept = [o for o in overrides if is_identity_key(re.split(r"[=@]", o, maxsplit=1)[0])]
    readable = re.sub(r"[^\w=,.+@-]+", "-", "_".join(kept))[:80] or "defaults"
    return f"{readable}-{hashlib.sha256(chr(10).join(kept).encode()).hexdigest()[:8]}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(SWEEP_NAME_RESOLVER):
        # use_cache: every job reads the value its launcher resolved from the command's overrides
        # (Hydra copies the cache into each job's config, where hydra.overrides.task is the job's own)
        OmegaConf.register_new_resolver(SWEEP_NAME_RESOLVER, sweep_name, use_cache=True)


def failed_runs(sweep_dir) -> list[tuple[Path, str]]:
    """Runs directly under the sweep folder (`<job>/result.json`) that are not ok, less those that
    another live process is training now (the same command started twice: see runlock.py)."""
    failed = []
    for path in sorted(Path(sweep_dir).glob(f"*/{RESULT_FILE}")):
        holder = runlock.live_holder(path.parent)
        if holder:
            log.warning("run %s is still being trained by %s: not counted as failed", path.parent,
                        runlock.describe(holder))
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            failed.append((path, f"unreadable: {err}"))
            continue
        if result.get("status") != "ok":
            error = result.get("error") or {}
            failed.append((path, f"{result.get('status')}: {error.get('type')}: {error.get('message')}"))
    return failed


def user_error(why: str) -> bool:
    """Whether a failed run's "status: type: message" (failed_runs) names an error a user can fix."""
    parts = why.split(": ", 2)
    return len(parts) == 3 and parts[1] in {cls.__name__ for cls in UserError.__subclasses__()}


class ExitOnFailedRuns(Callback):
    """A sweep with failed runs exits non-zero, naming them: 2 when every failure is an error a user
    can fix (errors.UserError: a setting, missing data or weights), as a single run does, else 1."""

    def on_multirun_end(self, config, **kwargs) -> None:
        failed = failed_runs(config.hydra.sweep.dir)
        if failed:
            for path, why in failed:
                log.error("failed run %s (%s)", path.parent, why)
            log.error("%d run(s) of the sweep failed; the others are complete", len(failed))
            sys.exit(USER_ERROR_EXIT if all(user_error(why) for _, why in failed) else 1)
