"""The run_ids already on users' disks (issue 21 item 6). Each config below is composed exactly as
the command line composes it and its run_id is computed the way a run computes it; the expected
values were frozen from main at 321b965, before the package was regrouped. Issue 22's migration
moved most of them on purpose (NOW holds today's; OLD_BEHAVIOUR's overrides give the frozen ones
back). A change that moves any of them changes the identity of existing runs (resume would archive finished ones): that is a
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
    "logreg_probe": (["freeze=logreg", "dataset=digits"], "7053afad4aa2"),
    "knn_probe": (["freeze=knn", "dataset=digits"], "d560203de154"),
    "writeup_preset": (["experiment=seed_resnet18_cifar10"], "344cd04abf1c"),
    "writeup_preset_fixed": (["experiment=seed_efficientnet_b0_cifar10_fixed"], "d5c5a8fcd185"),
    "data_efficiency_size": (["dataset=digits", "dataset.train_per_class=10"], "be5a2de41a44"),
    "lr_find": (["optimizer.lr=find", "optimizer=sgd", "schedule=onecycle"], "ff50ec6626ca"),
    "filelist": (["dataset=filelist", "dataset.train_list={lists}/train.txt", "dataset.test_list={lists}/test.txt",
                  "model=resnet50"], "e37c631da68b"),
    "kornblith_logreg": (["experiment=kornblith_logreg", "dataset=dtd"], "0404b554a1ca"),
}

# Issue 22's migration (CHANGELOG): fine-tuning runs choose their epoch by select_epoch=acc_loss;
# photo sets are cropped, not squashed, and train with random-resized-crop; logreg fits raw features
# with C chosen by cross-validation on small data. Each config's run_id now, and the overrides that
# give back the one frozen above (default: select_epoch=acc; probes and the write-up presets, which
# keep acc, need none of it).
NOW = {
    "quickstart_pretrained": "5fd3f51621b7", "quickstart_random_init": "73d741fffdaf", "default": "6183fce1c7a7",
    "freeze_none_digits": "2c54c96f435a", "linear_probe": "7279c30d2045", "freeze_unfreeze": "ba51a8e72961",
    "gradual": "cb8ae0557c24", "layer_decay": "53595f01dd6c", "bitfit": "c6125cc17a20", "lora": "4f00511199c9",
    "logreg_probe": "7fdd7c54fa8b", "knn_probe": "d560203de154", "writeup_preset": "344cd04abf1c",
    "writeup_preset_fixed": "d5c5a8fcd185", "data_efficiency_size": "463d364f48e0", "lr_find": "b621d98fa8a1",
    "filelist": "afd35d4d0af0", "kornblith_logreg": "12b680e72ded",
}
OLD_BEHAVIOUR = {
    "filelist": ["select_epoch=acc", "dataset.preprocess=squash", "augment=crop_flip"],
    "kornblith_logreg": ["dataset.preprocess=squash", "freeze.standardize=true", "freeze.cv_folds=0"],
    "logreg_probe": ["freeze.standardize=true", "freeze.cv_folds=0"],
    "knn_probe": [], "writeup_preset": [], "writeup_preset_fixed": [],
}


@pytest.fixture
def lists(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    (folder / "train.txt").write_text(TRAIN_LIST)
    (folder / "test.txt").write_text(TEST_LIST)
    return folder


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_run_ids_move_only_by_migrations(name, make_cfg, lists):
    overrides = [override.format(lists=lists) for override in GOLDEN[name][0]]
    assert run_id_of(make_cfg(*overrides)) == NOW[name], f"{name}: the run_id of {overrides} changed (a migration?)"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_run_ids_before_issue_22_are_one_override_away(name, make_cfg, lists):
    overrides, frozen = GOLDEN[name]
    back = OLD_BEHAVIOUR.get(name, ["select_epoch=acc"])
    cfg = make_cfg(*[override.format(lists=lists) for override in [*overrides, *back]])
    assert run_id_of(cfg) == frozen, f"{name}: {back} no longer give back the run_id frozen at 321b965"


def test_an_imagefolder_root_of_split_folders_keeps_its_run_id(make_cfg, tmp_path):
    """Frozen at 01e30a1, before dataset.test_split (issue 23): a root's identity is its layout (paths
    and sizes), so the files are written with fixed bytes."""
    for split in ("train", "val"):
        for name in ("ants", "bees"):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            (tmp_path / "photos" / split / name / "1.jpg").write_bytes(b"not decoded for the run_id")
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={tmp_path / 'photos'}")
    assert run_id_of(cfg) == "72b56e6383ba"
