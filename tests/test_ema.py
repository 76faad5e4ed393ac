"""`ema`: a moving average of the weights (timm's ModelEmaV3), updated after every optimizer step and scored on
val and test beside the trained weights: the average written out by hand from the weights of every step, its
scores and summary, an interrupted run resuming to the same averages, and its identity."""

import pytest
import torch
from conftest import TINY as BASE
from conftest import run_interrupted

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.run import run, run_id_of
from tlbench.training import engine

TINY = [*BASE, "pretrained=false", "epochs=3", "optimizer.lr=0.01"]


def recorded(monkeypatch) -> tuple[list, list]:
    """Every step's weights (after the step) and the EMA the run made, as the run goes."""
    steps, made = [], []
    step, make = engine.train_step, build.weight_ema

    def stepping(model, *args, **kwargs):
        out = step(model, *args, **kwargs)
        steps.append({n: p.detach().clone() for n, p in model.named_parameters()})
        return out

    def making(cfg, model):
        made.append(make(cfg, model))
        return made[-1]

    monkeypatch.setattr(engine, "train_step", stepping)
    monkeypatch.setattr(build, "weight_ema", making)
    return steps, made


@pytest.mark.parametrize("warmup", [True, False])
def test_the_average_is_the_moving_average_of_every_steps_weights_and_is_what_is_scored(make_cfg, tmp_path,
                                                                                           monkeypatch, warmup):
    steps, made = recorded(monkeypatch)
    result = run(make_cfg(*TINY, "ema.decay=0.9", f"ema.warmup={str(warmup).lower()}"), output_dir=tmp_path)
    assert len(steps) == 3 * result["iters_per_epoch"] and len(made) == 1
    expected = dict(steps[0])  # timm: the first step copies the weights, then e = d e + (1 - d) w
    for t, weights in enumerate(steps[1:], start=1):
        decay = min(0.9, 1 - (1 + t) ** (-2 / 3)) if warmup else 0.9
        expected = {n: decay * expected[n] + (1 - decay) * w for n, w in weights.items()}
    averaged = dict(made[0].module.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(averaged["fc.weight"], steps[-1]["fc.weight"])  # an average, not the last weights
    last, summary = result["epochs"][-1], result["summary"]["ema"]
    assert {"ema_val_acc", "ema_test_acc", "ema_val_loss", "ema_test_loss"} <= set(last)
    assert summary["final_test_acc"] == last["ema_test_acc"] and result["summary"]["final_test_acc"] == last["test_acc"]
    chosen = max(result["epochs"], key=lambda e: (e["ema_val_acc"], -e["ema_val_loss"]))  # acc_loss on its own val
    assert summary["best_epoch"] == chosen["epoch"] and summary["test_acc_at_best_val"] == chosen["ema_test_acc"]


def test_an_interrupted_run_resumes_to_the_same_averages(make_cfg, tmp_path, monkeypatch):
    overrides = [*TINY, "ema.decay=0.8"]
    whole = run(make_cfg(*overrides), output_dir=tmp_path / "whole")
    run_interrupted(monkeypatch, make_cfg(*overrides), tmp_path / "resumed", 1)
    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert len(resumed["resumes"]) == 1
    for key in ("ema_val_loss", "ema_test_loss", "ema_test_acc", "val_loss"):
        assert [e[key] for e in resumed["epochs"]] == [e[key] for e in whole["epochs"]], key


def test_ema_off_keeps_the_old_identity_and_a_bad_decay_is_one_message(make_cfg, tmp_path):
    assert run_id_of(make_cfg(*TINY, "ema.decay=0", "ema.warmup=false")) == run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, "ema.decay=0.99")) != run_id_of(make_cfg(*TINY))
    assert run_id_of(make_cfg(*TINY, "ema.decay=0.99", "ema.warmup=false")) != run_id_of(make_cfg(*TINY, "ema.decay=0.99"))
    plain = run(make_cfg(*TINY, "epochs=1"), output_dir=tmp_path)
    assert "ema" not in plain["summary"] and "ema_val_acc" not in plain["epochs"][0]
    with pytest.raises(ConfigError, match=r"ema.decay=1.0 must be in \[0, 1\)"):
        build.check_settings(make_cfg(*TINY, "ema.decay=1"))


def test_the_ema_is_kept_as_a_model_file_that_predict_and_soups_read(make_cfg, tmp_path, monkeypatch, capsys):
    import json

    import safetensors.torch

    from tlbench.errors import DataNotFoundError
    from tlbench.models import export
    from tlbench.runner import soup

    _, made = recorded(monkeypatch)
    sweep = tmp_path / "sweep"
    results = {name: run(make_cfg(*TINY, "ema.decay=0.8", "model.head_init=zeros", f"optimizer.lr={lr}"),
                         output_dir=sweep / name) for name, lr in (("a", 0.01), ("b", 0.003))}
    kept = safetensors.torch.load_file(sweep / "a" / "ema.safetensors")
    for key, value in made[0].module.state_dict().items():
        torch.testing.assert_close(kept[key], value.detach().cpu(), msg=key)  # the average, not the final weights
    model, meta = export.load_model(sweep / "a", "ema")  # what tlbench-predict --which ema loads
    last = results["a"]["epochs"][-1]
    assert meta["which"] == "ema" and meta["epoch"] == last["epoch"] and meta["test_acc"] == last["ema_test_acc"]
    scorer = soup.Scorer(results["a"]["config"])
    assert scorer(model.state_dict(), "test") == pytest.approx(last["ema_test_acc"])  # the file is what was scored
    assert soup.main([str(sweep), "--which", "ema", "--out", str(tmp_path / "soups")]) == 0
    (_, cooked), = json.loads((tmp_path / "soups" / "soups.json").read_text()).items()
    scored = {item["run_id"]: item["test"] for item in cooked["ingredients"]}
    assert scored == pytest.approx({r["run_id"]: r["summary"]["ema"]["final_test_acc"] for r in results.values()})
    plain = tmp_path / "plain"
    run(make_cfg(*TINY, "epochs=1"), output_dir=plain)
    assert not (plain / "ema.json").exists()
    with pytest.raises(DataNotFoundError, match="without a weight EMA"):
        export.load_model(plain, "ema")
    assert soup.main([str(plain), "--which", "ema"]) == 2 and "ema.decay" in capsys.readouterr().err
