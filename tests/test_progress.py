"""A sweep says where it is: `python -m tlbench -m ...` logs one line after each run with the runs
done, failed and left and the time left (tlbench/runner/progress.py). The joblib launcher's lines:
tests/test_scaling.py."""

import logging
import re
import sys

import pytest
from conftest import TINY

from tlbench.__main__ import main
from tlbench.runner.progress import PROGRESS_FOLDER, Finished, planned_runs, progress_line

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


@pytest.fixture
def multirun(monkeypatch, tmp_path, capfd):
    """multirun(*overrides) -> what `python -m tlbench -m *overrides` printed, run in this process;
    the logging Hydra sets up is put back afterwards."""
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path / "data"))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def _run(*overrides) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["tlbench", "-m", *overrides])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code
        captured = capfd.readouterr()
        return code, captured.out + captured.err

    yield _run
    for handler in set(root.handlers) - set(handlers):
        handler.close()
    root.handlers[:], root.level = handlers, level


def sweep_lines(output: str) -> list[str]:
    return re.findall(r"\[sweep\] .*", output)


def test_a_sweep_logs_runs_done_failed_and_left_and_a_resumed_one_counts_skipped_runs(multirun, tmp_path):
    """Two runs, the second diverges; the same command again skips the complete one and retries the other."""
    command = [*TINY, "epochs=1", "pretrained=false", "threads=1", "optimizer=sgd", "optimizer.lr=0.01,1e12",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", "~hydra.callbacks.report"]  # no report: faster
    code, output = multirun(*command)
    assert code == 1, output  # a failed run: the sweep exits non-zero
    lines = sweep_lines(output)
    assert lines[0] == "[sweep] 0/2 done, 0 failed, 2 left, estimating", output
    assert re.fullmatch(r"\[sweep\] 1/2 done, 0 failed, 1 left, ~\d+ s left", lines[1]), lines
    assert lines[2:] == ["[sweep] 1/2 done, 1 failed, 0 left"]

    code, output = multirun(*command)
    assert code == 1 and sweep_lines(output) == [  # a skipped run took no time: no estimate from it
        "[sweep] 0/2 done, 0 failed, 2 left, estimating", "[sweep] 1/2 done (1 skipped), 0 failed, 1 left, estimating",
        "[sweep] 1/2 done (1 skipped), 1 failed, 0 left"], output
    assert not (tmp_path / "sweep" / PROGRESS_FOLDER).exists(), "the sweep's progress file was left behind"


def test_a_single_run_prints_no_sweep_line(make_cfg, tmp_path, capfd):
    from tlbench.runner.run import run

    run(make_cfg(*TINY, "epochs=1", "pretrained=false"), tmp_path / "run")
    assert "[sweep]" not in "".join(capfd.readouterr())


def test_the_estimate_is_the_mean_run_time_times_the_runs_left_over_the_parallel_jobs():
    finished = [Finished("done", 100), Finished("done", 140), Finished("failed", 120), Finished("skipped", 0.1)]
    # mean of the trained runs 120 s x 8 left / 2 jobs at once = 8 min; skipped runs count as done, not in the mean
    assert progress_line(finished, total=12, parallel=2) == "[sweep] 3/12 done (1 skipped), 1 failed, 8 left, ~8 min left"
    assert progress_line([Finished("done", 60)], total=2, parallel=4) == "[sweep] 1/2 done, 0 failed, 1 left, ~60 s left"
    assert progress_line(finished[:1], total=400, parallel=1) == "[sweep] 1/400 done, 0 failed, 399 left, ~11.1 h left"
    assert progress_line(finished, total=None, parallel=1) == "[sweep] 3 done (1 skipped), 1 failed"


@pytest.mark.parametrize("overrides, sweeper, runs", [
    (["seed=0,1,2", "model=a,b", "epochs=1"], {"_target_": BASIC}, 6),
    (["seed=0,1", "seed=5,6,7"], {"_target_": BASIC}, 3),  # the later value of a key wins, as in Hydra
    (["seed=range(0,4)"], {"_target_": BASIC, "params": {"model": "a,b"}}, 8),
    (["epochs=1"], {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 20}, 20),
    (["optimizer.lr=interval(0.1,1)"], {"_target_": BASIC}, None),  # not a list: the basic sweeper refuses it
    (["seed=0,1"], {"_target_": "my.OtherSweeper"}, None),
])
def test_the_planned_runs_come_from_the_sweepers_lists(overrides, sweeper, runs):
    assert planned_runs(overrides, sweeper) == runs


def test_a_progress_file_that_cannot_be_written_warns_and_the_run_stands(tmp_path, caplog):
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from tlbench.runner.progress import SweepProgress

    progress, job = SweepProgress(), OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "0")}}})
    progress.file = tmp_path / "progress.jsonl"
    progress.file.mkdir()  # not a file: writing it fails as on a full or read-only disk
    progress.on_job_start(job)
    progress.on_job_end(job, JobReturn(status=JobStatus.COMPLETED))
    assert "this run's end was not counted" in caplog.text
