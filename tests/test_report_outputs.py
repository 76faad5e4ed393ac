"""The report's files, CLI and Hydra callback, as a user would run them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from report_fixtures import SWEEP, write_sweep
from tlbench.report import write_report
from tlbench.report.__main__ import main
from tlbench.report.callback import ReportCallback

REPO = Path(__file__).resolve().parents[1]
CHARTS = ["val_acc_per_epoch.png", "pretrained_vs_random.png", "convergence_speed.png",
          "overfitting_gap.png", "train_loss_per_iteration.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def python(*args, cwd=REPO):
    paths = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    sweep = write_sweep(tmp_path_factory.mktemp("sweep"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report([sweep])
    glyph = [str(w.message) for w in caught if "Glyph" in str(w.message)]
    assert not glyph, glyph
    return sweep


@pytest.mark.parametrize("name", CHARTS)
def test_every_chart_is_a_real_png(report_dir, name):
    data = (report_dir / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_html_embeds_every_chart_and_links_nothing(report_dir):
    html = (report_dir / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(CHARTS)
    assert "http://" not in html and "https://" not in html


def test_markdown_has_findings_and_headline(report_dir):
    markdown = (report_dir / "report.md").read_text()
    assert "Pretraining raised final val accuracy of resnet18 by 10.0 points " \
           "(n = 3 seeds, 95% CI 5.0 to 15.0)." in markdown
    assert "n = 1, no interval" in markdown and "| never |" in markdown
    for name in CHARTS:
        assert f"]({name})" in markdown


def test_csvs_hold_one_row_per_run_and_per_group(report_dir):
    runs = pd.read_csv(report_dir / "runs.csv")
    summary = pd.read_csv(report_dir / "summary.csv")
    assert len(runs) == len(SWEEP) + 1 and "failed" in set(runs["status"])
    assert len(summary) == 4
    single = summary[summary["n"] == 1]
    assert single["final_val_acc_ci_low"].isna().all() and len(single) == 2


def test_cli_merges_two_folders_into_default_report_dir(tmp_path):
    write_sweep(tmp_path / "sweep_a", runs=SWEEP[:6], failed=False)
    write_sweep(tmp_path / "sweep_b", runs=SWEEP[6:], failed=True)
    done = python("-m", "tlbench.report", "sweep_a", "sweep_b", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == len(SWEEP) + 1
    assert set(runs["model"]) == {"resnet18", "mobilenet_v3_small"}
    assert (tmp_path / "report" / "report.html").exists()


def test_cli_names_a_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "typo_sweep")]) == 2
    assert "typo_sweep does not exist" in capsys.readouterr().err


def test_missing_font_warns_with_its_name(tmp_path):
    write_sweep(tmp_path, runs=SWEEP[:2], failed=False)
    with pytest.warns(UserWarning, match="'No Such Font CJK' is not installed"):
        write_report([tmp_path], tmp_path / "out", font="No Such Font CJK")
    assert (tmp_path / "out" / "val_acc_per_epoch.png").exists()


def test_callback_writes_report_into_sweep_dir(tmp_path):
    write_sweep(tmp_path, runs=SWEEP[:2], failed=False)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    ReportCallback().on_multirun_end(config)
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()


def test_callback_never_fails_the_sweep(tmp_path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "no_runs")}}})
    with caplog.at_level(logging.ERROR):
        ReportCallback().on_multirun_end(config)
    assert "report could not be written" in caplog.text and "no_runs" in caplog.text


def test_report_never_imports_torch():
    code = ("import sys, tlbench.report, tlbench.report.build, tlbench.report.callback\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = python("-c", code)
    assert done.returncode == 0, done.stderr
