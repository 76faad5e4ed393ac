"""`random_init_select_epoch`: the rule a random-init run picks its epoch by (`final` by default: measured in
issue 22), null = select_epoch; pretrained runs and probes never see it, and their run_ids stay as they were.
The summary, best.pt and the report all read the rule the run used."""

import json

import pytest
from conftest import TINY as BASE
from report_fixtures import make_result, write_run
from test_select_epoch import CHOSEN, TEST_ACC, VAL_ACC, VAL_LOSS

from tlbench.errors import ConfigError
from tlbench.records import identity, results
from tlbench.report import load_epochs, load_runs
from tlbench.report.metrics import add_run_metrics
from tlbench.runner import build
from tlbench.runner.run import resolved_config, run, run_id_of

TINY = [*BASE, "epochs=3", "save_best=true", "pretrained=false"]


def test_a_random_init_run_reports_its_last_epoch_and_keeps_it_as_best(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, "random_init_select_epoch=final"), output_dir=tmp_path / "final")
    assert result["summary"]["select_epoch"] == "final" and result["summary"]["best_epoch"] == 3
    assert result["summary"]["test_acc_at_best_val"] == result["epochs"][-1]["test_acc"]
    assert json.loads((tmp_path / "final" / "best.json").read_text())["epoch"] == 3


def test_null_follows_select_epoch(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, "random_init_select_epoch=null", "select_epoch=loss"), output_dir=tmp_path / "null")
    losses = [e["val_loss"] for e in result["epochs"]]
    assert result["summary"]["select_epoch"] == "loss"
    assert result["summary"]["best_epoch"] == losses.index(min(losses)) + 1


def test_the_default_is_final_for_random_init_only(user_cfg):
    assert build.epoch_rule(user_cfg("pretrained=false")) == "final"
    assert build.epoch_rule(user_cfg("pretrained=true", "random_init_select_epoch=loss")) == "acc_loss"
    assert build.epoch_rule(user_cfg("pretrained=false", "random_init_select_epoch=null", "select_epoch=smoothed")) \
        == "smoothed"
    for preset in ("seed_resnet18_cifar10", "vtab1k", "kornblith_finetune", "kornblith_scratch"):  # their protocols
        cfg = user_cfg(f"experiment={preset}", "pretrained=false")
        assert cfg.random_init_select_epoch is None and build.epoch_rule(cfg) == cfg.select_epoch, preset


def test_the_key_is_idle_for_pretrained_runs_and_probes_and_null_keeps_old_run_ids(user_cfg):
    for base in (["pretrained=true"], ["pretrained=true", "freeze=linear_probe"], ["freeze=knn", "pretrained=false"]):
        assert run_id_of(user_cfg(*base, "random_init_select_epoch=loss")) == run_id_of(user_cfg(*base))
    random = ["pretrained=false", "random_init_lr_ratio=1.0"]
    assert run_id_of(user_cfg(*random)) != run_id_of(user_cfg(*random, "random_init_select_epoch=null"))
    # null is the older runs' behaviour: the key then drops out of the identity (identity.LATER_SETTINGS)
    assert "random_init_select_epoch" not in identity.experiment(resolved_config(user_cfg(*random,
                                                                                        "random_init_select_epoch=null")))


def test_a_bad_rule_is_one_message_naming_the_choices(make_cfg):
    with pytest.raises(ConfigError, match="random_init_select_epoch.*must be one of acc, acc_loss, loss, smoothed, "
                                          "final .* or null"):
        build.check_settings(make_cfg(*TINY, "random_init_select_epoch=best"))


def test_a_refit_of_random_init_refuses_a_rule_that_would_choose_on_test(make_cfg):
    cfg = make_cfg(*TINY, "+dataset.train_on=train_val", "select_epoch=final", "random_init_select_epoch=acc_loss")
    with pytest.raises(ConfigError, match="random_init_select_epoch=acc_loss would choose the epoch on the test split"):
        build.check_refit(cfg)
    build.check_refit(make_cfg(*TINY, "+dataset.train_on=train_val", "select_epoch=final",
                               "random_init_select_epoch=final"))


def test_the_rule_of_a_file_is_read_from_its_config():
    assert results.select_rule({"select_epoch": "acc_loss", "pretrained": False}) == "acc_loss"  # before the key
    assert results.select_rule({"select_epoch": "acc_loss", "pretrained": False,
                                "random_init_select_epoch": "final"}) == "final"
    assert results.select_rule({"select_epoch": "acc_loss", "pretrained": True,
                                "random_init_select_epoch": "final"}) == "acc_loss"


def test_the_report_reads_each_runs_rule_random_init_included(tmp_path):
    curves = dict(test_acc=TEST_ACC, val_acc=VAL_ACC, val_loss=VAL_LOSS, select_epoch="acc_loss")
    write_run(tmp_path, make_result(pretrained=True, random_init_select_epoch="final", **curves), name="pretrained")
    write_run(tmp_path, make_result(pretrained=False, random_init_select_epoch="final", **curves), name="random")
    write_run(tmp_path, make_result(pretrained=False, seed=1, **curves), name="random_before")
    runs = add_run_metrics(load_runs([tmp_path]), load_epochs([tmp_path]))
    chosen = dict(zip(runs["path"].map(lambda p: p.split("/")[-2]), runs["best_epoch"]))
    assert chosen == {"pretrained": CHOSEN["acc_loss"], "random": CHOSEN["final"], "random_before": CHOSEN["acc_loss"]}


def test_a_run_that_took_its_last_epoch_on_a_small_val_is_not_flagged(tmp_path):
    from test_select_epoch import with_val_size

    from tlbench.report import selection

    for seed in (0, 1):
        write_run(tmp_path, with_val_size(make_result(pretrained=False, random_init_select_epoch="final",
                                                      val_acc=[0.6, 0.8, 0.7], seed=seed), 25), name=f"random{seed}")
        write_run(tmp_path, with_val_size(make_result(pretrained=True, val_acc=[0.6, 0.8, 0.7], seed=seed), 25),
                  name=f"pretrained{seed}")
    runs = selection.add_selection_columns(add_run_metrics(load_runs([tmp_path]), load_epochs([tmp_path])))
    flagged = dict(zip(runs["path"].map(lambda p: p.split("/")[-2]), runs["small_val"]))
    assert flagged == {"random0": False, "random1": False, "pretrained0": True, "pretrained1": True}
