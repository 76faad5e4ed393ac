"""`python -m tlbench.report --tune KEY[,KEY]`: per cell (every other setting and the init the
same), the value with the best mean val accuracy is kept and the others leave the report; the
choice never looks at test; both inits pair up even when they chose different values."""

from __future__ import annotations

import pandas as pd
import pytest

from report_fixtures import make_result, write_run
from tlbench.report import tuning
from tlbench.report.__main__ import main
from tlbench.report.build import analyse

# Per (init, lr): (val_acc per epoch, test_acc per epoch). Pretrained: lr 0.001 wins on val, lr 0.01
# on test (a choice made on test would take 0.01). Random init: lr 0.01 wins on val.
CURVES = {
    (True, 0.001): ([0.70, 0.80], [0.60, 0.62]),
    (True, 0.01): ([0.60, 0.75], [0.70, 0.90]),
    (False, 0.001): ([0.30, 0.40], [0.30, 0.41]),
    (False, 0.01): ([0.40, 0.55], [0.45, 0.50]),
}


def write_lr_sweep(folder, seeds=(0, 1)):
    for (pretrained, lr), (val, test) in CURVES.items():
        for seed in seeds:
            shift = 0.01 * seed  # seeds differ a little; the ranking of the values does not
            write_run(folder, make_result(pretrained=pretrained, lr=lr, seed=seed, freeze="none",
                                          val_acc=[v + shift for v in val], test_acc=[t + shift for t in test]))


def test_tuning_keeps_each_inits_val_best_lr_and_pairs_the_two_inits(tmp_path):
    write_lr_sweep(tmp_path)
    untuned = analyse([tmp_path])
    assert len(untuned[3]) == 4 and len(untuned[4]) == 2  # 4 groups, 2 pretrained-vs-random pairs (one per lr)

    runs, _, _, summary, deltas, choices = analyse([tmp_path], tune=["optimizer.lr"])
    assert len(runs) == 4 and len(summary) == 2  # one group per init, its two seeds
    chosen = dict(zip(choices["init"], choices["optimizer.lr"]))
    assert chosen == {"pretrained": 0.001, "random": 0.01}  # pretrained by val, though 0.01 tests higher
    assert choices["tried"].tolist() == [2, 2] and choices["n"].tolist() == [2, 2]
    by_init = summary.set_index("init")["test_acc_at_best_val_mean"]
    assert by_init["pretrained"] == pytest.approx(0.625) and by_init["random"] == pytest.approx(0.505)
    assert len(deltas) == 1  # the two inits pair up across their different lrs
    assert deltas["delta_test_acc_at_best_val"].item() == pytest.approx(0.12)
    assert "optimizer.lr" not in " ".join(summary.columns) and "tuned.optimizer.lr" in runs.columns


def test_a_val_tie_goes_to_the_lower_val_loss(tmp_path):
    for lr, val_loss in ((0.001, [1.0, 0.9]), (0.01, [1.0, 0.5])):
        write_run(tmp_path, make_result(lr=lr, val_acc=[0.5, 0.7], test_acc=[0.5, 0.6], val_loss=val_loss))
    choices = analyse([tmp_path], tune=["optimizer.lr"])[5]
    assert choices["optimizer.lr"].tolist() == [0.01]


def test_the_report_says_what_it_tuned_and_writes_the_choices(tmp_path):
    write_lr_sweep(tmp_path)
    assert main([str(tmp_path), "--tune", "optimizer.lr"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## Tuned on val" in text and "The test split plays no part in the choice" in text
    assert "0.001: 80.5; 0.01: 75.5" in text  # pretrained's mean val accuracy per value tried
    saved = pd.read_csv(tmp_path / "tuning_choices.csv")
    assert sorted(saved["optimizer.lr"]) == [0.001, 0.01]


def test_tuning_a_setting_no_run_has_names_it_and_the_settings_that_vary(tmp_path, capsys):
    write_lr_sweep(tmp_path, seeds=(0,))
    with pytest.raises(ValueError, match=r"--tune optimizer.momentum: no run has that setting; settings that vary "
                                         r"among these runs: .*optimizer.lr"):
        analyse([tmp_path], tune=["optimizer.momentum"])
    assert main([str(tmp_path), "--tune", "optimizer.momentum"]) == 2
    assert "optimizer.momentum" in capsys.readouterr().err


def test_keys_are_read_as_the_config_spells_them():
    assert tuning.parse_keys(" optimizer.lr, identity.freeze.lr_ratio ,") == ["optimizer.lr", "freeze.lr_ratio"]
    assert tuning.parse_keys(None) == []


def test_values_are_listed_in_numeric_order_and_cells_without_the_setting_are_not_listed(tmp_path):
    for ratio, val in ((1, 0.50), (3, 0.60), (10, 0.55)):
        result = make_result(freeze="bitfit", val_acc=[0.4, val], test_acc=[0.4, 0.5])
        result["config"]["freeze"]["lr_ratio"] = ratio
        write_run(tmp_path, {**result, "run_id": f"bitfit-{ratio}"})
    write_run(tmp_path, make_result(freeze="none", val_acc=[0.4, 0.7], test_acc=[0.4, 0.6]))  # has no lr_ratio
    runs, *_, choices = analyse([tmp_path], tune=["freeze.lr_ratio"])
    assert choices["val_acc_by_value"].tolist() == ["1: 50.0; 3: 60.0; 10: 55.0"]  # bitfit's cell only
    assert choices["freeze.lr_ratio"].tolist() == [3] and len(runs) == 2  # bitfit at 3, and the freeze=none run


def test_a_cell_that_validated_on_the_test_split_says_its_choice_saw_test(tmp_path):
    for lr in (0.001, 0.01):
        write_run(tmp_path, make_result(lr=lr, val_is_test=True, test_acc=[0.5, 0.6 + lr]))
    choices = analyse([tmp_path], tune=["optimizer.lr"])[5]
    assert choices["val_is_test"].tolist() == [True]
    assert "optimistic" in tuning.choices_text(choices, ["optimizer.lr"])["chosen on"].item()
