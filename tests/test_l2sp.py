"""`l2sp`: L2-SP's penalty (Li, Grandvalet & Davoine 2018) on the training loss, toward the weights the run
started from: its value written out by hand, its wiring through a run, and a resumed run penalising toward the
same starting point (not toward the weights it resumed from)."""

import pytest
import torch
from conftest import TINY as BASE
from conftest import run_interrupted
from torch import nn

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of
from tlbench.training.step import L2SP, StepOptions, forward_loss

TINY = [*BASE, "pretrained=false"]
PENALISED = ["l2sp.alpha=0.5", "l2sp.beta=0.05"]


def test_the_penalty_is_alpha_half_squared_distance_to_the_start_plus_beta_half_squared_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    body, head = list(model[1].parameters()), list(model[3].parameters())
    start = [p.detach().clone() for p in body]
    penalty = L2SP(body, head, alpha=0.5, beta=0.05)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    images, labels = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0])
    loss, logits = forward_loss(model, images, labels, StepOptions(penalty=penalty))
    by_hand = (nn.functional.cross_entropy(logits, labels) + 0.25 * sum(((p - s) ** 2).sum() for p, s in zip(body, start))
               + 0.025 * sum((p ** 2).sum() for p in head))
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    model[1].weight.requires_grad_(False)  # a frozen parameter adds nothing
    frozen_loss, _ = forward_loss(model, images, labels, StepOptions(penalty=penalty))
    assert frozen_loss.item() == pytest.approx(by_hand.item() - 0.25 * ((model[1].weight - start[0]) ** 2).sum().item(),
                                               rel=1e-6)


def test_a_penalised_run_trains_differently_and_resumes_toward_its_starting_weights(make_cfg, tmp_path, monkeypatch):
    overrides = [*TINY, *PENALISED, "epochs=3"]
    whole = run(make_cfg(*overrides), output_dir=tmp_path / "whole")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 1)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert resumed["iter_loss"] == whole["iter_loss"] and whole["config"]["l2sp"]["alpha"] == 0.5
    plain = run(make_cfg(*TINY, "epochs=3"), output_dir=tmp_path / "plain")
    assert plain["iter_loss"][0] == whole["iter_loss"][0] and plain["iter_loss"] != whole["iter_loss"]  # 0 at the start


def test_l2sp_off_is_the_old_identity_and_a_bad_value_one_message(make_cfg):
    assert run_id_of(make_cfg(*TINY, "l2sp.alpha=0")) == run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, *PENALISED)) != run_id_of(make_cfg(*TINY))
    with pytest.raises(ConfigError, match=r"l2sp.alpha=-1.0 must be >= 0"):
        build.check_settings(make_cfg(*TINY, "l2sp.alpha=-1"))
