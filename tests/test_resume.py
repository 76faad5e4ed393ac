"""A run that stops (killed, interrupted, crashed) goes on from its last epoch when the same
command runs again, and ends exactly where an uninterrupted run ends; complete runs are not
trained again; nothing written is lost."""

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import TINY, run_interrupted, subprocess_env, tlbench_command

from tlbench.training import checkpoint
from tlbench.runner.run import run
from tlbench.runner import build

# Augmentation, a head-then-all freeze schedule and a stateful plateau schedule: resuming must
# restore the data order, the augmentation draws, the freeze phase, the optimizer and the plateau.
RESUMABLE = [*TINY, "epochs=3", "pretrained=false", "augment=crop_flip", "freeze=freeze_unfreeze", "freeze.epochs=1",
             "schedule=plateau", "schedule.patience=0", "optimizer=sgd", "optimizer.lr=0.2"]
TIMING = ("time_s", "images_per_s")


def metrics(result: dict) -> tuple:
    """Everything a resumed run must reproduce exactly: per-epoch numbers and every step's loss."""
    epochs = [{k: v for k, v in e.items() if k not in TIMING} for e in result["epochs"]]
    return epochs, result["iter_loss"], {k: v for k, v in result["summary"].items() if k != "total_time_s"}


@pytest.mark.parametrize("pipeline, stop_after", [("tensor", 1), ("tensor", 2), ("pil", 2)])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_run_ends(make_cfg, tmp_path, monkeypatch, pipeline,
                                                                     stop_after):
    overrides = [*RESUMABLE, f"data.pipeline={pipeline}"]
    uninterrupted = run(make_cfg(*overrides), output_dir=tmp_path / "uninterrupted")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", stop_after)
    stopped = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert stopped["status"] == "interrupted" and len(stopped["epochs"]) == stop_after
    assert (tmp_path / "resumed" / checkpoint.CHECKPOINT_FILE).is_file()

    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert resumed["status"] == "ok" and resumed["run_id"] == uninterrupted["run_id"]
    assert [r["after_epoch"] for r in resumed["resumes"]] == [stop_after]
    assert resumed["started_at"] == stopped["started_at"]
    assert [e["freeze_phase"] for e in resumed["epochs"]] == ["head", "all", "all"]
    assert metrics(resumed) == metrics(uninterrupted)
    assert not (tmp_path / "resumed" / checkpoint.CHECKPOINT_FILE).exists(), "the checkpoint outlived its run"


def test_a_complete_run_is_skipped_and_resume_false_trains_again_keeping_the_old_files(make_cfg, tmp_path):
    folder = tmp_path / "run"
    first = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=folder)
    written = (folder / "result.json").read_bytes(), (folder / "result.json").stat().st_mtime_ns

    again = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=folder)
    assert again == json.loads(written[0]) and again["started_at"] == first["started_at"]
    assert ((folder / "result.json").read_bytes(), (folder / "result.json").stat().st_mtime_ns) == written

    fresh = run(make_cfg(*TINY, "pretrained=false", "epochs=1", "resume=false"), output_dir=folder)
    assert fresh["status"] == "ok" and fresh["resumes"] == []
    archived = list((folder / "archive").glob("*/result.archived.json"))
    assert len(archived) == 1 and archived[0].read_bytes() == written[0]


def test_a_folder_holding_another_configuration_is_archived_not_resumed(make_cfg, tmp_path):
    folder = tmp_path / "run"
    run(make_cfg(*TINY, "pretrained=false", "epochs=1", "keep_checkpoint=true"), output_dir=folder)
    assert (folder / checkpoint.CHECKPOINT_FILE).is_file(), "keep_checkpoint=true deleted the checkpoint"
    other = run(make_cfg(*TINY, "pretrained=false", "epochs=1", "optimizer.lr=0.002"), output_dir=folder)
    assert other["status"] == "ok" and other["resumes"] == []
    (kept,) = (folder / "archive").iterdir()
    assert {p.name for p in kept.iterdir()} == {"result.archived.json", checkpoint.CHECKPOINT_FILE, "model.safetensors",
                                                "model.json"}


@pytest.mark.e2e
def test_a_sweep_killed_during_its_second_run_finishes_when_the_same_command_runs_again(tmp_path):
    """SIGKILL (no clean-up possible) once the second run has checkpointed an epoch; the same
    command then skips the first run and resumes the second from its checkpoint."""
    results_dir = tmp_path / "results"
    settings = [*TINY, "epochs=4", "pretrained=false", "dataset.train_size=256", "augment=crop_flip"]
    sweep_args = ["-m", *settings, "seed=0,1", f"results_dir={results_dir}"]
    env = subprocess_env(tmp_path)
    sweep = subprocess.Popen(tlbench_command(*sweep_args), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        second_checkpoint = _wait_for(results_dir, f"sweeps/*/1/{checkpoint.CHECKPOINT_FILE}", sweep)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        sweep.kill()
        sweep.wait()
    sweep_dir = second_checkpoint.parents[1]
    first_result = sweep_dir / "0" / "result.json"
    before = first_result.read_bytes(), first_result.stat().st_mtime_ns
    killed = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert killed["status"] == "running" and len(killed["epochs"]) < 4  # it may lag the checkpoint by one epoch

    again = subprocess.run(tlbench_command(*sweep_args), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (first_result.read_bytes(), first_result.stat().st_mtime_ns) == before, "the complete run was trained again"
    assert "is complete already" in again.stdout + again.stderr
    resumed = json.loads((sweep_dir / "1" / "result.json").read_text())
    assert resumed["status"] == "ok" and len(resumed["resumes"]) == 1
    assert resumed["resumes"][0]["after_epoch"] >= max(1, len(killed["epochs"]))

    reference_dir = tmp_path / "uninterrupted"  # a process of its own, as the sweep's runs (threads, state)
    reference = subprocess.run(tlbench_command(*settings, "seed=1", f"results_dir={results_dir}",
                                               f"hydra.run.dir={reference_dir}"),
                               env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    uninterrupted = json.loads((reference_dir / "result.json").read_text())
    assert resumed["run_id"] == uninterrupted["run_id"]
    assert metrics(resumed) == metrics(uninterrupted)
    assert (sweep_dir / "report.md").is_file()


def _wait_for(folder, pattern, process, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        assert process.poll() is None, f"the sweep ended (exit {process.returncode}) before {pattern} appeared"
        time.sleep(0.05)
    raise AssertionError(f"{pattern} did not appear under {folder} within {timeout_s} s")


def test_a_resumed_attempt_that_fails_at_startup_keeps_the_epochs_already_recorded(make_cfg, tmp_path, monkeypatch):
    from tlbench.errors import DataNotFoundError

    folder = tmp_path / "run"
    run_interrupted(monkeypatch, make_cfg(*TINY, "pretrained=false"), folder, 1)

    def data_gone(cfg):
        raise DataNotFoundError("the data went away")

    monkeypatch.setattr(build, "prepare", data_gone)
    with pytest.raises(DataNotFoundError):
        run(make_cfg(*TINY, "pretrained=false"), output_dir=folder)
    after = json.loads((folder / "result.json").read_text())
    assert after["status"] == "failed" and [e["epoch"] for e in after["epochs"]] == [1]
    assert (folder / checkpoint.CHECKPOINT_FILE).is_file()


def test_a_run_keeps_its_final_and_best_models_loadable_strictly_by_timm(make_cfg, tmp_path):
    import safetensors.torch
    import timm

    run(make_cfg(*TINY, "pretrained=false", "epochs=3", "save_best=true"), output_dir=tmp_path / "run")
    for stem in ("model", "best"):
        state = safetensors.torch.load_file(tmp_path / "run" / f"{stem}.safetensors")
        timm.create_model("test_resnet", num_classes=4).load_state_dict(state)  # strict: every key, plain names (TINY trains test_resnet)
    assert not (tmp_path / "run" / "best.pt").exists(), "best.pt is converted into best.safetensors"
    assert not list((tmp_path / "run").glob(".*tmp")), "a temporary file was left behind"


def test_the_sweep_folder_is_named_by_what_the_command_trains():
    from tlbench.runner.sweep import sweep_name

    command = ["model=resnet18,efficientnet_b0", "pretrained=true,false", "dataset.root=/data/my set"]
    name = sweep_name(command)
    assert name.startswith("model=resnet18,efficientnet_b0_pretrained=true,false_dataset.root=-data-my-set-")
    assert sweep_name([*command, "resume=false", "results_dir=/elsewhere", "threads=1"]) == name
    assert sweep_name(list(reversed(command))) != name != sweep_name([*command, "seed=1"])
    assert sweep_name([]).startswith("defaults-")


def test_a_checkpoint_of_another_run_is_never_resumed_even_beside_a_matching_result(make_cfg, tmp_path,
                                                                                    monkeypatch):
    """result.json says run A, the checkpoint next to it is run B's (copied over, say): A starts
    afresh and B's checkpoint is kept aside, never loaded into A."""
    import shutil

    for folder, lr in (("a", "0.2"), ("b", "0.1")):
        run_interrupted(monkeypatch, make_cfg(*RESUMABLE, f"optimizer.lr={lr}"), tmp_path / folder, 1)
    shutil.copy(tmp_path / "b" / checkpoint.CHECKPOINT_FILE, tmp_path / "a" / checkpoint.CHECKPOINT_FILE)
    again = run(make_cfg(*RESUMABLE, "optimizer.lr=0.2"), output_dir=tmp_path / "a")
    assert again["status"] == "ok" and again["resumes"] == [] and len(again["epochs"]) == 3
    (kept,) = (tmp_path / "a" / "archive").iterdir()
    assert checkpoint.load(kept / checkpoint.CHECKPOINT_FILE)["run_id"] != again["run_id"]
