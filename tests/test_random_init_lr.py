"""`random_init_lr_ratio`: a random-init run trains at that multiple of optimizer.lr (3 by default: measured in
issue 22), recorded in result.json `resolved`; pretrained runs, lr=find and probes never see it, and their run_ids
stay as they were."""

import pytest
from conftest import TINY as BASE

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of

TINY = [*BASE, "epochs=1", "schedule=constant"]


def test_random_init_trains_at_the_ratio_times_the_lr(make_cfg, tmp_path):
    three = run(make_cfg(*TINY, "pretrained=false", "random_init_lr_ratio=3.0", "optimizer.lr=0.002"),
                output_dir=tmp_path / "three")
    same = run(make_cfg(*TINY, "pretrained=false", "random_init_lr_ratio=1.0", "optimizer.lr=0.002"),
               output_dir=tmp_path / "same")
    assert three["resolved"]["optimizer.lr"] == pytest.approx(0.006)
    assert three["epochs"][0]["lr"] == pytest.approx(0.006) and same["epochs"][0]["lr"] == pytest.approx(0.002)
    assert three["config"]["optimizer"]["lr"] == 0.002  # the config as given; the identity holds the ratio
    assert "optimizer.lr" not in (same.get("resolved") or {}) and three["run_id"] != same["run_id"]


def test_the_ratio_is_idle_for_pretrained_runs_lr_find_and_probes(user_cfg):
    for base in (["pretrained=true"], ["pretrained=true", "freeze=linear_probe"], ["freeze=knn", "pretrained=false"]):
        assert run_id_of(user_cfg(*base, "random_init_lr_ratio=5.0")) == run_id_of(user_cfg(*base))
    assert run_id_of(user_cfg("pretrained=false", "random_init_lr_ratio=5.0")) != run_id_of(user_cfg("pretrained=false"))
    finder = user_cfg("pretrained=false", "optimizer.lr=find")
    assert build.random_init_lr(finder) is finder  # the finder measures the lr this init wants
    default = user_cfg("pretrained=false")
    assert default.random_init_lr_ratio == 3.0 and build.random_init_lr(default).optimizer.lr == pytest.approx(
        3 * default.optimizer.lr)


@pytest.mark.parametrize("bad, says", [("0", "must be a positive multiple of optimizer.lr"),
                                       ("-1", "must be a positive multiple of optimizer.lr"),
                                       ("fast", "is text where a number belongs")])
def test_a_bad_ratio_is_one_message(make_cfg, bad, says):
    with pytest.raises(ConfigError, match=rf"random_init_lr_ratio.*{says}"):
        build.check_settings(make_cfg(*TINY, f"random_init_lr_ratio={bad}"))


def test_bitfit_from_random_weights_keeps_its_own_ratio(make_cfg, user_cfg, tmp_path):
    """BitFit's random_init_lr_ratio (1 by default) replaces the top-level key: its run trains at optimizer.lr, the
    top-level ratio leaves its run_id alone, and freeze.random_init_lr_ratio=3 gives the 3 x lr back."""
    bitfit = [*TINY, "freeze=bitfit", "pretrained=false", "optimizer.lr=0.002", "random_init_lr_ratio=3.0"]
    own = run(make_cfg(*bitfit), output_dir=tmp_path / "own")
    three = run(make_cfg(*bitfit, "freeze.random_init_lr_ratio=3.0"), output_dir=tmp_path / "three")
    assert "optimizer.lr" not in (own.get("resolved") or {}) and three["resolved"]["optimizer.lr"] == pytest.approx(0.006)
    # the epoch's lr is what BitFit's parameters train at: freeze.lr_ratio (3) x the run's lr
    assert own["epochs"][0]["lr"] == pytest.approx(0.002 * 3) and three["epochs"][0]["lr"] == pytest.approx(0.006 * 3)
    default = user_cfg("freeze=bitfit", "pretrained=false")
    assert default.freeze.random_init_lr_ratio == 1.0 and build.random_init_lr(default).optimizer.lr == default.optimizer.lr
    assert run_id_of(user_cfg("freeze=bitfit", "pretrained=false", "random_init_lr_ratio=5.0")) == run_id_of(default)
    assert run_id_of(user_cfg("freeze=bitfit", "pretrained=false", "freeze.random_init_lr_ratio=3.0")) != \
        run_id_of(default)
    for pretrained in (["freeze=bitfit"], ["freeze=bitfit", "freeze.random_init_lr_ratio=3.0"]):
        assert run_id_of(user_cfg(*pretrained)) == run_id_of(user_cfg("freeze=bitfit"))  # pretrained: never seen
    for bad in ("0", "null", "fast"):
        with pytest.raises(ConfigError, match=r"freeze.random_init_lr_ratio=\S+ must be a positive multiple"):
            build.check_settings(make_cfg(*bitfit, f"freeze.random_init_lr_ratio={bad}"))
