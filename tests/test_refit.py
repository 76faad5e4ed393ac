"""Select, then refit (issue 24): a sweep scores each setting on val; `python -m tlbench.refit` trains the
setting each cell chose on train + val (`dataset.train_on=train_val`) for its fixed budget and reports that
model's test metric, with the selection beside it. Kornblith et al. 2019 and VTAB-1k's paper do this."""

import json

import pandas as pd
import pytest
from conftest import TINY

from tlbench.errors import ConfigError
from tlbench.runner import build
from tlbench.runner.refit import main
from tlbench.runner.run import run

# synthetic: 128 training images, val_split 0.25 carves 32 of them
RUN = [*TINY, "pretrained=false"]


@pytest.fixture
def sweep(make_cfg, tmp_path):
    """Two learning rates, one seed each, scored on val."""
    folder = tmp_path / "sweep"
    results = [run(make_cfg(*RUN, f"optimizer.lr={lr}"), output_dir=folder / str(n)) for n, lr in
               enumerate([0.3, 0.001])]
    return folder, results


def test_the_refit_trains_the_setting_chosen_on_val_on_train_and_val(sweep, capsys):
    folder, results = sweep
    best = max(results, key=lambda r: (r["summary"]["best_val_acc"],  # the report's rule: then the lower val loss
                                       -r["epochs"][r["summary"]["best_epoch"] - 1]["val_loss"]))
    assert main([str(folder), "--tune", "optimizer.lr"]) == 0
    table = pd.read_csv(folder / "refit" / "refit.csv")
    assert len(table) == 1 and table["optimizer.lr"][0] == best["config"]["optimizer"]["lr"]
    refit = json.loads(open(table["refit_run"][0]).read())
    assert refit["status"] == "ok" and refit["config"]["optimizer"]["lr"] == best["config"]["optimizer"]["lr"]
    assert refit["config"]["dataset"]["train_on"] == "train_val" and refit["config"]["select_epoch"] == "final"
    sizes = best["data_info"]
    assert refit["data_info"]["train_size"] == sizes["train_size"] + sizes["val_size"]
    assert refit["data_info"]["val_is_test"] and refit["summary"]["best_epoch"] == len(refit["epochs"])
    assert table["refit_test_metric"][0] == refit["summary"]["final_test_metric"]
    assert table["val_score_of_choice"][0] == best["summary"]["best_val_acc"]
    assert (folder / "refit" / "selection.csv").exists()
    # again: the finished refit is skipped, nothing trains twice
    assert main([str(folder), "--tune", "optimizer.lr"]) == 0
    assert json.loads(open(table["refit_run"][0]).read())["finished_at"] == refit["finished_at"]


def test_a_dry_run_lists_the_refits_and_trains_nothing(sweep, capsys):
    folder, _ = sweep
    assert main([str(folder), "--tune", "optimizer.lr", "--dry-run"]) == 0
    assert "optimizer.lr=" in capsys.readouterr().out
    assert not (folder / "refit").exists()


def test_refit_mistakes_are_one_message(sweep, tmp_path, capsys):
    folder, _ = sweep
    assert main([str(tmp_path / "nowhere"), "--tune", "optimizer.lr"]) == 2
    assert main([str(folder), "--tune", ""]) == 2
    assert "--tune names no setting" in capsys.readouterr().err


def test_training_on_train_and_val_chooses_nothing_on_test(make_cfg):
    for extra, says in [("select_epoch=acc_loss", "select_epoch=final"), ("freeze=logreg", "refit_on"),
                        ("schedule=plateau", "plateau")]:
        overrides = [*RUN, "+dataset.train_on=train_val", extra]
        if extra != "select_epoch=acc_loss":
            overrides.append("select_epoch=final")
        with pytest.raises(ConfigError, match=says):
            build.check_settings(make_cfg(*overrides))


def test_train_and_val_needs_a_val_split(make_cfg, tmp_path):
    from tlbench import data

    cfg = make_cfg(*RUN, "+dataset.train_on=train_val", "select_epoch=final", "dataset.val_split=0")
    with pytest.raises(ConfigError, match="dataset.val_split above 0"):
        data.build_dataset(**cfg.dataset)


def test_an_official_val_split_joins_train_as_a_concatenation(image_tree):
    """A root with train/ and val/ (an official val split): the refit trains on both, val/ becomes test's
    stand-in, and the decode cache still identifies the joined split."""
    from torch.utils.data import ConcatDataset

    from tlbench import data
    from tlbench.data import tensor_data
    from tlbench.data.splits import DataSplits, targets_of, train_on_train_val

    splits = data.build_dataset("imagefolder", root=str(image_tree), image_size=16, val_split=0.5)
    extra = DataSplits(train=splits.train, test=splits.test, classes=splits.classes, image_size=16, source="x",
                       val=splits.test)  # an official val: another dataset object than train's
    extra.test = splits.val
    train_on_train_val(extra)
    assert isinstance(extra.train, ConcatDataset) and extra.val_is_test
    assert len(targets_of(extra.train)) == len(extra.train)
    assert tensor_data.fingerprint(extra.train) is not None


def test_a_setting_given_for_every_refit_is_read_as_the_command_line_reads_it():
    from tlbench.runner.refit import stored_config

    cfg = stored_config({"epochs": 10, "pretrained": True, "device": "cpu"},
                        ["epochs=5", "pretrained=false", "device=cuda", "+wise_ft=[0,0.5,1]"])
    assert cfg.epochs == 5 and cfg.pretrained is False and cfg.device == "cuda" and list(cfg.wise_ft) == [0, 0.5, 1]


def test_a_refit_keeps_the_ratio_lora_s_auto_chose_on_the_selection_split():
    """train + val can cross auto's threshold (50 images per class): the refit trains at the ratio the selection
    run trained at (its result.json `resolved`), unless the command sets it."""
    from tlbench.runner.refit import refit_config

    config = {"epochs": 2, "pretrained": True, "freeze": {"name": "lora", "lr_ratio": "auto"}}
    resolved = {"freeze.lr_ratio": 1.0, "optimizer.lr": 0.003}
    assert refit_config(config, resolved).freeze.lr_ratio == 1.0
    assert "optimizer" not in refit_config(config, resolved)  # a rule of its own (random init's), decided again
    assert refit_config(config, None).freeze.lr_ratio == "auto"
    assert refit_config(config, resolved, ["freeze.lr_ratio=3"]).freeze.lr_ratio == 3
