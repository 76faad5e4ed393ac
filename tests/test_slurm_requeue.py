"""A SLURM job requeued after its first attempt died without clean-up (SLURM's SIGKILL after
KillWait, a failed node) finds that attempt's run.lock; SLURM runs a requeued job again under the
same job id with SLURM_RESTART_COUNT one higher, so the lock is known to be dead even when it
names another host, and the requeued job resumes instead of skipping the run. Runs on CPU without
SLURM: the job's environment is set by hand. benchmarks/slurm/one_node.sh checks the rest on a
real one-node SLURM."""

import json
import logging

import pytest
from conftest import TINY, interrupt_after_epoch

from tlbench.runner import runlock
from tlbench.runner.run import run


def lock_of_attempt(folder, job: str, restart: int | None) -> None:
    """The run.lock that attempt `restart` of SLURM job `job` left on another node, written just now
    (so it is fresh: its heartbeat alone would keep it for runlock.STALE_AFTER_S)."""
    slurm = {"slurm_job": job} if restart is None else {"slurm_job": job, "slurm_restart": restart}
    (folder / runlock.LOCK_FILE).write_text(json.dumps({
        "pid": 4242, "host": "node-that-died", "started_at": "2026-12-01T12:00:03", "process_start": 1, **slurm}))


def in_slurm_job(monkeypatch, job: str, restart: int | None) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", job)
    if restart is None:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restart))


def test_the_lock_records_the_slurm_job_and_attempt(tmp_path, monkeypatch):
    in_slurm_job(monkeypatch, "77", None)
    with runlock.take(tmp_path / "first"):
        holder = json.loads((tmp_path / "first" / runlock.LOCK_FILE).read_text())
    assert (holder["slurm_job"], holder["slurm_restart"]) == ("77", 0)
    in_slurm_job(monkeypatch, "77", 2)
    with runlock.take(tmp_path / "third"):
        holder = json.loads((tmp_path / "third" / runlock.LOCK_FILE).read_text())
    assert holder["slurm_restart"] == 2 and "(SLURM job 77)" in runlock.describe(holder)


@pytest.mark.parametrize("job, restart, stale", [
    ("77", 1, True),    # the requeued attempt of the lock's job
    ("77", 0, False),   # the same attempt (another step of the job): alive
    ("78", 1, False),   # another job, that may run the same command: alive
])
def test_a_lock_from_another_node_is_dead_only_when_its_slurm_job_has_been_requeued(tmp_path, monkeypatch, job,
                                                                                    restart, stale):
    lock_of_attempt(tmp_path, "77", None)  # the first attempt: no SLURM_RESTART_COUNT yet
    in_slurm_job(monkeypatch, job, restart)
    holder, age_s = runlock._read(tmp_path / runlock.LOCK_FILE)
    why = runlock.stale_because(holder, age_s)
    assert (why is not None) == stale, why
    if stale:
        assert why == "SLURM has requeued job 77 since that attempt (restart 0; this is restart 1)"


def test_a_requeued_job_resumes_a_run_whose_killed_attempt_left_its_lock_on_another_node(make_cfg, tmp_path,
                                                                                         monkeypatch, caplog):
    overrides = [*TINY, "pretrained=false"]
    folder = tmp_path / "sweep" / "0"
    with monkeypatch.context() as patch:  # attempt 0 of job 77: one epoch, then killed mid-run
        in_slurm_job(patch, "77", None)
        interrupt_after_epoch(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(*overrides), output_dir=folder)
    lock_of_attempt(folder, "77", None)  # a SIGKILL leaves the lock behind, on the node it ran on

    in_slurm_job(monkeypatch, "78", None)  # another job: the lock may be alive, the run is left to it
    assert run(make_cfg(*overrides), output_dir=folder)["status"] == "held"

    in_slurm_job(monkeypatch, "77", 1)  # job 77 requeued
    with caplog.at_level(logging.WARNING, logger="tlbench"):
        result = run(make_cfg(*overrides), output_dir=folder)
    assert result["status"] == "ok" and len(result["epochs"]) == 2
    assert [r["after_epoch"] for r in result["resumes"]] == [1], "the requeued job started over"
    assert "SLURM has requeued job 77" in caplog.text and not (folder / runlock.LOCK_FILE).exists()
