"""The one way tlbench writes a file that must never be torn (result.json, checkpoints, caches,
converted weights): a temporary file in the same folder, fsync, then os.replace. A reader, or a
process killed mid-write, sees the old file or the new one, never half of one. Torch-free."""

import os
from pathlib import Path
from typing import IO, Callable


def write_atomic(path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """`write(handle)` fills the temporary file; OSError (a full disk, no permission) propagates
    with the previous file intact and the temporary file removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path
