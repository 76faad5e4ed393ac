"""Comparison report for tlbench sweeps, built from result.json files only.

    python -m tlbench.report multirun/2024-05-01/12-00-00 --threshold 0.9

Public API: `load_runs`, `load_epochs`, `load_iter_loss`, `write_report`.
Imports are lazy so `import tlbench.report` stays instant and never pulls in torch;
pandas, scipy and seaborn load on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_runs": "tlbench.report.load",
    "load_epochs": "tlbench.report.load",
    "load_iter_loss": "tlbench.report.load",
    "write_report": "tlbench.report.build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tlbench.report' has no attribute {name!r}; "
                             f"public names are {__all__}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
