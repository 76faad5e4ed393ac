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
    # frozen later, from 321b965 composed as a run composes it (its `bitfit` and `quickstart_random_init` reproduced)
    "bitfit_random_init": (["freeze=bitfit", "pretrained=false"], "4c8b27bab705"),
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

# Issue 22's migration (CHANGELOG): fine-tuning runs choose their epoch by select_epoch=acc_loss and
# train at least min_steps=60 optimizer steps; photo sets are cropped, not squashed, and train with
# random-resized-crop; logreg fits raw features with C chosen by cross-validation on small data. Each
# config's run_id now, and the overrides that give back the one frozen above (default: select_epoch=acc
# min_steps=0; probes and the write-up presets, which keep acc and pin min_steps: 0, need none of it). The linear
# probe's head_lr_ratio became auto later (its NOW moved again; 10.0, a float as the YAML had it, gives it back);
# BitFit's lr_ratio became 3 later still (10.0 gives it back); random init trains at 3 x optimizer.lr since the
# eighth pass (random_init_lr_ratio=1.0 gives it back; pretrained runs never see the key), and picks its epoch by
# random_init_select_epoch=final since the ninth (null gives it back); BitFit from random init keeps 1 x lr by its own
# freeze.random_init_lr_ratio since the tenth (at 1, its value, it leaves the id as 1 x lr left it); LoRA's lr_ratio
# became auto in the eleventh (1.0, a float as the YAML had it, gives it back).
NOW = {
    "quickstart_pretrained": "b0e4929bcbbd", "quickstart_random_init": "6ab7df2fd5fe", "default": "9b572e3087ad",
    "freeze_none_digits": "5246cbd689ec", "linear_probe": "821797eabb1b", "freeze_unfreeze": "fc059b0de819",
    "gradual": "a399bbb16cab", "layer_decay": "06ba56dedc53", "bitfit": "2a2c61659188",
    "lora": "0fb49281b14b",  # issue 22, 11th pass: lr_ratio auto (4ca26468e3e9 at 1.0 before)
    "bitfit_random_init": "9a956b66a3b5",  # issue 22, 10th pass: BitFit keeps 1 x lr (9th pass: 3 x lr)
    "logreg_probe": "7fdd7c54fa8b", "knn_probe": "d560203de154", "writeup_preset": "344cd04abf1c",
    "writeup_preset_fixed": "d5c5a8fcd185", "data_efficiency_size": "f7a7f9de7125", "lr_find": "ecb74af23d6f",
    "filelist": "a861d5791783", "kornblith_logreg": "c29fa42b51c2",  # issue 24: the paper's L2 grid
}
FINE_TUNE_BEFORE = ["select_epoch=acc", "min_steps=0"]
OLD_BEHAVIOUR = {
    "linear_probe": [*FINE_TUNE_BEFORE, "freeze.head_lr_ratio=10.0"],  # issue 22, 5th pass: head_lr_ratio=auto
    "bitfit": [*FINE_TUNE_BEFORE, "freeze.lr_ratio=10.0"],  # issue 22, 7th pass: lr_ratio 3
    "lora": [*FINE_TUNE_BEFORE, "freeze.lr_ratio=1.0"],  # issue 22, 11th pass: lr_ratio auto
    "bitfit_random_init": [*FINE_TUNE_BEFORE, "freeze.lr_ratio=10.0", "random_init_select_epoch=null"],
    "quickstart_random_init": [*FINE_TUNE_BEFORE, "random_init_lr_ratio=1.0",  # issue 22, 8th pass: 3 x lr
                               "random_init_select_epoch=null"],  # 9th pass: random init's last epoch
    "filelist": [*FINE_TUNE_BEFORE, "dataset.preprocess=squash", "augment=crop_flip"],
    # issue 24: the paper's L2 grid (freeze.l2_grid: kornblith)
    "kornblith_logreg": ["dataset.preprocess=squash", "freeze.standardize=true", "freeze.cv_folds=0", "freeze.l2_grid=null"],
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
def test_run_ids_move_only_by_migrations(name, user_cfg, lists):
    overrides = [override.format(lists=lists) for override in GOLDEN[name][0]]
    assert run_id_of(user_cfg(*overrides)) == NOW[name], f"{name}: the run_id of {overrides} changed (a migration?)"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_the_run_ids_before_issue_22_are_one_override_away(name, user_cfg, lists):
    overrides, frozen = GOLDEN[name]
    back = OLD_BEHAVIOUR.get(name, FINE_TUNE_BEFORE)
    cfg = user_cfg(*[override.format(lists=lists) for override in [*overrides, *back]])
    assert run_id_of(cfg) == frozen, f"{name}: {back} no longer give back the run_id frozen at 321b965"


def test_an_imagefolder_root_of_split_folders_keeps_its_run_id(user_cfg, tmp_path):
    """Frozen at 01e30a1, before dataset.test_split (issue 23): a root's identity is its layout (paths
    and sizes), so the files are written with fixed bytes. Moved by the min_steps migration (issue 22);
    min_steps=0 gives the frozen one back."""
    for split in ("train", "val"):
        for name in ("ants", "bees"):
            (tmp_path / "photos" / split / name).mkdir(parents=True)
            (tmp_path / "photos" / split / name / "1.jpg").write_bytes(b"not decoded for the run_id")
    root = f"dataset.root={tmp_path / 'photos'}"
    assert run_id_of(user_cfg("dataset=imagefolder", root)) == "3215f0e7e592"
    assert run_id_of(user_cfg("dataset=imagefolder", root, "min_steps=0")) == "72b56e6383ba"
