"""One process per run: the same command started twice at once trains each run once, a run that
another live process is training is skipped naming that process (or waited for), and a lock left
by a dead process is taken over."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import TINY, subprocess_env, tlbench_command

from tlbench.runner import runlock
from tlbench.errors import ConfigError
from tlbench.runner.run import run


def lock_naming(folder, pid: int) -> None:
    """A run.lock as the process `pid` on this host would have written it (taken on 2 January)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / runlock.LOCK_FILE).write_text(json.dumps({
        "pid": pid, "host": socket.gethostname(), "started_at": "2026-01-02T12:00:03",
        "process_start": runlock._proc_stat(pid)[1]}))


@pytest.fixture
def live_process():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("ending", [ValueError("a bug"), KeyboardInterrupt(), SystemExit(-1)])
def test_the_lock_names_its_holder_and_is_released_however_the_run_ends(tmp_path, ending):
    folder = tmp_path / "run"
    with pytest.raises(type(ending)), runlock.take(folder):
        holder = json.loads((folder / runlock.LOCK_FILE).read_text())
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        assert runlock.live_holder(folder) == holder
        raise ending
    assert not (folder / runlock.LOCK_FILE).exists() and runlock.live_holder(folder) is None


def test_a_lock_is_stale_only_when_its_holder_is_known_to_be_gone(tmp_path, live_process, dead_pid):
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": runlock._proc_stat(os.getpid())[1]}
    just_now = 1  # seconds since the lock was written or refreshed
    assert runlock.stale_because(me, just_now) is None
    assert runlock.stale_because({**me, "pid": live_process.pid, "process_start": None}, just_now) is None
    assert runlock.stale_because({**me, "pid": dead_pid}, just_now) == f"no process {dead_pid} runs on this host"
    if me["process_start"] is not None:  # Linux: a reused pid is told apart by its start time
        assert "now belongs to another process" in runlock.stale_because({**me, "process_start": 1}, just_now)
    elsewhere = {**me, "host": "another-host"}  # its processes cannot be seen from here: only its heartbeat
    assert runlock.stale_because(elsewhere, runlock.STALE_AFTER_S - 1) is None
    assert "last refreshed 11 min ago" in runlock.stale_because(elsewhere, 11 * 60)


def test_the_holder_keeps_its_lock_fresh_and_an_unreadable_old_lock_is_taken_over(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    with runlock.take(tmp_path / "held") as lock:
        os.utime(lock.path, (0, 0))
        deadline = time.monotonic() + 5
        while lock.path.stat().st_mtime == 0 and time.monotonic() < deadline:  # a few heartbeats (0.05 s each)
            time.sleep(0.01)
        assert time.time() - lock.path.stat().st_mtime < 5, "the heartbeat did not refresh the lock"

    unreadable = tmp_path / "unreadable" / runlock.LOCK_FILE  # its creator died before writing it
    unreadable.parent.mkdir()
    unreadable.write_text("")
    os.utime(unreadable, (time.time() - 60, time.time() - 60))
    with caplog.at_level(logging.WARNING, logger="tlbench"), runlock.take(unreadable.parent):
        assert json.loads(unreadable.read_text())["pid"] == os.getpid()
    assert "from an unknown process: its lock file is unreadable (last written 60 s ago)" in caplog.text


def test_a_held_run_is_skipped_naming_its_holder_and_nothing_in_its_folder_is_touched(make_cfg, tmp_path, caplog,
                                                                                      live_process):
    folder = tmp_path / "run"
    lock_naming(folder, live_process.pid)
    with pytest.raises(runlock.RunHeld, match=rf"run {folder} is being trained by pid {live_process.pid} on host "
                                              rf"{socket.gethostname()} since 2026-01-02 12:00:03; skipped: run the "
                                              r"same command again when it finishes, or set run_lock=wait"):
        runlock.take(folder)

    with caplog.at_level(logging.WARNING, logger="tlbench"):
        skipped = run(make_cfg(*TINY, "pretrained=false"), output_dir=folder)
    assert skipped["status"] == "held" and skipped["held_by"]["pid"] == live_process.pid
    assert skipped["summary"] == {"best_val_acc": None}  # nothing for a search to count: this process trained nothing
    assert f"is being trained by pid {live_process.pid}" in caplog.text
    assert sorted(p.name for p in folder.iterdir()) == [runlock.LOCK_FILE], "the skipping process wrote into the folder"


def test_run_lock_wait_waits_for_the_holder_then_takes_the_run(tmp_path, caplog, live_process):
    folder = tmp_path / "run"
    lock_naming(folder, live_process.pid)
    threading.Timer(0.5, live_process.kill).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tlbench"), runlock.take(folder, "wait", poll_s=0.05):
        assert json.loads((folder / runlock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert time.monotonic() - started >= 0.5
    assert "waiting for it to finish (run_lock=wait)" in caplog.text
    assert f"taking over run {folder} from pid {live_process.pid}" in caplog.text


def test_a_stale_lock_is_taken_over_with_a_warning_and_the_run_completes(make_cfg, tmp_path, caplog, dead_pid):
    folder = tmp_path / "run"
    lock_naming(folder, dead_pid)
    with caplog.at_level(logging.WARNING, logger="tlbench"):
        result = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=folder)
    assert result["status"] == "ok" and result["resumes"] == []
    assert f"taking over run {folder} from pid {dead_pid} on host {socket.gethostname()}" in caplog.text
    assert f"no process {dead_pid} runs on this host" in caplog.text
    assert not (folder / runlock.LOCK_FILE).exists()


def test_an_unknown_run_lock_setting_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"run_lock='later' is not known; use skip .* or wait"):
        runlock.take(tmp_path / "run", "later")


def test_the_sweep_exit_check_does_not_count_a_run_another_live_process_is_training(tmp_path, live_process,
                                                                                    dead_pid):
    from tlbench.runner.sweep import failed_runs

    for job, holder in (("0", live_process.pid), ("1", dead_pid)):
        lock_naming(tmp_path / job, holder)
        (tmp_path / job / "result.json").write_text(json.dumps({"status": "running", "error": None}))
    assert [path.parent.name for path, _ in failed_runs(tmp_path)] == ["1"]


@pytest.mark.e2e
def test_the_same_sweep_started_twice_at_once_trains_each_run_once(tmp_path):
    """Two terminals, or a requeued cluster job whose first attempt still runs: each process
    takes the runs the other does not hold, and both finish with every run complete."""
    folder = tmp_path / "sweep"
    command = tlbench_command("-m", *TINY, "pretrained=false", "epochs=3", "dataset.train_size=256", "threads=1",
                              "seed=0,1", f"hydra.sweep.dir={folder}")
    env = dict(subprocess_env(tmp_path), OMP_NUM_THREADS="1")
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {process.pid: process.communicate(timeout=300)[0] for process in (first, second)}
    for process in (first, second):
        assert process.returncode == 0, outputs[process.pid][-4000:]

    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]
    assert [(r["status"], r["resumes"]) for r in runs] == [("ok", []), ("ok", [])]
    assert sum(output.count("epoch 1/3") for output in outputs.values()) == 2, "a run was trained twice"
    assert not list(folder.glob("*/archive")), "a run was started afresh over the other process's files"
    assert not list(folder.glob("*/run.lock"))
    named = [f"is being trained by pid {other.pid} on host" in outputs[process.pid]
             for process, other in ((first, second), (second, first))]
    assert any(named), "neither process said which process holds the run it skipped"
    assert len(pd.read_csv(folder / "runs.csv")) == 2  # the last process to finish reports both runs, once each
