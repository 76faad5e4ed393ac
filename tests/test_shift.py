"""`test_shift`: a trained model scored on its test split under common corruptions, as a user sets it. The
clean score on every test image is the last epoch's test accuracy, each corruption and severity is recorded,
the corrupted images are cached and shared, and mistakes are one message before training."""

import zlib

import numpy as np
import pytest
import torch
from conftest import TINY as BASE

from tlbench.data import corruptions
from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of

TINY = [*BASE, "pretrained=false", "epochs=1", "optimizer.lr=0.01"]
SHIFT = ["test_shift.corruptions=[gaussian_noise,contrast]", "test_shift.severities=[1,5]"]


def test_a_run_scores_its_test_split_under_each_corruption_and_severity(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, *SHIFT, "test_shift.images=null", f"data.cache_dir={tmp_path / 'cache'}")
    result = run(cfg, output_dir=tmp_path / "run")
    shift = result["test_shift"]
    assert shift["images"] == result["data_info"]["test_size"]
    assert shift["clean_acc"] == pytest.approx(result["epochs"][-1]["test_acc"])  # all test images, uncorrupted
    assert set(shift["acc"]) == {"gaussian_noise", "contrast"} and set(shift["acc"]["contrast"]) == {"1", "5"}
    cells = [v for levels in shift["acc"].values() for v in levels.values()]
    assert shift["mean_acc"] == pytest.approx(np.mean(cells))
    assert shift["mean_acc_by_severity"]["5"] == pytest.approx((shift["acc"]["gaussian_noise"]["5"]
                                                                + shift["acc"]["contrast"]["5"]) / 2)
    assert len(list((tmp_path / "cache").glob("shift-*.pt"))) == 4  # each corruption x severity cached once
    again = run(make_cfg(*TINY, *SHIFT, "test_shift.images=null", "seed=1", f"data.cache_dir={tmp_path / 'cache'}"),
                output_dir=tmp_path / "again")
    assert len(list((tmp_path / "cache").glob("shift-*.pt"))) == 4 and again["test_shift"]["images"] == shift["images"]


def test_a_draw_of_test_images_and_its_own_random_stream_per_corruption(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, *SHIFT, "test_shift.images=16"), output_dir=tmp_path)
    assert result["test_shift"]["images"] == 16
    assert list(corruptions.drawn(64, 16, 0)) == list(corruptions.drawn(64, 16, 0)) != list(corruptions.drawn(64, 16, 1))
    images = np.random.RandomState(0).randint(0, 256, size=(3, 32, 32, 3)).astype(np.uint8)
    alone = corruptions.corrupted_images(images, "gaussian_noise", 3, seed=0)
    assert np.array_equal(alone, corruptions.corrupted_images(images, "gaussian_noise", 3, seed=0))
    assert not np.array_equal(alone, corruptions.corrupted_images(images, "gaussian_noise", 4, seed=0))
    cached = corruptions.corrupted_split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "gaussian_noise", 3,
                                         0, tmp_path / "c")
    assert np.array_equal(cached.permute(0, 2, 3, 1).numpy(), alone)


@pytest.mark.parametrize("overrides, message", [
    (["test_shift.corruptions=[splatter]"], r"'splatter', not available; use all, or some of .*spatter"),
    (["test_shift.corruptions=all", "test_shift.definitions=imagenet"], r"test_shift.definitions='imagenet' must be "
                                                                        r"cifar10c .* or imagenet_c"),
    (["test_shift.corruptions=[fogg]"], r"'fogg', not available; use all, or some of gaussian_noise"),
    (["test_shift.corruptions=all", "test_shift.severities=[0,6]"], r"test_shift.severities=\[0, 6\] must be a list"),
    (["test_shift.corruptions=all", "data.pipeline=pil"], r"set data.pipeline=tensor or test_shift.corruptions=null"),
])
def test_a_bad_shift_is_one_message_before_training(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build.check_settings(make_cfg(*TINY, *overrides))


def test_no_shift_is_the_old_identity(make_cfg):
    assert run_id_of(make_cfg(*TINY, "test_shift.images=50", "test_shift.seed=3")) == run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, "test_shift.definitions=imagenet_c")) == run_id_of(make_cfg(*TINY))  # off: idle
    assert run_id_of(make_cfg(*TINY, *SHIFT)) != run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, *SHIFT, "test_shift.definitions=cifar10c")) == run_id_of(make_cfg(*TINY, *SHIFT))
    assert run_id_of(make_cfg(*TINY, *SHIFT, "test_shift.definitions=imagenet_c")) != run_id_of(make_cfg(*TINY, *SHIFT))


def test_imagenet_c_is_the_maintained_packages_corruptions_from_a_stream_of_their_own(make_cfg, tmp_path):
    package = pytest.importorskip("imagecorruptions")
    images = np.random.RandomState(0).randint(0, 256, size=(3, 48, 48, 3)).astype(np.uint8)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    got = corruptions.corrupted_images(images, "frost", 2, 7, "imagenet_c")
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global stream is left as it was
    np.random.seed([7, zlib.crc32(b"frost"), 2])
    expected = np.stack([package.corrupt(image, severity=2, corruption_name="frost") for image in images])
    assert got.dtype == np.uint8 and np.array_equal(got, expected)
    assert corruptions.chosen("all", "imagenet_c") == package.get_corruption_names("common")  # frost among them
    assert corruptions.chosen(["spatter"], "imagenet_c") == ["spatter"]
    result = run(make_cfg(*TINY, "test_shift.corruptions=[fog,spatter]", "test_shift.severities=[2]",
                          "test_shift.definitions=imagenet_c", "test_shift.images=8"), output_dir=tmp_path)
    assert result["test_shift"]["definitions"] == "imagenet_c" and set(result["test_shift"]["acc"]) == {"fog", "spatter"}


def test_imagenet_c_without_its_package_is_one_message(make_cfg, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import fails, as where it is not installed
    with pytest.raises(ConfigError, match="test_shift.definitions=imagenet_c .* pip install imagecorruptions-imaug"):
        build.check_settings(make_cfg(*TINY, "test_shift.corruptions=all", "test_shift.definitions=imagenet_c"))


def test_the_report_sets_corrupted_against_clean_accuracy_with_the_trend(make_cfg, tmp_path):
    from tlbench.report.build import write_report
    from tlbench.report.robustness import expected

    found = [run(make_cfg(*TINY, *SHIFT, f"seed={seed}", f"optimizer.lr={lr}"), output_dir=tmp_path / "s" / str(seed))
             for seed, lr in ((0, 0.01), (1, 0.003), (2, 0.03))]
    report = write_report(tmp_path / "s").read_text()
    section = report.split("## Under shift", 1)[1].split("\n## ", 1)[0]
    assert (tmp_path / "s" / "under_shift.png").is_file() and "Trend over the 3 runs" in section
    clean = np.array([r["test_shift"]["clean_acc"] for r in found])
    shifted = np.array([r["test_shift"]["mean_acc"] for r in found])
    slope, intercept = np.polyfit(np.log(clean / (1 - clean)), np.log(shifted / (1 - shifted)), 1)
    assert f"{slope:.3f} x logit(clean) {intercept:+.3f}" in section
    gain = shifted - expected((slope, intercept), clean)
    rows = [line for line in section.splitlines() if line.startswith("| test_resnet")]
    assert len(rows) == 3  # the three learning rates are three settings
    for result, g in zip(found, gain):  # each setting's row: its corrupted mean and its effective robustness
        lr = result["config"]["optimizer"]["lr"]
        row = next(line for line in rows if f"| {lr} |" in line)
        assert f"{100 * result['test_shift']['mean_acc']:.1f}%" in row and f"{100 * g:+.1f} (" in row


def test_wise_ft_scores_every_mix_under_the_corruptions_too(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, *SHIFT, "test_shift.images=16", "wise_ft=[0,0.5,1]"), output_dir=tmp_path)
    curve = result["wise_ft"]["curve"]
    assert [round(p["alpha"], 2) for p in curve] == [0, 0.5, 1] and all("shift_mean_acc" in p for p in curve)
    assert curve[-1]["shift_mean_acc"] == pytest.approx(result["test_shift"]["mean_acc"])  # alpha 1: the final model


@pytest.mark.e2e  # trainings under corruptions and a report, ~6 s: the default command's budget
def test_the_weight_averaging_section_compares_wise_ft_and_the_ema_under_the_corruptions_too(make_cfg, tmp_path):
    from tlbench.report.build import write_report

    found = [run(make_cfg(*TINY, *SHIFT, "test_shift.images=16", "wise_ft=[0,1]", "ema.decay=0.5", f"seed={seed}"),
                 output_dir=tmp_path / "s" / str(seed)) for seed in (0, 1)]
    assert set(found[0]["test_shift"]["ema"]) == {"clean_acc", "acc", "mean_acc"}
    section = write_report(tmp_path / "s").read_text().split("## Weight averaging", 1)[1].split("\n## ", 1)[0]
    assert "under corruptions: WiSE-FT − final" in section and "under corruptions: EMA − final" in section
