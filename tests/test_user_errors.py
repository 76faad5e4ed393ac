"""Errors a user can fix end a command with one message on stderr (what is wrong, why, the fix), no
traceback, exit code 2, in single runs and sweeps; HYDRA_FULL_ERROR=1 still raises with the trace.
The commands run in this process (`main(argv)`), as `python -m tlbench ...` would."""

import json

import pytest

from tlbench.__main__ import main
from tlbench.errors import USER_ERROR_EXIT, DataNotFoundError

# Every data set that needs a download; offline (conftest: TLBENCH_OFFLINE=1) with an empty data_dir.
DOWNLOADED = ["dtd", "food101", "fgvc_aircraft", "oxford_pets", "caltech101", "flowers102", "eurosat",
              "stanford_cars", "sun397"]


@pytest.fixture
def tlbench(tmp_path, capsys):
    """tlbench("dataset=dtd") -> (exit code, stderr), with every folder in tmp_path and no weights needed."""
    def _run(*args):
        code = main([*args, f"results_dir={tmp_path / 'results'}", f"data_dir={tmp_path / 'data'}",
                     f"weights_dir={tmp_path / 'weights'}", "model=test_resnet", "pretrained=false"])
        return code, capsys.readouterr().err
    return _run


def assert_one_message(stderr: str, *named: str) -> None:
    assert "Traceback" not in stderr and "Error executing job" not in stderr, stderr
    assert stderr.startswith("error: "), stderr
    for text in named:
        assert text in stderr, f"{text!r} not in {stderr}"


@pytest.mark.parametrize("name", DOWNLOADED)
def test_a_data_set_not_on_disk_offline_is_one_message_naming_the_folder_and_the_fix(tlbench, tmp_path, name):
    code, stderr = tlbench(f"dataset={name}")
    assert code == USER_ERROR_EXIT
    assert_one_message(stderr, f"data: {name}: ", str(tmp_path / "data"), "was not fetched", "dataset.root")


def test_a_missing_mandatory_value_names_the_key_what_it_is_and_the_override(tlbench, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("a.png 0\n")
    code, stderr = tlbench("dataset=filelist", f"dataset.train_list={train}")
    assert code == USER_ERROR_EXIT
    assert_one_message(stderr, "dataset.test_list: the evaluation list", "add dataset.test_list=... to the command")
    assert "dataset.train_list" not in stderr
    result = json.loads(next((tmp_path / "results").rglob("result.json")).read_text())
    assert result["status"] == "failed" and result["error"]["type"] == "ConfigError"  # recorded as before


def test_hydra_full_error_still_raises_with_the_trace(tlbench, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(DataNotFoundError, match="dtd") as raised:
        tlbench("dataset=dtd")
    assert raised.traceback[-1].name == "prepare"  # raised where it happened, not where it was printed


def test_anything_else_is_a_bug_and_keeps_its_traceback(tlbench, monkeypatch):
    from tlbench.runner import run

    def broken(cfg, output_dir=None):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(run, "run", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        tlbench("dataset=synthetic")


@pytest.mark.parametrize("override, named", [
    ("epoch=3", ["epoch=3: the config has no setting epoch; did you mean epochs?", "--cfg job", "+epoch=3"]),
    ("freeze=linear_prob", ["Could not find 'freeze/linear_prob'", "did you mean linear_probe", "gradual"]),
    ("epochs=[3", ["no viable alternative at input '[3'"]),
])
def test_hydra_composition_errors_stay_short_with_a_hint(tlbench, override, named):
    code, stderr = tlbench(override)
    assert code == USER_ERROR_EXIT
    assert_one_message(stderr, *named)


SWEPT = "experiment=seed_efficientnet_b0_cifar10,seed_efficientnet_b0_cifar10_fixed"


def test_a_key_only_the_swept_options_have_gets_the_plus_plus_hint(tlbench, make_cfg):
    code, stderr = tlbench("-m", SWEPT, "freeze.epochs=1")
    assert code == USER_ERROR_EXIT
    assert_one_message(stderr, "freeze.epochs=1: the config has no setting freeze.epochs", "write ++freeze.epochs=1")
    for experiment in SWEPT.split("=")[1].split(","):  # the hint works for each of the sweep's runs
        assert make_cfg(f"experiment={experiment}", "++freeze.epochs=1").freeze.epochs == 1


def test_a_sweep_records_each_failed_run_goes_on_and_exits_2(tlbench, tmp_path):
    with pytest.raises(SystemExit) as ended:
        tlbench("-m", "dataset=dtd,eurosat")
    assert ended.value.code == USER_ERROR_EXIT
    results = sorted((tmp_path / "results" / "sweeps").rglob("result.json"))
    assert [json.loads(p.read_text())["error"]["type"] for p in results] == ["DataNotFoundError"] * 2


def test_the_lr_finder_prints_user_errors_as_one_message(tmp_path, capsys):
    from tlbench.runner import lr_find

    common = [f"data_dir={tmp_path / 'data'}", f"results_dir={tmp_path}", "model=test_resnet", "pretrained=false"]
    assert lr_find.main([*common, "dataset=flowers102"]) == USER_ERROR_EXIT
    assert_one_message(capsys.readouterr().err, "data: flowers102: ")
    assert lr_find.main([*common, "epoch=2"]) == USER_ERROR_EXIT
    assert_one_message(capsys.readouterr().err, "did you mean epochs?")


@pytest.mark.e2e
def test_the_command_line_exits_2_with_one_message(tmp_path):
    """`python -m tlbench` itself: the process's exit code and stderr (the tests above call main)."""
    import subprocess

    from conftest import subprocess_env, tlbench_command

    done = subprocess.run(tlbench_command("dataset=filelist", f"results_dir={tmp_path}"), capture_output=True,
                          text=True, env=subprocess_env(tmp_path), cwd=tmp_path, timeout=120)
    assert done.returncode == USER_ERROR_EXIT
    assert_one_message(done.stderr, "dataset.train_list", "dataset.test_list")
