"""`logger=csv|tensorboard|mlflow|wandb`: each tracker holds a copy of result.json, read back here
with the tracker's own reader, also after a resume and when added to a run that is complete
already; a tracker that fails warns once and the run ends ok. Two runs are shared by the tests
(training is what costs): one stopped after epoch 1 and resumed with every installed logger,
and one finished without any."""

import csv
import importlib.util
import json
import logging
import shutil
import subprocess
import sys

import pytest
from conftest import CONF, TINY, interrupt_after_epoch, subprocess_env, tlbench_command
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tlbench.records import identity
from tlbench.runner import loggers, sweep
from tlbench.configs import CONFIG_NAME
from tlbench.runner.run import run

QUICK = [*TINY, "pretrained=false", "save_model=false"]
INSTALLED = [name for name, package in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"))
             if importlib.util.find_spec(package)]


def configure(root, *overrides):
    """conftest's make_cfg, for the runs the tests share."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=[f"results_dir={root / 'results'}", f"weights_dir={root / 'weights'}",
                                               f"data_dir={root / 'data'}", *QUICK, *overrides])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow sqlite store for the whole file: creating its tables takes seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, store):
    """(folder, result) of a run with every installed logger, stopped like Ctrl-C after epoch 1 of
    2, then resumed by the same command."""
    root = tmp_path_factory.mktemp("resumed")
    overrides = [f"logger=[{','.join(['csv', *INSTALLED])}]",
                 *([f"logger.mlflow.tracking_uri={store}", "logger.mlflow.experiment=single"] if "mlflow" in INSTALLED
                   else [])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLBENCH_OFFLINE", "1")
        with patch.context() as stop:
            interrupt_after_epoch(stop, 1)
            with pytest.raises(KeyboardInterrupt):
                run(configure(root, *overrides), output_dir=root / "run")
        result = run(configure(root, *overrides), output_dir=root / "run")
    assert [r["after_epoch"] for r in result["resumes"]] == [1] and result["status"] == "ok"
    return root / "run", result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The folder of a complete run that had no logger."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLBENCH_OFFLINE", "1")
        run(configure(root), output_dir=root / "run")
    return root / "run"


def add_logger_to(finished, tmp_path, *overrides) -> tuple:
    """The finished run's folder copied, then its command again with a logger: (folder, result)."""
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    before = (folder / "result.json").read_bytes()
    result = run(configure(tmp_path, *overrides), output_dir=folder)
    assert (folder / "result.json").read_bytes() == before, "a complete run was trained again"
    return folder, result


def csv_rows(folder) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def as_csv(result: dict) -> list[dict]:
    """result.json's epochs as DictWriter writes them (str(float) round-trips)."""
    return [{k: "" if v is None else str(v) for k, v in e.items() if not isinstance(v, (list, dict))}
            for e in result["epochs"]]


def test_logger_settings_are_part_of_neither_a_run_nor_a_sweep_folder(tmp_path):
    def run_id(*overrides):
        return identity.run_id(OmegaConf.to_container(configure(tmp_path, *overrides), resolve=True))

    assert run_id("logger=[csv,mlflow]", "logger.mlflow.experiment=mine") == run_id()
    assert sweep.sweep_name(["seed=0,1", "logger=[csv,tensorboard]", "logger.tensorboard.flush_secs=5"]) == \
        sweep.sweep_name(["seed=0,1"])


def test_csv_is_result_json_epochs_after_a_resume(resumed):
    folder, result = resumed
    assert csv_rows(folder) == as_csv(result) and len(result["epochs"]) == 2


def test_csv_added_to_a_finished_run_copies_it_without_training(finished, tmp_path):
    folder, result = add_logger_to(finished, tmp_path, "logger=csv")
    assert csv_rows(folder) == as_csv(result)


def test_tensorboard_holds_every_step_and_epoch_once_after_a_resume(resumed):
    pytest.importorskip("tensorboard", reason="the `tensorboard` extra is not installed")
    from tensorboard.backend.event_processing import plugin_event_accumulator as plugin_events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, result = resumed
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1  # the resumed attempt rewrote it whole
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    steps = events.Scalars("train/loss_iter")
    assert len(steps) == result["iters_per_epoch"] * 2 == len(result["iter_loss"])
    assert [s.value for s in steps] == pytest.approx(result["iter_loss"], rel=1e-6)  # float32 in the file
    for key, tag in (("train_loss", "train/loss"), ("val_acc", "val/acc"), ("test_loss", "test/loss"),
                     ("test_acc", "test/acc"), ("lr", "epoch/lr"), ("images_per_s", "epoch/images_per_s")):
        logged = events.Scalars(tag)
        assert [s.step for s in logged] == [1, 2]
        assert [s.value for s in logged] == pytest.approx([e[key] for e in result["epochs"]], rel=1e-6)
    final = events.Scalars("summary/final_test_acc")[-1].value
    assert final == pytest.approx(result["summary"]["final_test_acc"], rel=1e-6)
    hparams = plugin_events.EventAccumulator(str(folder))
    hparams.Reload()
    assert "_hparams_/session_start_info" in hparams.PluginTagToContent("hparams")  # the config, for the HPARAMS tab


def test_mlflow_run_holds_params_metrics_and_result_json_and_goes_on_after_a_resume(resumed, store):
    pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed")
    from mlflow.tracking import MlflowClient

    folder, result = resumed
    client = MlflowClient(store)
    (found,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])  # one, resumed
    assert found.info.run_id == json.loads((folder / "mlflow.json").read_text())["run_id"]
    assert found.info.run_name == f"run-{result['run_id']}" and found.info.status == "FINISHED"
    assert found.data.params["model.name"] == "test_resnet" and found.data.params["optimizer.lr"] == "0.001"
    assert found.data.tags["tlbench.run_id"] == result["run_id"]
    for key in ("train_loss", "val_acc", "test_acc", "lr"):
        history = client.get_metric_history(found.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(e["epoch"], e[key]) for e in result["epochs"]]
    assert found.data.metrics["summary/best_val_acc"] == result["summary"]["best_val_acc"]
    assert "result.json" in [a.path for a in client.list_artifacts(found.info.run_id)]


def test_wandb_added_to_a_finished_run_writes_an_offline_run_in_its_folder(finished, tmp_path):
    pytest.importorskip("wandb", reason="the `wandb` extra is not installed")
    folder, result = add_logger_to(finished, tmp_path, "logger=wandb")
    (offline,) = (folder / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    assert result["status"] == "ok" and b"val/acc" in records.read_bytes()


def test_a_failing_logger_warns_once_and_the_run_ends_ok(make_cfg, tmp_path, monkeypatch, caplog):
    calls = []

    def broken(self, record, iter_losses):
        calls.append(record["epoch"])
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(loggers.CsvLogger, "log_epoch", broken)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # a store below a file cannot be created
    names, store_below_a_file = ["csv", "tensorboard"], []
    if "mlflow" in INSTALLED:
        names, store_below_a_file = [*names, "mlflow"], [f"logger.mlflow.tracking_uri=sqlite:///{blocked}/mlflow.db"]
    with caplog.at_level(logging.WARNING, logger="tlbench"):
        result = run(make_cfg(*QUICK, f"logger=[{','.join(names)}]", *store_below_a_file), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and len(result["epochs"]) == 2
    assert calls == [1], "a failed logger is called again"
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("logger=")]
    warnings = {message.partition(" ")[0]: message for message in warned}
    assert len(warned) == len(warnings) == len(names), warned
    assert "failed in log_epoch (OSError: disk quota exceeded)" in warnings["logger=csv"]
    assert "the run folder is writable" in warnings["logger=csv"]
    assert "pip install 'tlbench[tensorboard]'" in warnings["logger=tensorboard"]
    if "mlflow" in names:
        assert "failed in start" in warnings["logger=mlflow"]
        assert "check logger.mlflow.tracking_uri" in warnings["logger=mlflow"]


@pytest.mark.e2e
def test_a_sweep_is_one_mlflow_experiment_with_a_run_per_job(tmp_path, store):
    pytest.importorskip("mlflow", reason="the `mlflow` extra is not installed")
    from mlflow.tracking import MlflowClient

    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(tlbench_command("-m", *QUICK, "epochs=1", "seed=0,1", "logger=mlflow",
                                          f"logger.mlflow.tracking_uri={store}", f"results_dir={tmp_path}",
                                          f"hydra.sweep.dir={sweep_dir}"),
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    run_ids = {json.loads((sweep_dir / str(job) / "result.json").read_text())["run_id"] for job in (0, 1)}
    assert {r.data.tags["tlbench.run_id"] for r in runs} == run_ids and len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
