"""`wise_ft`: the WiSE-FT curve after fine-tuning: at alpha 1 it is the fine-tuned model (the last epoch's
scores), at alpha 0 the starting model (scored apart here), and alpha is chosen on val."""

import pytest
import torch
from conftest import TINY as BASE

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of
from tlbench.training import engine, wise

TINY = [*BASE, "pretrained=false", "epochs=2"]
ALPHAS = "wise_ft=[0,0.5,1]"


def test_the_curve_ends_at_the_start_and_at_the_fine_tuned_model_and_val_chooses(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, ALPHAS), output_dir=tmp_path / "run")
    curve = {row["alpha"]: row for row in result["wise_ft"]["curve"]}
    last = result["epochs"][-1]
    for key in ("val_loss", "val_acc", "test_loss", "test_acc"):
        assert curve[1][key] == pytest.approx(last[key], abs=1e-6)  # alpha 1: the fine-tuned weights
    cfg = make_cfg(*TINY, ALPHAS)
    splits, built = build.prepare(cfg)  # the same seed: the starting weights the run began from
    loaders = build.make_loaders(cfg, splits, built, torch.device("cpu"))
    start = engine.evaluate(built.model, loaders["test"], torch.device("cpu"), engine.TrainOptions(epochs=1))
    assert curve[0]["test_loss"] == pytest.approx(start[0], rel=1e-6) and curve[0]["test_acc"] == start[1]
    best = max(result["wise_ft"]["curve"], key=lambda r: (r["val_acc"], -r["val_loss"], r["alpha"]))
    assert result["wise_ft"]["chosen_alpha"] == best["alpha"] and result["wise_ft"]["chosen_on"] == "val_acc"


def test_interpolation_mixes_floats_and_keeps_the_fine_tuned_counters():
    start = {"w": torch.zeros(3), "n": torch.tensor(0)}
    end = {"w": torch.full((3,), 4.0), "n": torch.tensor(7)}
    assert torch.equal(wise.interpolated(start, end, 0.25)["w"], torch.full((3,), 1.0))
    assert wise.interpolated(start, end, 0.25)["n"] == 7
    assert torch.equal(wise.interpolated(start, end, 0.0)["w"], start["w"])
    assert torch.equal(wise.interpolated(start, end, 1.0)["w"], end["w"])


def test_wise_ft_off_is_the_old_identity_and_bad_alphas_one_message(make_cfg):
    assert run_id_of(make_cfg(*TINY, "wise_ft=null")) == run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, ALPHAS)) != run_id_of(make_cfg(*TINY))
    with pytest.raises(ConfigError, match=r"wise_ft=\[0.5, 1.5\] must be null \(off\) or a list of mixing"):
        build.check_settings(make_cfg(*TINY, "wise_ft=[0.5,1.5]"))


def test_recomputed_statistics_are_the_mean_and_variance_of_the_training_activations():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    batches = [(torch.randn(8, 3, 6, 6) * 2 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(3)]
    with torch.no_grad():
        acts = [model[0](images) for images, _ in batches]
    wise.bn_recompute(batches, torch.device("cpu"))(model)
    bn = model[1]
    per_batch_var = torch.stack([a.transpose(0, 1).flatten(1).var(1) for a in acts])  # unbiased, as BatchNorm's running_var
    assert torch.allclose(bn.running_mean, torch.cat(acts).mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, per_batch_var.mean(0), atol=1e-4)  # update_bn: the batches' average
    assert not model.training  # the model's mode is kept


def test_recompute_measures_the_mixes_and_leaves_the_endpoints_alone(make_cfg, tmp_path):
    plain = run(make_cfg(*TINY, ALPHAS), output_dir=tmp_path / "plain")["wise_ft"]
    again = run(make_cfg(*TINY, ALPHAS, "wise_ft_bn=recompute"), output_dir=tmp_path / "recompute")["wise_ft"]
    assert (plain["bn"], again["bn"]) == ("interpolate", "recompute")
    for a, b in zip(plain["curve"], again["curve"]):
        if a["alpha"] in (0, 1):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6) and a["test_acc"] == b["test_acc"]
        else:
            assert a["val_loss"] != pytest.approx(b["val_loss"], rel=1e-6)  # the mix's statistics were measured anew
    assert run_id_of(make_cfg(*TINY, "wise_ft_bn=recompute")) == run_id_of(make_cfg(*TINY))  # idle while wise_ft is off
    assert run_id_of(make_cfg(*TINY, ALPHAS, "wise_ft_bn=interpolate")) == run_id_of(make_cfg(*TINY, ALPHAS))
    assert run_id_of(make_cfg(*TINY, ALPHAS, "wise_ft_bn=recompute")) != run_id_of(make_cfg(*TINY, ALPHAS))
    with pytest.raises(ConfigError, match=r"wise_ft_bn=.average. must be interpolate"):
        build.check_settings(make_cfg(*TINY, ALPHAS, "wise_ft_bn=average"))
