"""`mix`: mixup / cutmix of each training batch by timm's Mixup, on both data paths, with the run's label
smoothing in the soft targets; the loss is checked against timm's own SoftTargetCrossEntropy on timm's own
mixed batch, and a mixed run resumes exactly (numpy's random state, which Mixup draws from, is checkpointed)."""

import numpy as np
import pytest
import torch
from conftest import TINY as BASE
from conftest import run_interrupted
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of
from tlbench.training.step import StepOptions, forward_loss

TINY = [*BASE, "pretrained=false"]
MIXED = ["mix.mixup_alpha=0.8", "mix.cutmix_alpha=1.0"]  # timm's ImageNet recipe


def batch(count, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 8, 8, generator=generator), torch.arange(count) % 4


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_the_loss_is_timms_soft_target_cross_entropy_on_timms_mixed_batch(mixup, cutmix):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    images, labels = batch(6)
    mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1, num_classes=4)
    np.random.seed(5)
    loss, _ = forward_loss(model, images, labels, StepOptions(label_smoothing=0.1, mix=mix))
    np.random.seed(5)
    oracle_images, oracle_targets = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1,
                                          num_classes=4)(images.clone(), labels)
    assert loss.item() == pytest.approx(SoftTargetCrossEntropy()(model(oracle_images), oracle_targets).item(), rel=1e-6)
    assert torch.equal(images, batch(6)[0]), "the caller's batch is left as it was"


def test_an_odd_batchs_last_image_is_not_mixed_and_keeps_the_smoothed_target():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    images, labels = batch(5)
    np.random.seed(1)
    loss, _ = forward_loss(model, images, labels, StepOptions(label_smoothing=0.1, mix=Mixup(
        mixup_alpha=0.8, label_smoothing=0.1, num_classes=4)))
    np.random.seed(1)
    pair_images, pair_targets = Mixup(mixup_alpha=0.8, label_smoothing=0.1, num_classes=4)(images[:4].clone(), labels[:4])
    pairs = SoftTargetCrossEntropy()(model(pair_images), pair_targets)
    single = nn.functional.cross_entropy(model(images[4:]), labels[4:], label_smoothing=0.1)
    assert loss.item() == pytest.approx((4 * pairs.item() + single.item()) / 5, rel=1e-6)


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_a_mixed_run_trains_on_both_data_paths_and_resumes_exactly(make_cfg, tmp_path, monkeypatch, pipeline):
    overrides = [*TINY, *MIXED, "epochs=3", f"data.pipeline={pipeline}"]
    whole = run(make_cfg(*overrides), output_dir=tmp_path / "whole")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 1)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert whole["status"] == resumed["status"] == "ok" and whole["config"]["mix"]["cutmix_alpha"] == 1.0
    assert resumed["iter_loss"] == whole["iter_loss"]
    plain = run(make_cfg(*TINY, "epochs=3", f"data.pipeline={pipeline}"), output_dir=tmp_path / "plain")
    assert plain["iter_loss"] != whole["iter_loss"]


def test_mix_off_is_the_old_identity_and_on_is_another_run(make_cfg):
    assert run_id_of(make_cfg(*TINY, "mix.mixup_alpha=0", "mix.prob=0.5")) == run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, *MIXED)) != run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, "freeze=logreg", *MIXED)) == run_id_of(make_cfg(*TINY, "freeze=logreg"))


@pytest.mark.parametrize("override, needle", [("mix.mixup_alpha=-1", "mix.mixup_alpha=-1.0 must be >= 0"),
                                              ("mix.prob=2", "mix.prob=2.0 must be a probability"),
                                              ("+mix.alpha=1", "mix.alpha")])
def test_a_bad_mix_setting_is_one_message_naming_it(make_cfg, override, needle):
    with pytest.raises(ConfigError, match=needle):
        build.check_settings(make_cfg(*TINY, override))
