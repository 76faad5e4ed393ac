"""Hydra callback that writes the comparison report when a multirun sweep ends.

conf/config.yaml:
    hydra:
      callbacks:
        report:
          _target_: tlbench.report.callback.ReportCallback
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes the report into `hydra.sweep.dir` after all jobs of a sweep return.

    The keyword arguments are those of `write_report` (metric, threshold, fraction, font).
    A report failure is logged and swallowed: the sweep's results are already on disk and
    must not be marked failed because a chart could not be drawn.
    """

    def __init__(self, metric: str = "test_acc", threshold: float = 0.9,
                 fraction: float = 0.9, font: str | None = None) -> None:
        self.options = {"metric": metric, "threshold": threshold, "fraction": fraction,
                        "font": font}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = None
        try:
            sweep_dir = config.hydra.sweep.dir
            from tlbench.report.build import write_report

            report = write_report([sweep_dir], sweep_dir, **self.options)
            log.info("tlbench report written to %s", report)
        except Exception:  # noqa: BLE001 - never fail a finished sweep over its report
            log.exception("tlbench report could not be written for sweep dir %s; the runs "
                          "are intact, retry with: python -m tlbench.report %s",
                          sweep_dir, sweep_dir)
