"""The write-up presets in the report: published numbers beside measured ones, what the
write-ups' defects cost, and the write-ups' own charts, on hand-made result.json files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from report_fixtures import defects_block, make_result, published_block, write_run, write_sweep
from tlbench.report import write_report
from tlbench.report.__main__ import main
from tlbench.report.charts import curves_by_setting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WRITEUP_CHARTS = ["writeup_train_loss_per_iteration.png", "writeup_train_test_accuracy_per_epoch.png",
                  "writeup_train_test_loss_per_epoch.png"]
JPG_ROOT = "/x/cifar10-jpg"
A_NUMBERS = [
    {"metric": "test_acc", "epoch": 10, "pretrained": True, "value": 0.7985,
     "what": "test accuracy at epoch 10 (run on CPU)"},
    {"metric": "train_acc", "epoch": 40, "pretrained": True, "value": 0.9029,
     "what": "train accuracy quoted for 40 epochs"},
]


def curve(final: float, epochs: int = 10) -> list[float]:
    """A rising test-accuracy curve that ends at `final` at the last epoch."""
    return [round(v, 4) for v in np.linspace(0.3, final, epochs)]


def writeup_run(variant: str, seed: int, final: float, writeup="A", model="resnet18",
                numbers=A_NUMBERS, root=JPG_ROOT, **kwargs) -> dict:
    """One run of a write-up preset: as published (its defect on, selection on the test split)
    or fixed (defects off, a held-out val split)."""
    as_published = variant == "as_published"
    return make_result(
        model=model, seed=seed, test_acc=curve(final), phases=["head"] * 5 + ["all"] * 5,
        val_is_test=as_published, dataset_extra={"root": root},
        published=published_block(writeup, variant, numbers=numbers),
        defects=defects_block(freeze_by_name="fc" if as_published else None), **kwargs)


def t_interval(values) -> tuple[float, float]:
    """The oracle: scipy's Student t interval of the mean, in percent."""
    values = np.asarray(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    return 100 * low, 100 * high


@pytest.fixture(scope="module")
def writeup_a(tmp_path_factory):
    """Write-up A as published (2 seeds, on a JPEG copy of CIFAR-10) and fixed (the same seeds),
    reported with the CLI. Returns the folder."""
    folder = tmp_path_factory.mktemp("writeup_a")
    for seed, published, fixed in ((0, 0.78, 0.82), (1, 0.80, 0.85)):
        write_run(folder, writeup_run("as_published", seed, published))
        write_run(folder, writeup_run("fixed", seed, fixed))
    assert main([str(folder)]) == 0
    return folder


def rows(folder, name, **where) -> pd.DataFrame:
    table = pd.read_csv(folder / name)
    for column, value in where.items():
        table = table[table[column] == value]
    return table


def test_published_number_beside_the_mean_of_its_seeds_at_that_epoch(writeup_a):
    row = rows(writeup_a, "published_vs_measured.csv", variant="as_published", epoch=10).squeeze()
    low, high = t_interval([0.78, 0.80])
    assert row["writeup"] == "A" and row["init"] == "pretrained" and row["metric"] == "test_acc"
    assert row["published_pct"] == pytest.approx(79.85)
    assert row["measured_mean_pct"] == pytest.approx(79.0)
    assert (row["ci_low_pct"], row["ci_high_pct"]) == (pytest.approx(low), pytest.approx(high))
    assert row["n_seeds"] == 2 and row["difference_points"] == pytest.approx(-0.85)
    assert row["published_inside_ci"] == "yes"
    assert row["differs_from_writeup"] == \
        f"dataset.root = {JPG_ROOT} (write-up: null, torchvision's pickled CIFAR-10)"
    markdown = (writeup_a / "report.md").read_text()
    assert "## Published vs measured" in markdown
    assert f"| 79.85% | 79.00% | {low:.2f} to {high:.2f} | 2 | -0.85 | yes |" in markdown


def test_fixed_twin_is_compared_with_the_same_number(writeup_a):
    row = rows(writeup_a, "published_vs_measured.csv", variant="fixed", epoch=10).squeeze()
    assert row["measured_mean_pct"] == pytest.approx(83.5)
    assert row["difference_points"] == pytest.approx(3.65)


def test_number_past_the_last_epoch_says_where_the_runs_stopped(writeup_a):
    table = rows(writeup_a, "published_vs_measured.csv", epoch=40)
    assert len(table) == 2  # one per variant
    assert set(table["note"]) == {"run stopped at epoch 10"}
    assert table["measured_mean_pct"].isna().all() and (table["n_seeds"] == 0).all()
    assert "| run stopped at epoch 10 |" in (writeup_a / "report.md").read_text()


def test_preset_notes_are_listed(writeup_a):
    markdown = (writeup_a / "report.md").read_text()
    assert "- A (as published): write-up A. One run per number in the write-up" in markdown


def test_defect_cost_pairs_the_two_variants_by_seed(writeup_a):
    row = rows(writeup_a, "defect_cost.csv").squeeze()
    low, high = t_interval([0.82 - 0.78, 0.85 - 0.80])
    assert row["writeup"] == "A" and row["metric"] == "final_test_acc"
    assert row["method"] == "paired" and row["difference_n"] == 2
    assert row["difference_mean_points"] > 0  # fixing the defects helped
    assert row["difference_mean_points"] == pytest.approx(4.5)
    assert (row["difference_ci_low_points"], row["difference_ci_high_points"]) == \
        (pytest.approx(low), pytest.approx(high))
    assert row["as_published_mean_pct"] == pytest.approx(79.0)
    assert row["fixed_mean_pct"] == pytest.approx(83.5)
    assert row["defects"] == "freeze_by_name=fc, selection on test (val_split=0)"


def test_defect_cost_shows_trainable_params_in_the_frozen_phase(tmp_path):
    """Write-up B's name rule keeps the SE layers trainable while the head is frozen."""
    b_number = [{"metric": "test_acc", "epoch": 10, "pretrained": True, "value": 0.8553,
                 "what": "test accuracy"}]
    for seed, variant, head in ((0, "as_published", 636_540), (0, "fixed", 12_810),
                                (1, "as_published", 636_540), (1, "fixed", 12_810)):
        write_run(tmp_path, writeup_run(variant, seed, 0.8 + seed / 100, writeup="B",
                                        model="efficientnet_b0", numbers=b_number,
                                        trainable_params={"head": head, "all": 4_020_358}))
    write_report([tmp_path])
    row = rows(tmp_path, "defect_cost.csv").squeeze()
    assert (row["as_published_first_phase"], row["fixed_first_phase"]) == ("head", "head")
    assert row["as_published_first_phase_trainable_params"] == 636_540
    assert row["fixed_first_phase_trainable_params"] == 12_810
    assert row["difference_mean_points"] == pytest.approx(0.0)
    assert "| 636,540 (head) | 12,810 (head) |" in (tmp_path / "report.md").read_text()


def test_variants_that_differ_beyond_their_defects_are_not_compared(tmp_path):
    write_run(tmp_path, writeup_run("as_published", 0, 0.78))
    write_run(tmp_path, writeup_run("fixed", 0, 0.82, root="/y/other-cifar10"))
    write_report([tmp_path])
    assert not (tmp_path / "defect_cost.csv").exists()
    assert "A: the as-published and fixed runs also differ in dataset.root, so they are not " \
           "compared." in (tmp_path / "report.md").read_text()


def test_one_seed_gives_no_interval(tmp_path):
    write_run(tmp_path, writeup_run("as_published", 0, 0.78, root=None))
    write_report([tmp_path])
    row = rows(tmp_path, "published_vs_measured.csv", epoch=10).squeeze()
    assert row["n_seeds"] == 1 and np.isnan(row["ci_low_pct"])
    assert pd.isna(row["published_inside_ci"])  # the CSV says n/a, which pandas reads as NaN
    assert ",n/a," in (tmp_path / "published_vs_measured.csv").read_text()
    assert np.isnan(row["differs_from_writeup"])  # root null: the write-up's own data
    markdown = (tmp_path / "report.md").read_text()
    assert "| 78.00% | n = 1, no interval | 1 | -1.85 | n/a | nothing |" in markdown
    assert "A: no finished fixed run, so nothing to compare." in markdown


def test_a_pretrained_number_is_never_compared_with_random_runs(tmp_path):
    write_run(tmp_path, writeup_run("as_published", 0, 0.40, pretrained=False))
    write_report([tmp_path])
    table = rows(tmp_path, "published_vs_measured.csv")
    assert set(table["note"]) == {"no finished pretrained-init run"}
    assert table["measured_mean_pct"].isna().all()


def test_without_published_blocks_there_is_no_such_section(tmp_path):
    write_sweep(tmp_path)
    write_report([tmp_path])
    markdown = (tmp_path / "report.md").read_text()
    assert "Published vs measured" not in markdown and "defects cost" not in markdown
    for name in ["published_vs_measured.csv", "defect_cost.csv", *WRITEUP_CHARTS]:
        assert not (tmp_path / name).exists(), name


@pytest.mark.parametrize("name", WRITEUP_CHARTS)
def test_writeup_charts_are_pngs_in_both_documents(writeup_a, name):
    assert (writeup_a / name).read_bytes().startswith(PNG_MAGIC)
    assert f"]({name})" in (writeup_a / "report.md").read_text()


def test_html_embeds_the_writeup_charts(writeup_a):
    html = (writeup_a / "report.html").read_text()
    assert "<h2>Published vs measured</h2>" in html and "defects cost" in html
    images = (writeup_a / "report.md").read_text().count("![")
    assert html.count('src="data:image/png;base64,') == images >= len(WRITEUP_CHARTS)


def test_many_settings_continue_on_further_pngs(tmp_path):
    data = pd.DataFrame([{"panel": f"setting {p:02d}", "path": f"run{p}-{s}", "epoch": e,
                          "train_acc": 0.5 + 0.01 * e + 0.01 * s, "test_acc": 0.4 + 0.01 * e}
                         for p in range(26) for s in range(2) for e in (1, 2, 3)])
    drawn = curves_by_setting(data, "epoch", {"train_acc": "train", "test_acc": "test"},
                              "accuracy (%)", "Train vs test accuracy", tmp_path / "grid.png",
                              scale=100)
    assert [p.name for p in drawn] == ["grid.png", "grid_2.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in drawn)
