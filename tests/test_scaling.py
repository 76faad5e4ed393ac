"""Beyond one process: Hydra's joblib and submitit launchers and the Optuna sweeper, each run as
a user types it; and a decode cache shared by processes that build it at the same moment."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, subprocess_env, tlbench_command

SWEEP = [*TINY, "pretrained=false", "seed=0,1", "optimizer.lr=0.001,0.01"]
# Report columns that hold timings or say where and how a run ran, not what it measured.
VOLATILE = ("time", "_s_", "seconds", "images_per_s", "path", "started_at", "finished_at", "env.", "config.threads",
            "wall_s", "peak_host_mib")


def sweep(tmp_path, folder, *args, timeout=300):
    done = subprocess.run(tlbench_command("-m", *args, f"hydra.sweep.dir={folder}"), env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def results_in(folder) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]


def measured(csv) -> pd.DataFrame:
    table = pd.read_csv(csv)
    return table[[c for c in table.columns if not any(v in c for v in VOLATILE)]]


@pytest.mark.e2e
def test_joblib_runs_two_jobs_at_once_and_reports_what_a_sequential_sweep_reports(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the `parallel` extra is not installed")
    parallel, sequential = tmp_path / "parallel", tmp_path / "sequential"
    done = sweep(tmp_path, parallel, *SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    sweep(tmp_path, sequential, *SWEEP, "threads=1")

    # each worker process's run end counts the sweep's runs in <sweep>/.progress/ (tlbench/runner/progress.py)
    progress = re.findall(r"\[sweep\] (\d)/4 done, 0 failed, (\d) left(.*)", done.stdout + done.stderr)
    assert [(int(d), int(left)) for d, left, _ in progress] == [(0, 4), (1, 3), (2, 2), (3, 1), (4, 0)], done.stdout
    assert all(re.fullmatch(r", ~\d+ (s|min) left", eta) for _, _, eta in progress[1:-1]), progress

    runs = results_in(parallel)
    assert len(runs) == 4 and all(r["status"] == "ok" for r in runs)
    assert len({r["env"]["pid"] for r in runs}) == 2, "joblib did not run the jobs in two worker processes"
    assert {r["env"]["threads"] for r in runs} == {max(1, len(os.sched_getaffinity(0)) // 2)}
    assert sorted(p.name for p in parallel.glob("**/report.md")) == ["report.md"]  # one report, in the sweep folder
    for table in ("runs.csv", "summary.csv"):
        pd.testing.assert_frame_equal(measured(parallel / table), measured(sequential / table))


def test_devices_list_gives_job_i_device_i_mod_n(make_cfg):
    from tlbench.runner import devices

    assert [devices.job_device("auto", ["cuda:0", "cuda:1"], i) for i in range(4)] == \
        ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert devices.job_device("cpu", None, 3) == "cpu" and devices.job_device("auto", ["cuda:1"], None) == "cuda:1"
    assert devices._launcher_share({"n_jobs": 2}, cores=16) == 8
    assert devices._launcher_share({"n_jobs": -1}, cores=16) == 1
    assert devices._launcher_share({"cpus_per_task": 8, "n_jobs": None}, cores=64) == 8
    assert devices._launcher_share({}, cores=16) is None


@pytest.mark.e2e
def test_submitit_local_runs_a_sweep_and_a_preempted_job_resumes_from_its_checkpoint(tmp_path):
    """SIGUSR2 is what SLURM (and submitit's local executor) send before preempting or at the
    time limit: submitit requeues the job, which then resumes instead of starting over."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `cluster` extra is not installed")
    folder = tmp_path / "cluster"
    command = tlbench_command("-m", *TINY, "pretrained=false", "epochs=4", "dataset.train_size=512", "threads=1",
                              "seed=0,1", "hydra/launcher=slurm_local", f"hydra.sweep.dir={folder}")
    launcher = subprocess.Popen(command, env=subprocess_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        running = _wait_for_epoch(folder / "0" / "result.json", launcher)
        os.kill(running["env"]["pid"], signal.SIGUSR2)
        output, _ = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0, output[-4000:]
    first, second = results_in(folder)
    assert first["status"] == second["status"] == "ok" and len(first["epochs"]) == 4
    assert [r["after_epoch"] >= 1 for r in first["resumes"]] == [True], "the preempted job started over"
    assert second["resumes"] == [] and (folder / "report.md").is_file()
    assert list(folder.glob(".submitit/*/*_log.out")), "submitit's logs are not in the sweep folder"


@pytest.mark.e2e
def test_an_optuna_search_of_three_trials_writes_three_results_and_reports_them(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the `search` extra is not installed")
    folder = tmp_path / "search"
    command = ["search=optuna", "hydra.sweeper.n_trials=3", *TINY, "pretrained=false", "epochs=3"]
    sweep(tmp_path, folder, *command)
    trials = results_in(folder)
    assert len(trials) == 3 and all(t["status"] == "ok" for t in trials)
    assert len({t["config"]["optimizer"]["lr"] for t in trials}) == 3, "the trials did not try different lrs"
    assert all(t["freeze"] == "freeze_unfreeze" and t["config"]["freeze"]["epochs"] in (0, 1, 2, 3) for t in trials)
    best = yaml.safe_load((folder / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(t["summary"]["best_val_acc"] for t in trials)
    assert (folder / "report.md").is_file()

    # The seeded sampler proposes the same trials again: the same command finds them complete.
    again = sweep(tmp_path, folder, *command)
    assert (again.stdout + again.stderr).count("is complete already") == 3
    assert results_in(folder) == trials


BUILD_CACHE = """
import hashlib, sys, time
from pathlib import Path
from tlbench import data
from tlbench.data import tensor_data
root, cache, start, ready = sys.argv[1:]
Path(ready).touch()  # imported torch and tlbench: waiting
while not Path(start).exists():
    time.sleep(0.005)
split = tensor_data.cached_split(data.local.imagefolder(root, 32).train, 32, cache, "tree", "train")
print(split.decoded, hashlib.sha256(split.images.numpy().tobytes()).hexdigest())
"""


@pytest.mark.e2e
def test_two_processes_building_the_same_cache_at_once_decode_it_once_and_share_one_valid_file(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        folder = tmp_path / "tree" / "train" / label
        folder.mkdir(parents=True)
        (tmp_path / "tree" / "val" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "tree" / "val" / label / "0.png")
        for i in range(150):
            Image.new("RGB", (96, 96), (i, 255 - i, 40 if label == "a" else 200)).save(folder / f"{i}.png")
    start = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    builders = [subprocess.Popen([sys.executable, "-c", BUILD_CACHE, str(tmp_path / "tree"), str(tmp_path / "cache"),
                                  str(start), str(flag)], cwd=REPO, env=subprocess_env(tmp_path), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for flag in ready]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready):  # both have imported torch and are waiting
        assert all(b.poll() is None for b in builders), [b.communicate()[1][-2000:] for b in builders]
        assert time.monotonic() < deadline, "the builders did not start within 120 s"
        time.sleep(0.02)
    start.touch()
    outputs = [b.communicate(timeout=120) for b in builders]
    assert all(b.returncode == 0 for b in builders), [err[-2000:] for _, err in outputs]
    decoded, digests = zip(*(out.split() for out, _ in outputs))
    assert sorted(decoded) == ["False", "True"], "both processes decoded the split"
    assert len(set(digests)) == 1
    files = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock"))
    assert len(files) == 1 and files[0].endswith(".pt"), files


def _wait_for_epoch(result_path, process, timeout_s=240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = json.loads(result_path.read_text())
            if result["epochs"] and result["status"] == "running":
                return result
        except (OSError, ValueError):
            pass
        assert process.poll() is None, f"the sweep ended (exit {process.returncode}) before its first epoch"
        time.sleep(0.05)
    raise AssertionError(f"{result_path} recorded no epoch within {timeout_s} s")
