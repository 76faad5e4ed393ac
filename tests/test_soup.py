"""`tlbench-soup`: model soups of a sweep's saved models. Ingredients grouped by starting weights and data,
the uniform soup the weight-by-weight mean, the greedy soup never worse on val than its best ingredient, each
soup kept as a model file tlbench-predict reads, and one message when there is nothing to average."""

import json

import pandas as pd
import pytest
import safetensors.torch
import torch
from conftest import TINY as BASE

from tlbench.models import export
from tlbench.runner import soup
from tlbench.runner.run import run

TINY = [*BASE, "pretrained=false", "epochs=2"]


@pytest.fixture
def sweep(make_cfg, tmp_path):
    """Three runs from one start that differ in lr and seed, and one on other data (a group of its own)."""
    folder = tmp_path / "sweep"
    for name, overrides in {"a": ["optimizer.lr=0.01"], "b": ["optimizer.lr=0.003", "l2sp.alpha=0.1"],
                            "c": ["optimizer.lr=0.01", "seed=1"],
                            "other": ["dataset.noise=0.5"]}.items():
        run(make_cfg(*TINY, "model.head_init=zeros", *overrides), output_dir=folder / name)
    return folder


def test_uniform_and_greedy_soups_of_a_sweep(sweep, tmp_path, capsys):
    out = tmp_path / "soups"
    assert soup.main([str(sweep), "--out", str(out)]) == 0
    table = pd.read_csv(out / "soups.csv")
    assert table.group.nunique() == 1 and (table.kind == "ingredient").sum() == 3  # "other" stands alone
    (group, cooked), = json.loads((out / "soups.json").read_text()).items()
    assert set(cooked["varying"]) == {"optimizer.lr", "seed", "l2sp.alpha"}
    best = max(cooked["ingredients"], key=lambda i: i["val"])
    assert cooked["best_single"]["val"] == best["val"] and cooked["greedy"]["members"][0] == best["run_id"]
    assert cooked["greedy"]["val"] >= best["val"]  # greedy keeps an ingredient only if val does not fall
    assert len(cooked["uniform"]["members"]) == 3
    states = [safetensors.torch.load_file(sweep / name / "model.safetensors") for name in ("a", "b", "c")]
    uniform = safetensors.torch.load_file(out / group / "uniform" / "model.safetensors")
    for key, value in uniform.items():
        expected = torch.stack([s[key].float() for s in states]).mean(0) if value.is_floating_point() else states[0][key]
        torch.testing.assert_close(value.float(), expected.float(), msg=key)
    model, meta = export.load_model(out / group / "greedy")  # tlbench-predict reads a soup as any saved model
    assert meta["soup"]["kind"] == "greedy" and meta["classes"] == json.loads((sweep / "a" / "model.json").read_text())["classes"]
    scorer = soup.Scorer(json.loads((sweep / "a" / "result.json").read_text())["config"])
    assert scorer(model.state_dict(), "test") == pytest.approx(cooked["greedy"]["test"])
    assert "greedy soup" in capsys.readouterr().out


def test_nothing_to_average_is_one_message(make_cfg, tmp_path, capsys):
    run(make_cfg(*TINY, "epochs=1"), output_dir=tmp_path / "one" / "a")
    run(make_cfg(*TINY, "epochs=1", "save_model=false", "seed=1"), output_dir=tmp_path / "one" / "b")
    assert soup.main([str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "no two finished runs" in err and "save_model=true" in err and "Traceback" not in err


def test_recomputed_batchnorm_statistics_are_kept_with_the_soup(sweep, tmp_path):
    out = tmp_path / "soups_bn"
    assert soup.main([str(sweep), "--out", str(out), "--bn", "recompute"]) == 0
    (group, cooked), = json.loads((out / "soups.json").read_text()).items()
    assert cooked["bn"] == "recompute" and cooked["greedy"]["val"] >= cooked["best_single"]["val"]
    states = [safetensors.torch.load_file(sweep / name / "model.safetensors") for name in ("a", "b", "c")]
    uniform = safetensors.torch.load_file(out / group / "uniform" / "model.safetensors")
    stats = [key for key in uniform if key.endswith(("running_mean", "running_var"))]
    assert stats
    for key, value in uniform.items():
        mean = torch.stack([s[key].float() for s in states]).mean(0) if value.is_floating_point() else None
        if key in stats:  # measured anew, not the average of the ingredients' statistics
            assert not torch.allclose(value.float(), mean, atol=1e-4), key
        elif mean is not None:
            torch.testing.assert_close(value.float(), mean, msg=key)
    model, _ = export.load_model(out / group / "uniform")  # the kept file is the soup that was scored
    scorer = soup.Scorer(json.loads((sweep / "a" / "result.json").read_text())["config"])
    assert scorer(model.state_dict(), "test") == pytest.approx(cooked["uniform"]["test"])
