"""One process per run folder: `<run folder>/run.lock`, a small JSON file naming the process that
trains the run (pid, host, its start time). A second process running the same command leaves a
held run alone (`run_lock=skip`, the default) or waits for it (`run_lock=wait`); it never resumes a
run that is still being trained. Torch-free (the sweep's exit check reads locks too).

Why a file created with O_CREAT|O_EXCL and not `filelock` (flock/fcntl): the file says who holds
the run, so the process that finds it can name the holder; and it is visible from every host that
mounts the results folder, whereas flock/fcntl locks are not shared between hosts on some network
file systems (NFS without lockd, Lustre or GPFS mounted without flock), which is where a requeued
cluster job meets its first attempt. The price: a holder killed without clean-up (SIGKILL, a lost
node) leaves the file behind, so whoever finds it decides whether its holder is gone:
- same host: gone when no process has the pid, the process has exited (a zombie), or the pid now
  belongs to a process started later than the recorded one (the start time in /proc/<pid>/stat;
  Linux only, elsewhere the pid alone decides);
- another host: its processes cannot be seen from here, so the holder refreshes the file's
  modification time every HEARTBEAT_S seconds, and a lock not refreshed for STALE_AFTER_S is
  taken to be a dead process's (a crashed node, a node that lost the folder). The two hosts'
  clocks must agree to within that;
- a SLURM job requeued (preempted, timed out, `scontrol requeue`, a failed node): SLURM starts it
  again under the same job id with SLURM_RESTART_COUNT one higher, once it has ended (or, for a
  failed node, given up) the earlier attempt, so a lock taken by an earlier attempt of this very
  job is taken to be gone whatever its host. Without this, an attempt killed without clean-up
  (SLURM's SIGKILL after KillWait: submitit ignores the SIGTERM before it) on another node would
  make its requeued job skip the run for STALE_AFTER_S, and the job would end without training it.
A stale lock is taken over with a warning naming its dead holder."""

import contextlib
import json
import logging
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path

from tlbench.errors import ConfigError, ResultsWriteError
from tlbench.records.results import RESULT_FILE

log = logging.getLogger("tlbench")
LOCK_FILE = "run.lock"
CHOICES = ("skip", "wait")
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0  # ten missed heartbeats: room for a slow shared file system and clock skew between hosts
WRITING_GRACE_S = 10.0  # an unreadable lock younger than this is still being written by its creator


class RunHeld(Exception):
    """Another live process trains the run (run_lock=skip)."""

    def __init__(self, run_dir: Path, holder: dict):
        super().__init__(f"run {run_dir} is being trained by {describe(holder)}; skipped: run the same command "
                         f"again when it finishes, or set run_lock=wait to wait for it")
        self.run_dir, self.holder = run_dir, holder


class RunLock:
    """This process's hold on a run folder, from `take` until `release` or the end of its `with`
    block, however that ends (an exception, Ctrl-C, SystemExit from a cluster's preemption)."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = path, record
        self._stop = threading.Event()
        threading.Thread(target=self._heartbeat, name="tlbench-run-lock", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):  # tells other hosts the holder is alive (see the module's doc)
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if _read(self.path)[0] == self.record:  # never remove a lock this process no longer holds
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def take(run_dir, when_held: str = "skip", poll_s: float = 5.0) -> RunLock:
    """Holds `run_dir` for this process. When a live process holds it: raises RunHeld (skip), or
    waits until that process lets go or dies (wait), polling every `poll_s` seconds."""
    if when_held not in CHOICES:
        raise ConfigError(f"run_lock={when_held!r} is not known; use skip (leave a run another process is training "
                          f"to it) or wait (wait for that process to finish, then go on)")
    run_dir, waiting = Path(run_dir), False
    path = run_dir / LOCK_FILE
    while True:
        record = _record()
        if _create(path, record):
            return RunLock(path, record)
        holder, age_s = _read(path)
        if holder is None and age_s is None:  # let go of between our two looks: try again
            continue
        if holder is None and age_s < WRITING_GRACE_S:
            time.sleep(0.05)
            continue
        why = stale_because(holder, age_s)
        if why:
            log.warning("taking over run %s from %s: %s", run_dir, describe(holder), why)
            _take_over(path, holder)
        elif when_held == "skip":
            raise RunHeld(run_dir, holder)
        else:
            if not waiting:
                log.warning("run %s is being trained by %s; waiting for it to finish (run_lock=wait)",
                            run_dir, describe(holder))
            waiting = True
            time.sleep(poll_s)


def live_holder(run_dir) -> dict | None:
    """The process training `run_dir` now, or None (no lock, or its holder is gone)."""
    holder, age_s = _read(Path(run_dir) / LOCK_FILE)
    if holder is None:
        return None
    return None if stale_because(holder, age_s) else holder


def stale_because(holder: dict | None, age_s: float) -> str | None:
    """Why the lock's holder is known to be gone, or None while it may be alive. `age_s`: seconds
    since the lock file was last refreshed."""
    if holder is None:
        return f"its lock file is unreadable (last written {age_s:.0f} s ago)"
    attempt = _slurm_attempt()
    if attempt and holder.get("slurm_job") == attempt["slurm_job"] \
            and holder.get("slurm_restart", 0) < attempt["slurm_restart"]:
        return (f"SLURM has requeued job {attempt['slurm_job']} since that attempt (restart "
                f"{holder.get('slurm_restart', 0)}; this is restart {attempt['slurm_restart']})")
    if holder["host"] != socket.gethostname():
        if age_s > STALE_AFTER_S:
            return (f"its lock was last refreshed {age_s / 60:.0f} min ago; a live holder refreshes it every "
                    f"{HEARTBEAT_S:.0f} s")
        return None
    pid = holder["pid"]
    if not _pid_alive(pid):
        return f"no process {pid} runs on this host"
    state, started = _proc_stat(pid)
    if state == "Z":
        return f"process {pid} has exited"
    if started is not None and holder.get("process_start") is not None and started != holder["process_start"]:
        return f"pid {pid} now belongs to another process, started after the lock was taken"
    return None


def describe(holder: dict | None) -> str:
    """'pid 1234 on host h since 12:00:03' (the date too when it is not today)."""
    if holder is None:
        return "an unknown process"
    try:
        since = datetime.fromisoformat(holder.get("started_at"))
        shown = since.strftime("%H:%M:%S" if since.date() == datetime.now().date() else "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        shown = "an unknown time"
    job = f" (SLURM job {holder['slurm_job']})" if holder.get("slurm_job") else ""
    return f"pid {holder['pid']} on host {holder['host']}{job} since {shown}"


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started_at": datetime.now().isoformat(timespec="seconds"), "process_start": _proc_stat(os.getpid())[1],
            **_slurm_attempt()}


def _slurm_attempt() -> dict:
    """{"slurm_job": "1234", "slurm_restart": 1} inside a SLURM job (SLURM_RESTART_COUNT counts its
    requeues, absent or 0 before the first), {} elsewhere."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return {}
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {"slurm_job": job, "slurm_restart": int(restart) if restart.isdigit() else 0}


def _create(path: Path, record: dict) -> bool:
    """Creates the lock holding `record`; False when a lock exists already."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise _cannot_write(path, err) from err
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as err:
        path.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _cannot_write(path, err) from err
        raise
    return True


def _cannot_write(path: Path, err: OSError) -> ResultsWriteError:
    """The lock is the run's first write into its folder: a folder that cannot take it cannot take result.json."""
    return ResultsWriteError(
        f"cannot write {path.parent / RESULT_FILE}: {err.strerror or err}; free disk space or fix the folder's "
        f"permissions, or write elsewhere (results_dir=..., or hydra.run.dir / hydra.sweep.dir), then run the same "
        f"command again (found while creating the run's lock, {path.name})")


def _read(path: Path) -> tuple[dict | None, float | None]:
    """(the holder, seconds since the file was last written); (None, age) when it is not a lock
    tlbench wrote completely, (None, None) when there is no lock."""
    try:
        age_s = time.time() - path.stat().st_mtime
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except ValueError:  # empty or partly written (its creator is writing it, or died doing so)
        return None, age_s
    valid = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)
    return (holder if valid else None), age_s


def _take_over(path: Path, stale: dict | None) -> None:
    """Removes a stale lock. Moved aside first, atomically, so that of two processes taking over
    at once only one removes the stale file; one that moved a lock just taken by another puts it back."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if _read(aside)[0] != stale:
            with contextlib.suppress(OSError):
                os.link(aside, path)
    finally:
        aside.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # cannot check cheaply: trust the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _proc_stat(pid: int) -> tuple[str | None, int | None]:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat; (None, None) without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5); the name before ")" may hold spaces
    except (OSError, IndexError, ValueError):
        return None, None
