"""The run_ids already on users' disks (issue 21 item 6). Each config below is composed exactly as
the command line composes it and its run_id is computed the way a run computes it; the expected
values were frozen from main at 321b965, before the package was regrouped (three moved on purpose in
issue 22's migration: OLD_BEHAVIOUR gives their old values back). A change that moves any
of them changes the identity of existing runs (resume would archive finished ones): that is a
migration, said in CHANGELOG, and this file is edited with it, never as a side effect.

Adding a setting whose default keeps the old behaviour must leave every value here as it is."""

import pytest

from tlbench.runner.run import run_id_of

# A file list's identity is its content (sha256 of the list file), so the lists are written with
# fixed bytes; the image files themselves are not read for the run_id.
TRAIN_LIST = "a.png 0\nb.png 1\n"
TEST_LIST = "c.png 0\nd.png 1\n"

GOLDEN = {
    "quickstart_pretrained": (["experiment=quickstart"], "c7d538cb8d29"),
    "quickstart_random_init": (["experiment=quickstart", "pretrained=false"], "f46a16e247a4"),
    "default": ([], "321e21f2e977"),
    "freeze_none_digits": (["dataset=digits", "model=tf_efficientnet_lite0", "epochs=3"], "ed3b72365ead"),
    "linear_probe": (["freeze=linear_probe"], "5248963c311f"),
    "freeze_unfreeze": (["freeze=freeze_unfreeze"], "3b4837655a91"),
    "gradual": (["freeze=gradual"], "686f46991baa"),
    "layer_decay": (["freeze=layer_decay"], "5aef77231480"),
    "bitfit": (["freeze=bitfit"], "6ad15a919cce"),
    "lora": (["freeze=lora", "model=deit_tiny"], "c84bed991d2e"),
    "logreg_probe": (["freeze=logreg", "dataset=digits"], "7fdd7c54fa8b"),  # issue 22: was 7053afad4aa2
    "knn_probe": (["freeze=knn", "dataset=digits"], "d560203de154"),
    "writeup_preset": (["experiment=seed_resnet18_cifar10"], "344cd04abf1c"),
    "writeup_preset_fixed": (["experiment=seed_efficientnet_b0_cifar10_fixed"], "d5c5a8fcd185"),
    "data_efficiency_size": (["dataset=digits", "dataset.train_per_class=10"], "be5a2de41a44"),
    "lr_find": (["optimizer.lr=find", "optimizer=sgd", "schedule=onecycle"], "ff50ec6626ca"),
    "filelist": (["dataset=filelist", "dataset.train_list={lists}/train.txt", "dataset.test_list={lists}/test.txt",
                  "model=resnet50"], "71d6d6f9873d"),  # issue 22: was e37c631da68b
    "kornblith_logreg": (["experiment=kornblith_logreg", "dataset=dtd"], "12b680e72ded"),  # issue 22: was 0404b554a1ca
}

# Issue 22's migration (CHANGELOG): photo sets are cropped, not squashed, and train with
# random-resized-crop; logreg fits raw features with C chosen by cross-validation on small data.
# The run_ids frozen at 321b965 for those configs are one override away.
OLD_BEHAVIOUR = {
    "filelist": (["dataset.preprocess=squash", "augment=crop_flip"], "e37c631da68b"),
    "kornblith_logreg": (["dataset.preprocess=squash", "freeze.standardize=true", "freeze.cv_folds=0"],
                         "0404b554a1ca"),
    "logreg_probe": (["freeze.standardize=true", "freeze.cv_folds=0"], "7053afad4aa2"),
}


@pytest.fixture
def lists(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "train.txt").write_text(TRAIN_LIST)
    (folder / "test.txt").write_text(TEST_LIST)
    return folder


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_existing_run_ids_do_not_move(name, make_cfg, lists):
    overrides, expected = GOLDEN[name]
    cfg = make_cfg(*[override.format(lists=lists) for override in overrides])
    assert run_id_of(cfg) == expected, f"{name}: the run_id of {overrides} changed (a migration?)"


@pytest.mark.parametrize("name", sorted(OLD_BEHAVIOUR))
def test_migrated_run_ids_are_one_override_away(name, make_cfg, lists):
    overrides, old_overrides, expected = *GOLDEN[name][:1], *OLD_BEHAVIOUR[name]
    cfg = make_cfg(*[override.format(lists=lists) for override in [*overrides, *old_overrides]])
    assert run_id_of(cfg) == expected, f"{name}: {old_overrides} no longer reproduce the run_id before issue 22"
