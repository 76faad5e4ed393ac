"""The one locked disk cache: decoded splits (tensor_data.py) and a probe's frozen features
(probes/features.py) are each a torch-saved dict in one file, keyed by what determines it.
Parallel jobs needing the same file: the first builds it (or mends a damaged one) while the others
wait for the lock, then read its file. The write is atomic (records/atomic.py), and a file that
cannot be read or fails its check is built again and rewritten: a damaged cache costs one rebuild
and never fails a run."""

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from tlbench.records import atomic

log = logging.getLogger("tlbench")


def read_or_build(path: Path, check: Callable[[dict], None], build: Callable[[], dict],
                  what: str, again: str) -> tuple[dict, bool]:
    """(the stored dict, True) when `path` holds one that `check` accepts (it raises otherwise);
    else (`build()`, False), written to `path`. `what` and `again` name the cache and the rebuild
    in the warning, e.g. "decode cache", "decoding the train split again"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                check(stored)
                return stored, True
            except Exception as err:  # noqa: BLE001 - whatever is wrong with the file, building again mends it
                why = ": ".join([type(err).__name__, *str(err).splitlines()[:1]])
                log.warning("the %s %s cannot be read (%s); %s and rewriting the file", what, path, why, again)
        stored = build()
        atomic.write_atomic(path, functools.partial(torch.save, stored))
        return stored, False
