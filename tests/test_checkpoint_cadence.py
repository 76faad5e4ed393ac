"""`checkpoint_every_s`: the full training state is saved when that long has passed since the last
save and after the last epoch, so a fast GPU epoch is not dominated by saving; a resume retrains the
epochs after the last save and still ends exactly where an uninterrupted run ends."""

import json
import time
from types import SimpleNamespace

import pytest
from conftest import TINY

from tlbench.training import engine
from tlbench.errors import ConfigError
from tlbench.runner.build import check_settings
from tlbench.runner.run import run

# A freeze phase change (after epoch 2), a stateful plateau schedule and augmentation: what a
# resume from an earlier save must restore before it trains the lost epochs again.
CADENCE = [*TINY, "epochs=4", "pretrained=false", "augment=crop_flip", "freeze=freeze_unfreeze", "freeze.epochs=2",
           "schedule=plateau", "schedule.patience=0", "optimizer=sgd", "optimizer.lr=0.2", "save_best=true"]
TIMING = ("time_s", "images_per_s")
FAST = ["threads=1"]  # on a busy 2-core machine two OpenMP threads spin instead of working


def saved_epochs(monkeypatch) -> list[int]:
    """The epoch of every checkpoint written from now on (each is still written)."""
    saved, save = [], engine.checkpoint.save

    def counting_save(state, path):
        saved.append(state["epoch"])
        return save(state, path)

    monkeypatch.setattr(engine.checkpoint, "save", counting_save)
    return saved


def fake_epoch_clock(monkeypatch, epoch_s: list[float], stop_at_call: int | None = None):
    """engine sees a clock that moves only when an epoch trains: the n-th train_one_epoch call of
    each run takes epoch_s[n] seconds. Call `stop_at_call` (1-based, counted over the whole test)
    raises KeyboardInterrupt before it trains, as Ctrl-C during that epoch would."""
    clock, calls = {"now": 0.0}, {"n": 0}
    monkeypatch.setattr(engine, "time", SimpleNamespace(perf_counter=time.perf_counter, monotonic=lambda: clock["now"]))
    train = engine.train_one_epoch

    def timed_train(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == stop_at_call:
            raise KeyboardInterrupt
        clock["now"] += epoch_s.pop(0)
        return train(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", timed_train)


def metrics(result: dict) -> tuple:
    epochs = [{k: v for k, v in e.items() if k not in TIMING} for e in result["epochs"]]
    return epochs, result["iter_loss"], {k: v for k, v in result["summary"].items() if k != "total_time_s"}


@pytest.mark.parametrize("every_s, expected", [(3600, [3]), (0, [1, 2, 3])])
def test_a_long_interval_saves_only_the_last_epoch_and_zero_saves_every_epoch(make_cfg, tmp_path, monkeypatch,
                                                                               every_s, expected):
    saved = saved_epochs(monkeypatch)
    result = run(make_cfg(*TINY, *FAST, "epochs=3", "pretrained=false", f"checkpoint_every_s={every_s}"),
                 output_dir=tmp_path / "run")
    assert result["status"] == "ok" and saved == expected


def test_a_resume_retrains_the_epochs_after_the_last_save_and_ends_like_an_uninterrupted_run(make_cfg, tmp_path,
                                                                                          monkeypatch):
    # 100 s between saves; epoch 1 "takes" 150 s and the others 10 s: saves after epochs 1 and 4.
    overrides = [*CADENCE, *FAST, "checkpoint_every_s=100"]
    with monkeypatch.context() as patch:
        saved = saved_epochs(patch)
        fake_epoch_clock(patch, [150, 10, 10, 10])
        uninterrupted = run(make_cfg(*overrides), output_dir=tmp_path / "uninterrupted")
    assert saved == [1, 4]

    with monkeypatch.context() as patch:
        saved = saved_epochs(patch)
        fake_epoch_clock(patch, [150, 10, 10], stop_at_call=4)  # Ctrl-C in epoch 4: epochs 2-3 were never saved
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    stopped = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert saved == [1] and stopped["status"] == "interrupted" and len(stopped["epochs"]) == 3

    resumed = run(make_cfg(*overrides), output_dir=tmp_path / "resumed")
    assert [r["after_epoch"] for r in resumed["resumes"]] == [1], "resumes from the last saved epoch"
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4], "epochs 2-3 replaced, not repeated"
    assert [e["freeze_phase"] for e in resumed["epochs"]] == ["head", "head", "all", "all"]
    assert metrics(resumed) == metrics(uninterrupted)
    best = [json.loads((tmp_path / name / "best.json").read_text()) for name in ("uninterrupted", "resumed")]
    assert best[0]["epoch"] == best[1]["epoch"] and best[0]["test_acc"] == best[1]["test_acc"]


def test_a_negative_interval_fails_before_training(make_cfg):
    with pytest.raises(ConfigError, match="checkpoint_every_s=-1"):
        check_settings(make_cfg("checkpoint_every_s=-1"))
