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

from report_fixtures import SWEEP, as_schema_1, make_result, write_run, write_sweep
from tlbench.report import write_report
from tlbench.report.__main__ import main
from tlbench.report.callback import ReportCallback

REPO = Path(__file__).resolve().parents[1]
CHARTS = ["test_acc_per_epoch.png", "pretrained_vs_random.png", "convergence_speed.png",
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
    for headline in ("test accuracy at the val-best epoch", "final test accuracy"):
        assert f"Pretraining raised {headline} of resnet18 by 10.0 points " \
               "(n = 3 seeds, 95% CI 5.0 to 15.0)." in markdown
    # Schema-2 runs with a held-out val split: nothing to warn about.
    assert "val_is_test = true" not in markdown and "test split (optimistic)" not in markdown
    assert "n = 1, no interval" in markdown and "| never |" in markdown
    for name in CHARTS:
        assert f"]({name})" in markdown


def test_csvs_hold_one_row_per_run_and_per_group(report_dir):
    runs = pd.read_csv(report_dir / "runs.csv")
    summary = pd.read_csv(report_dir / "summary.csv")
    assert len(runs) == len(SWEEP) + 1 and "failed" in set(runs["status"])
    assert len(summary) == 4
    single = summary[summary["n"] == 1]
    assert single["final_test_acc_ci_low"].isna().all() and len(single) == 2
    assert not runs["val_is_test"].any() and not summary["val_is_test"].any()


def test_schema_1_and_val_split_0_runs_are_flagged_in_every_output(tmp_path):
    """An old file (val was the test split) and a write-up run (dataset.val_split=0) beside a
    run with a held-out val split: the first two are flagged, the third is not. Each has its
    own lr, so they are three groups however schema-1 configs come to be grouped."""
    write_run(tmp_path, as_schema_1(make_result(seed=0, test_acc=[0.5, 0.7, 0.6], lr=0.001)))
    write_run(tmp_path, make_result(seed=1, test_acc=[0.5, 0.7, 0.6], val_is_test=True, lr=0.01))
    write_run(tmp_path, make_result(seed=2, test_acc=[0.5, 0.7, 0.6], val_acc=[0.5, 0.6, 0.7],
                                    lr=0.1))
    write_report([tmp_path])
    runs = pd.read_csv(tmp_path / "runs.csv").sort_values("config.seed")
    assert runs["val_is_test"].tolist() == [True, True, False]
    assert runs["test_acc_at_best_val"].tolist() == [0.7, 0.7, 0.6]
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["val_is_test"]) == [False, True, True]
    note = "Note: 2 of 3 runs have val_is_test = true"
    # One accuracy-table row per flagged group says which split chose its epoch.
    for name, cell in (("report.md", "| test split (optimistic) |"),
                       ("report.html", "<td>test split (optimistic)</td>")):
        text = (tmp_path / name).read_text()
        assert note in text and "dataset.val_split=0" in text and "write-up presets" in text
        assert text.count(cell) == 2, name


def test_a_run_without_a_val_split_that_trains_to_the_end_is_not_flagged(tmp_path):
    """dataset.val_split=0 with select_epoch=final (the val-free mode for tiny folders) chose no epoch
    on the test split: nothing optimistic to flag; the data fact stays in runs.csv."""
    write_run(tmp_path, make_result(seed=0, test_acc=[0.5, 0.7, 0.6], val_is_test=True, select_epoch="final"))
    write_report([tmp_path])
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["val_is_test"].tolist() == [False] and runs["data_info.val_is_test"].tolist() == [True]
    assert runs["test_acc_at_best_val"].tolist() == [0.6]  # the final epoch: nothing was chosen
    text = (tmp_path / "report.md").read_text()
    assert "val_is_test = true" not in text and "test split (optimistic)" not in text


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
    assert (tmp_path / "out" / "test_acc_per_epoch.png").exists()


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


def test_a_training_draw_that_follows_the_seed_is_a_replicate_not_a_setting(tmp_path):
    """experiment=robust_cifar10 sets dataset.subset_seed: ${seed}: its three seeds are one setting's samples.
    A draw swept apart from the seed stays a setting of its own."""
    from tlbench.report.build import analyse

    for seed in (0, 1, 2):
        write_run(tmp_path / "follows", make_result(seed=seed, dataset_extra={"subset_seed": seed}))
        write_run(tmp_path / "apart", make_result(seed=0, dataset_extra={"subset_seed": seed}))
    follows, apart = analyse([tmp_path / "follows"])[0], analyse([tmp_path / "apart"])[0]
    assert follows["group_key"].nunique() == 1 and apart["group_key"].nunique() == 3


def test_a_setting_left_out_of_one_runs_identity_still_labels_the_groups(tmp_path):
    """mix.mixup_alpha is in the identity of the mixed runs only (at 0 it is left out): the two settings are told
    apart by it in every table (pandas 3 keeps a missing value missing through astype(str))."""
    from tlbench.report.build import analyse
    from tlbench.report.groups import label_columns

    for seed in (0, 1):
        write_run(tmp_path, make_result(seed=seed, freeze="none"))
        write_run(tmp_path, make_result(seed=seed, freeze="none", mix={"mixup_alpha": 0.8, "cutmix_alpha": 0.0,
                                                                        "prob": 1.0, "switch_prob": 0.5}))
    runs = analyse([tmp_path])[0]
    assert runs["group_key"].nunique() == 2 and "identity.mix.mixup_alpha" in label_columns(runs)


def test_a_setting_some_runs_options_lack_reads_a_dash_in_tables_and_is_left_out_of_sentences(tmp_path):
    """freeze.lr_ratio varies among the BitFit runs; the freeze=none runs beside them have no such key: their
    cells read "–" (not "nan") and the findings name them "resnet18 (freeze=none)"."""
    import hashlib
    import json

    from tlbench.records import identity

    cells = [({"name": "bitfit", "lr_ratio": 1.0}, True), ({"name": "bitfit", "lr_ratio": 3.0}, True),
             ({"name": "none"}, True), ({"name": "none"}, False)]
    for cell, (freeze, pretrained) in enumerate(cells):
        for seed in (0, 1):
            result = make_result(pretrained=pretrained, seed=seed, freeze=freeze["name"],
                                 test_acc=(0.5, 0.6 + 0.05 * cell + 0.01 * seed))
            result["config"]["freeze"] = freeze
            result["identity"] = identity.experiment(result["config"])
            result["run_id"] = hashlib.sha1(json.dumps(result["config"], sort_keys=True).encode()).hexdigest()[:12]
            write_run(tmp_path / "sweep", result)
    write_report([tmp_path / "sweep"], out_dir=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "nan" not in text
    assert "| resnet18 | bitfit | 3.0 | pretrained | 2 |" in text and "| resnet18 | none | – | random | 2 |" in text
    assert "of resnet18 (freeze=none)" in text  # the pretrained-vs-random finding
