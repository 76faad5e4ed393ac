"""Hydra callback run after every multirun: a sweep with failed runs exits non-zero, naming them.
Listed before the report callback in conf/config.yaml: Hydra calls `on_multirun_end` hooks in
reverse order, so the report (which lists failed runs) is written first."""

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("tlbench")


def failed_runs(sweep_dir) -> list[tuple[Path, str]]:
    failed = []
    for path in sorted(Path(sweep_dir).glob("**/result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            failed.append((path, f"unreadable: {err}"))
            continue
        if result.get("status") != "ok":
            error = result.get("error") or {}
            failed.append((path, f"{result.get('status')}: {error.get('type')}: {error.get('message')}"))
    return failed


class ExitOnFailedRuns(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        failed = failed_runs(config.hydra.sweep.dir)
        if failed:
            for path, why in failed:
                log.error("failed run %s (%s)", path.parent, why)
            log.error("%d run(s) of the sweep failed; the others are complete", len(failed))
            sys.exit(1)
