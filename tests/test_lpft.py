"""model.head_init=probe (LP-FT, Kumar et al. 2022): the new head starts as the logistic regression fitted on the
starting backbone's features. The mapping of a fitted scikit-learn classifier (standardisation folded in, two
classes too) into a linear layer is checked against its own predict_proba; the head a run starts from
classifies the test split as the probe did; training starts from a lower loss than a zero head's."""

import numpy as np
import pytest
import torch
from conftest import TINY as BASE
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlbench import probes
from tlbench.runner import build
from tlbench.runner.run import run
from tlbench.training import engine

TINY = [*BASE, "pretrained=false", "epochs=1"]


@pytest.mark.parametrize("classes, standardize", [(3, False), (3, True), (2, True)])
def test_a_fitted_logistic_regression_maps_to_a_linear_layer_with_the_same_probabilities(classes, standardize):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(90, 6)) * [1, 2, 3, 4, 5, 6] + 3, np.arange(90) % classes
    x[:, 0] += y
    steps = [StandardScaler()] if standardize else []
    fitted = make_pipeline(*steps, LogisticRegression(C=0.5, max_iter=2000)).fit(x, y)
    weight, bias = probes.as_linear(fitted, classes)
    logits = torch.from_numpy(x @ weight.T + bias)
    assert weight.shape == (classes, 6)
    assert np.allclose(torch.softmax(logits, 1).numpy(), fitted.predict_proba(x), atol=1e-9)


def test_the_run_starts_from_the_probes_head_and_a_lower_loss(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "model.head_init=probe")
    splits, built = build.prepare(cfg)
    record = build.probe_head(cfg, built, splits, torch.device("cpu"), {"dataset.name": "synthetic"})
    loaders = build.make_loaders(cfg, splits, built, torch.device("cpu"))
    _, test_acc, _ = engine.evaluate(built.model, loaders["test"], torch.device("cpu"), engine.TrainOptions(epochs=1))
    assert test_acc == pytest.approx(record["test_acc"], abs=1 / len(splits.test) + 1e-9)
    assert record["C_chosen_on"].startswith(("val_", "cv"))
    # BatchNorm in eval mode: this random-init backbone's batch statistics are far from the running ones the
    # probe's features were extracted with (a pretrained backbone's are close)
    fitted = run(make_cfg(*TINY, "model.head_init=probe", "freeze.bn_eval=true"), output_dir=tmp_path / "lpft")
    zeros = run(make_cfg(*TINY, "freeze.bn_eval=true"), output_dir=tmp_path / "zeros")
    assert fitted["head_probe"]["C"] > 0 and fitted["run_id"] != zeros["run_id"]
    assert fitted["iter_loss"][0] < zeros["iter_loss"][0] == pytest.approx(np.log(4), abs=0.02)  # zero head: ln C


def test_the_probe_never_fits_val_which_the_fine_tuning_selects_on(make_cfg, tmp_path):
    from tlbench.runner.run import run_id_of

    cfg = make_cfg(*TINY, "model.head_init=probe")
    splits, built = build.prepare(cfg)
    record = build.probe_head(cfg, built, splits, torch.device("cpu"), {"dataset.name": "synthetic"})
    assert record["fit_on"] == "train" and record["fit_images"] == len(splits.train)
    old = make_cfg(*TINY, "model.head_init=probe", "head_probe_fit=train_val")
    splits, built = build.prepare(old)
    leaky = build.probe_head(old, built, splits, torch.device("cpu"), {"dataset.name": "synthetic"})
    assert leaky["fit_images"] == len(splits.train) + len(splits.val)  # the older runs' fit, one override away
    # a migration: LP-FT runs move; train_val gives the older id back; other runs never see the key
    assert run_id_of(cfg) != run_id_of(old)
    assert run_id_of(make_cfg(*TINY, "head_probe_fit=train_val")) == run_id_of(make_cfg(*TINY))


def test_recomputed_statistics_give_the_probe_the_features_training_starts_from(make_cfg):
    """head_probe_bn=recompute (the default): the backbone's BatchNorm statistics are measured on the training batches before the
    probe's features are extracted (so its record names other weights), the head is fitted on them, and the
    run_id tells the two apart; the key is idle for other heads."""
    from tlbench.runner.run import run_id_of

    cfg = make_cfg(*TINY, "model.head_init=probe")  # the default
    splits, built = build.prepare(cfg)
    before = {k: v.clone() for k, v in built.model.state_dict().items() if k.endswith("running_mean")}
    record = build.probe_head(cfg, built, splits, torch.device("cpu"), {"dataset.name": "synthetic"})
    after = {k: v for k, v in built.model.state_dict().items() if k.endswith("running_mean")}
    assert before and all(not torch.allclose(before[k], after[k]) for k in before)
    plain = make_cfg(*TINY, "model.head_init=probe", "head_probe_bn=running")
    splits, built = build.prepare(plain)
    kept = build.probe_head(plain, built, splits, torch.device("cpu"), {"dataset.name": "synthetic"})
    assert (record["bn"], kept["bn"]) == ("recompute", "running")
    assert record["weights_fingerprint"] != kept["weights_fingerprint"]
    assert run_id_of(cfg) != run_id_of(plain)
    assert run_id_of(make_cfg(*TINY, "head_probe_bn=recompute")) == run_id_of(make_cfg(*TINY))
