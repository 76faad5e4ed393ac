"""`bn_momentum`: BatchNorm's momentum as a run sets it (Kornblith et al. 2019's rule by steps per epoch, a
number, or the model's own), recorded in result.json `resolved`, part of the run's identity only when set."""

import pytest
from conftest import TINY as BASE
from torch.nn.modules.batchnorm import _BatchNorm

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of

TINY = [*BASE, "pretrained=false"]


def momenta_seen(monkeypatch) -> list[set]:
    """The set of BatchNorm momenta in the model each run trains, read once the run has set them."""
    seen, original = [], build.set_bn_momentum

    def spy(cfg, model, steps_per_epoch):
        original(cfg, model, steps_per_epoch)
        seen.append({module.momentum for module in model.modules() if isinstance(module, _BatchNorm)})

    monkeypatch.setattr(build, "set_bn_momentum", spy)
    return seen


@pytest.mark.parametrize("steps_per_epoch, expected", [(4, 0.1), (100, 0.1), (200, 0.05), (296, 10 / 296)])
def test_kornblith_momentum_is_10_over_the_steps_per_epoch_at_most_0_1(steps_per_epoch, expected):
    """TF's decay max(1 - 10/s, 0.9) is PyTorch's momentum 1 - decay (296: Food-101's train at batch 256)."""
    from tlbench.specs import Training

    assert Training(bn_momentum="kornblith").bn_momentum_for(steps_per_epoch) == pytest.approx(expected)


def test_a_run_sets_the_rules_momentum_and_records_it(make_cfg, tmp_path, monkeypatch):
    seen = momenta_seen(monkeypatch)
    result = run(make_cfg(*TINY, "epochs=1", "bn_momentum=kornblith"), output_dir=tmp_path / "run")
    steps = -(-result["data_info"]["train_size"] // 32)
    assert result["status"] == "ok" and result["resolved"]["bn_momentum"] == pytest.approx(min(10 / steps, 0.1))
    assert seen == [{result["resolved"]["bn_momentum"]}]


def test_a_number_is_set_as_given_and_null_keeps_the_models_own(make_cfg, tmp_path, monkeypatch):
    seen = momenta_seen(monkeypatch)
    given = run(make_cfg(*TINY, "epochs=1", "bn_momentum=0.01"), output_dir=tmp_path / "given")
    own = run(make_cfg(*TINY, "epochs=1"), output_dir=tmp_path / "own")
    assert seen == [{0.01}, {0.1}] and "bn_momentum" not in (own.get("resolved") or {})
    assert "bn_momentum" not in (given.get("resolved") or {})  # given, not decided by the run
    assert given["run_id"] != own["run_id"] == run_id_of(make_cfg(*TINY, "epochs=1", "bn_momentum=null"))


@pytest.mark.parametrize("value", ["0", "1.5", "paper", "true"])
def test_a_bad_bn_momentum_is_one_message_naming_the_choices(make_cfg, value):
    with pytest.raises(ConfigError, match=r"bn_momentum.*must be null \(the model's own\), kornblith"):
        build.check_settings(make_cfg(*TINY, f"bn_momentum={value}"))
