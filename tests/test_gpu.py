"""What only a GPU can show. Skipped as a whole without CUDA; on a GPU machine run it alone:

    python -m pytest -q tests/test_gpu.py

Meant to take well under 3 minutes on one H100 (not yet timed: written on a machine without a
GPU); the two-GPU test is skipped with fewer than 2 GPUs. Every run trains resnet18 on the 32 px
synthetic data set."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from conftest import TINY, interrupt_after_epoch, subprocess_env, tlbench_command

from tlbench.training import checkpoint, engine
from tlbench.errors import ConfigError
from tlbench.runner.build import check_settings
from tlbench.runner.run import run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU = [*TINY, "model=resnet18", "pretrained=false", "save_model=false", "device=cuda"]


def test_bf16_channels_last_training_lands_where_fp32_training_lands(make_cfg, tmp_path):
    """bf16 keeps 8 bits of mantissa, so the two runs drift apart step by step; on a problem both
    learn (fp32 reaches ~98% here) they must still end together: final test accuracy within 0.05
    (3 of 64 test images), final test loss within 0.10 nats, mean train loss within 10%."""
    common = [*GPU, "epochs=6", "dataset.train_size=256"]
    fp32 = run(make_cfg(*common, "amp=false", "channels_last=false"), output_dir=tmp_path / "fp32")
    bf16 = run(make_cfg(*common, "amp=true", "channels_last=true"), output_dir=tmp_path / "bf16")
    low, high = fp32["summary"], bf16["summary"]
    assert low["final_test_acc"] >= 0.9, f"fp32 did not learn the problem ({low['final_test_acc']:.3f}): no comparison"
    assert abs(high["final_test_acc"] - low["final_test_acc"]) <= 0.05, (high, low)
    assert abs(high["final_test_loss"] - low["final_test_loss"]) <= 0.10, (high, low)
    mean = [sum(r["iter_loss"]) / len(r["iter_loss"]) for r in (fp32, bf16)]
    assert abs(mean[1] - mean[0]) <= 0.1 * mean[0], mean


class SyncChecked:
    """A train loader whose batches are drawn, and whose steps run, with CUDA's sync debug mode
    set to error: any host-device synchronization (`.item()`, a device-to-host copy, a copy from
    pageable host memory, `nonzero`) raises. The mode is off again once the loader is exhausted,
    so the epoch's one bulk read of its losses (after the last step) is not counted."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def __iter__(self):
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield from self.loader
        finally:
            torch.cuda.set_sync_debug_mode(0)


def test_the_training_step_never_waits_for_the_gpu(make_cfg, tmp_path, monkeypatch):
    """The tensor path (data and augmentation on the GPU, bf16, channels_last, fused AdamW): the
    second epoch's steps run under set_sync_debug_mode("error"); the first warms up cuDNN and the
    caching allocator. The divergence check every 50 steps is a deliberate sync: with 3 steps per
    epoch it does not fall in the window."""
    epochs, original = [], engine.train_one_epoch

    def second_epoch_checked(model, loader, *args, **kwargs):
        epochs.append(loader)
        return original(model, SyncChecked(loader) if len(epochs) == 2 else loader, *args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", second_epoch_checked)
    try:
        result = run(make_cfg(*GPU, "augment=crop_flip", "epochs=2"), output_dir=tmp_path / "run")
    finally:  # a sync raised in a step leaves the loader suspended, the mode still on
        torch.cuda.set_sync_debug_mode(0)
    assert result["status"] == "ok" and len(epochs) == 2


def test_a_sweep_killed_on_the_gpu_resumes_there_and_completes(tmp_path):
    folder = tmp_path / "sweep"
    args = ["-m", *GPU, "epochs=30", "checkpoint_every_s=0", "seed=0", f"hydra.sweep.dir={folder}"]
    env = subprocess_env(tmp_path)
    sweep = subprocess.Popen(tlbench_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        _wait_for(folder / "0" / checkpoint.CHECKPOINT_FILE, sweep)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        sweep.kill()
        sweep.wait()
    killed = json.loads((folder / "0" / "result.json").read_text())
    assert killed["status"] == "running" and len(killed["epochs"]) < 30, "the run ended before it was killed"

    again = subprocess.run(tlbench_command(*args), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((folder / "0" / "result.json").read_text())
    assert resumed["status"] == "ok" and len(resumed["epochs"]) == 30
    assert resumed["env"]["device"].startswith("cuda")
    (entry,) = resumed["resumes"]
    assert entry["after_epoch"] >= 1 and entry["rng"] == "restored", entry
    assert [e["epoch"] for e in resumed["epochs"]] == list(range(1, 31))


@pytest.mark.parametrize("first, then", [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_written_on_one_device_resumes_on_the_other(make_cfg, tmp_path, monkeypatch, first, then):
    """The augmentation generator lives on the training device: its saved state cannot be set
    into a generator of the other device type, so it is reseeded, and the run says so."""
    overrides = [*TINY, "model=resnet18", "pretrained=false", "save_model=false", "augment=crop_flip", "checkpoint_every_s=0",
                 "epochs=3"]
    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(*overrides, f"device={first}"), output_dir=tmp_path / "run")
    assert checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT_FILE)["rng"]["loader"][1]["device"] == first

    resumed = run(make_cfg(*overrides, f"device={then}"), output_dir=tmp_path / "run")
    assert resumed["status"] == "ok" and [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert resumed["env"]["device"].startswith(then)
    (entry,) = resumed["resumes"]
    assert entry["after_epoch"] == 1
    # a CPU-written checkpoint holds a CUDA state too when this process had started CUDA before
    assert entry["rng"].startswith("partly reseeded: ") and re.search(
        rf"train loader generator 2/2 \(saved on {first} \(\d+ bytes\), now on {then}\)", entry["rng"]), entry
    assert resumed["summary"]["final_test_acc"] > 0.25, "the resumed run learned nothing (chance is 0.25)"


def test_a_gpu_number_beyond_those_present_fails_at_startup(make_cfg):
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"device='cuda:{count}' but this machine has {count} GPU"):
        check_settings(make_cfg(*TINY, f"device=cuda:{count}"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_two_jobs_at_once_train_on_two_gpus(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the `parallel` extra is not installed")
    folder = tmp_path / "sweep"
    done = subprocess.run(tlbench_command("-m", *TINY, "model=resnet18", "pretrained=false", "save_model=false", "epochs=3",
                                          "seed=0,1,2,3", "devices=[cuda:0,cuda:1]", "hydra/launcher=joblib",
                                          "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}"),
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]
    assert len(runs) == 4 and all(r["status"] == "ok" for r in runs)
    assert {r["env"]["device"] for r in runs} == {"cuda:0", "cuda:1"}
    assert len({r["env"]["pid"] for r in runs}) == 2, "joblib did not run the jobs in two worker processes"


def _wait_for(path, process, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            return path
        assert process.poll() is None, f"the sweep ended (exit {process.returncode}) before {path} appeared"
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")
