"""Parameter-efficient fine-tuning: freeze=bitfit (biases, norm layers and the head) and
freeze=lora (peft adapters and the head), trained for real on tiny data."""


import pytest
import torch

from conftest import TINY, run_interrupted
from tlbench.models import adapters, export
from tlbench.runner.run import run
from tlbench.runner import build

pytest.importorskip("peft", reason="the `peft` extra is not installed")

SMALL = [*TINY, "pretrained=false", "dataset.image_size=32", "epochs=2", "save_best=true"]


def weights_of(folder) -> dict:
    return torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def initial_model(cfg):
    """The model a run of `cfg` starts from (seeded as run() seeds it)."""
    from tlbench.runner import devices

    devices.seed_everything(cfg.seed)
    return build.prepare(cfg)[1].model


def test_bitfit_trains_exactly_the_biases_norm_layers_and_head(make_cfg, tmp_path):
    cfg = make_cfg(*SMALL, "epochs=1", "keep_checkpoint=true", "freeze=bitfit", "optimizer.lr=0.05")
    model = initial_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run(cfg, output_dir=tmp_path / "bitfit")
    after = weights_of(tmp_path / "bitfit")
    norms = {n for n in adapters.norm_param_names(model)}
    expected = {n for n, _ in model.named_parameters() if n.endswith(".bias") or n in norms or n.startswith("fc.")}
    moved = {n for n, _ in model.named_parameters() if not torch.equal(before[n], after[n])}
    assert moved == expected  # every one of them trained, and nothing else did
    assert {"fc.weight", "bn1.weight", "layer1.0.bn1.bias"} <= expected and "conv1.weight" not in expected
    first = result["epochs"][0]
    assert first["freeze_phase"] == "bitfit"
    assert first["trainable_params"] == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert first["trainable_fraction"] == pytest.approx(first["trainable_params"] / result["model_info"]["total_params"])


@pytest.mark.parametrize("model, extra", [("tf_efficientnet_lite0", []),
                                          ("deit_tiny", ["+model.kwargs.img_size=32"])])
def test_lora_trains_under_5_percent_and_saves_the_merged_plain_model(make_cfg, tmp_path, model, extra):
    out = tmp_path / model
    result = run(make_cfg(*SMALL, f"model={model}", *extra, "freeze=lora", "keep_checkpoint=true",
                          "optimizer.lr=0.01"), output_dir=out)
    assert result["status"] == "ok"
    first = result["epochs"][0]
    assert first["freeze_phase"] == "lora" and 0 < first["trainable_fraction"] < 0.05, first
    assert result["model_info"]["lora"]["targets"] > 0
    trained = weights_of(out)
    assert any("lora_B" in k and trained[k].abs().sum() > 0 for k in trained), "the adapters never trained"

    plain, meta = export.load_model(out)  # rebuilt as the plain architecture: no adapter names
    assert not adapters.adapter_param_names(plain)
    adapted = rebuild_adapted(make_cfg(*SMALL, f"model={model}", *extra, "freeze=lora"), trained)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(images), adapted.eval()(images), atol=1e-4, rtol=1e-4)


def rebuild_adapted(cfg, state):
    splits, built = build.prepare(cfg)
    build.adapt(cfg, built)  # the adapters, as the run injects them
    built.model.load_state_dict(state)
    return built.model


def test_lora_scores_val_and_test_on_the_merged_weights_with_the_adapted_models_numbers(make_cfg, tmp_path,
                                                                                        monkeypatch):
    """Val and test see a copy with the adapters merged (faster: no adapter branch per layer);
    its numbers are those of the adapted model the run trains, which it leaves as it was."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from tlbench.training import engine

    scored_models = []
    real_evaluate = engine.evaluate

    def spy(model, loader, device, options):
        scored_models.append(any(isinstance(m, BaseTunerLayer) for m in model.modules()))
        return real_evaluate(model, loader, device, options)

    monkeypatch.setattr(engine, "evaluate", spy)
    cfg = make_cfg(*SMALL, "epochs=1", "model=tf_efficientnet_lite0", "freeze=lora", "keep_checkpoint=true",
                   "optimizer.lr=0.01")
    result = run(cfg, output_dir=tmp_path / "lora")
    assert scored_models == [False, False]  # val and test, each on a merged plain copy
    assert result["env"]["channels_last"] is True  # auto on a CPU: lite0 has depthwise convolutions
    adapted = rebuild_adapted(cfg, weights_of(tmp_path / "lora"))  # the trained weights, adapters separate
    splits, built = build.prepare(cfg)
    loaders = build.make_loaders(cfg, splits, built, torch.device("cpu"))
    val_loss, val_acc, _ = real_evaluate(adapted, loaders["val"], torch.device("cpu"), engine.TrainOptions(epochs=1))
    last = result["epochs"][-1]
    assert last["val_acc"] == val_acc and last["val_loss"] == pytest.approx(val_loss, rel=1e-5)


def test_a_lora_run_resumes_exactly(make_cfg, tmp_path, monkeypatch):
    overrides = [*SMALL, "epochs=3", "model=tf_efficientnet_lite0", "freeze=lora", "optimizer.lr=0.01"]
    uninterrupted = run(make_cfg(*overrides), output_dir=tmp_path / "whole")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 1)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert [r["after_epoch"] for r in resumed["resumes"]] == [1]
    assert resumed["iter_loss"] == uninterrupted["iter_loss"]
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in uninterrupted["epochs"]]


@pytest.mark.parametrize("per_class, overrides, ratio", [
    (10, [], 1.0), (49.9, [], 1.0), (50, [], 3.0), (200, [], 3.0),  # auto: 3 x lr from 50 images per class
    (200, ["pretrained=false"], 1.0),  # ... but not from random weights, whose lr is already random_init_lr_ratio x
    (200, ["freeze.lr_ratio=1"], 1.0), (10, ["freeze.lr_ratio=3"], 3.0),  # a number is kept as given
    (10, ["freeze.lr_ratio=3", "pretrained=false"], 3.0)])
def test_lora_trains_adapters_and_head_at_its_ratio_by_images_per_class(make_cfg, per_class, overrides, ratio):
    from tlbench.training import freeze

    cfg = make_cfg("freeze=lora", "pretrained=true", *overrides)
    strategy = freeze.build_freeze(stages=[["a.weight"], ["head.weight"]], total_epochs=2, **cfg.freeze,
                                   adapter_params=("a.lora_A",), images_per_class=per_class,
                                   pretrained=cfg.pretrained)
    (group,) = strategy.phase(0).groups
    assert group.lr_scale == ratio and set(group.names) == {"a.lora_A", "head.weight"}
    info = {"train_size": int(per_class * 10), "num_classes": 10, "image_size": 32}
    assert build.resolved(cfg, info).get("freeze.lr_ratio", ratio) == ratio  # result.json records what auto chose


def test_a_lora_run_records_the_ratio_auto_chose_from_its_training_images(make_cfg, tmp_path):
    result = run(make_cfg(*SMALL, "epochs=1", "freeze=lora", "dataset.train_per_class=5"), output_dir=tmp_path / "a")
    assert result["data_info"]["train_size"] == 5 * result["data_info"]["num_classes"]
    assert result["resolved"]["freeze.lr_ratio"] == 1.0
    assert "freeze.lr_ratio" not in run(make_cfg(*SMALL, "epochs=1", "freeze=lora", "freeze.lr_ratio=3"),
                                        output_dir=tmp_path / "given").get("resolved", {})


@pytest.mark.parametrize("override, needle", [("freeze.rank=0", "freeze.rank=0 must be a positive integer"),
                                              ("freeze.lr_ratio=0", r"freeze.lr_ratio=0 must be a positive number, "
                                                                    "or auto"),
                                              ("freeze.lr_ratio=fast", "freeze.lr_ratio='fast' must be a positive"),
                                              ("freeze.target_modules=[nothing]", "matches no Linear or Conv2d")])
def test_bad_lora_settings_fail_before_training_naming_the_key(make_cfg, tmp_path, override, needle):
    from tlbench.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        run(make_cfg(*SMALL, "freeze=lora", override), output_dir=tmp_path / "bad")


@pytest.mark.e2e  # a lite0 LoRA training, ~5 s: the default command's budget (the EMA file itself: test_ema.py)
def test_a_lora_runs_weight_ema_is_saved_merged_and_scores_as_it_was_scored(make_cfg, tmp_path):
    from tlbench.runner import soup

    out = tmp_path / "lora_ema"
    result = run(make_cfg(*SMALL, "model=tf_efficientnet_lite0", "freeze=lora", "optimizer.lr=0.01", "ema.decay=0.5"),
                 output_dir=out)
    plain, meta = export.load_model(out, "ema")  # the EMA of the adapted model, its adapters merged
    assert not adapters.adapter_param_names(plain) and meta["which"] == "ema"
    scored = soup.Scorer(result["config"])(plain.state_dict(), "test")
    assert scored == pytest.approx(result["epochs"][-1]["ema_test_acc"])
