"""`dataset=imagefolder dataset.root=photos/`: a folder of class folders gets a stratified, seeded
test split (dataset.test_split) and the val split from the rest; split folders say which became
test; any other layout fails before training, showing the layouts tlbench reads."""

import json
import logging

import pytest
from PIL import Image

from conftest import TINY
from tlbench import data
from tlbench.errors import ConfigError, DataNotFoundError
from tlbench.runner.run import run, run_id_of


def photos(root, classes=("ants", "bees", "wasps"), count=10):
    """root/<class>/<i>.png: `count` small real PNGs per class."""
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (24, 20), (80 * index, 20 * i, 90)).save(folder / f"{i}.png")
    return root


def files(dataset) -> list:
    """The image files of a split (a Subset of a Subset ... of an ImageFolder)."""
    if hasattr(dataset, "samples"):
        return [path for path, _ in dataset.samples]
    parent = files(dataset.dataset)
    return [parent[i] for i in dataset.indices]


def test_a_folder_of_class_folders_trains_with_a_held_out_test_split(make_cfg, tmp_path):
    root = photos(tmp_path / "photos")
    result = run(make_cfg(*TINY, "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=16",
                          "pretrained=false", "epochs=1"), output_dir=tmp_path / "run")
    info = json.loads((tmp_path / "run" / "result.json").read_text())["data_info"]
    assert result["status"] == "ok" and info["classes"] == ["ants", "bees", "wasps"]
    assert (info["train_size"], info["val_size"], info["test_size"]) == (21, 3, 6)  # 30: 0.2 test, 0.1 of the rest val
    assert info["test_source"] == "0.2 of the class folders, stratified, split_seed=0 (dataset.test_split)"
    assert info["source"] == f"ImageFolder {root} (class folders)"


def test_the_test_split_is_stratified_fixed_by_split_seed_and_apart_from_train_and_val(tmp_path):
    root = photos(tmp_path / "photos")
    splits = data.build_dataset("imagefolder", root=root, image_size=16, test_split=0.3, split_seed=0)
    train, val, test = (set(files(s)) for s in (splits.train, splits.val, splits.test))
    assert len(test) == 9 and not test & train and not test & val and not val & train
    assert sorted(data.targets_of(splits.test)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert set(files(data.build_dataset("imagefolder", root=root, test_split=0.3, split_seed=0).test)) == test
    assert set(files(data.build_dataset("imagefolder", root=root, test_split=0.3, split_seed=1).test)) != test


@pytest.mark.parametrize("split_folder, source", [("val", "the val/ folder (there is no test/ folder)"),
                                                  ("test", "the test/ folder")])
def test_split_folders_say_which_became_test(tmp_path, caplog, split_folder, source):
    photos(tmp_path / "photos" / "train", count=3)
    photos(tmp_path / "photos" / split_folder, count=2)
    with caplog.at_level(logging.INFO, logger="tlbench"):
        splits = data.build_dataset("imagefolder", root=tmp_path / "photos", val_split=0)
    assert splits.test_source == source and len(splits.test) == 6
    assert f"the test split is {source}" in caplog.text


def test_train_val_and_test_folders_keep_testing_on_val_and_warn(tmp_path, caplog):
    """Before issue 23 val/ was read first; a run on such a root keeps its results, and the log says so."""
    for split in ("train", "val", "test"):
        photos(tmp_path / "photos" / split, count=2)
    splits = data.build_dataset("imagefolder", root=tmp_path / "photos", val_split=0)
    assert files(splits.test)[0].startswith(str(tmp_path / "photos" / "val"))
    assert splits.test_source == "the val/ folder (test/ is not read)"
    assert "to test on test/, move val/ out of the root" in caplog.text


def mixed(root):
    photos(root / "train", count=2)
    photos(root, classes=("moths",), count=2)


def train_without_classes(root):
    (root / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "train" / "0.png")


def val_without_train(root):
    photos(root / "val", count=2)


def nothing(root):
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "0.png")


@pytest.mark.parametrize("make, problem", [
    (mixed, r"mixes split folders \(train\) with other folders \(moths\)"),
    (train_without_classes, "train has no class folders"),
    (val_without_train, "has val/ but no train/"),
    (nothing, "holds no folders"),
], ids=lambda value: getattr(value, "__name__", ""))
def test_an_ambiguous_layout_fails_before_training_showing_the_layouts(make_cfg, tmp_path, make, problem):
    from tlbench.runner import build

    make(tmp_path / "photos")
    cfg = make_cfg(*TINY, "dataset=imagefolder", f"dataset.root={tmp_path / 'photos'}", "pretrained=false")
    with pytest.raises(DataNotFoundError, match=problem) as failure:
        build.prepare(cfg)
    assert "photos/<class>/*.jpg" in str(failure.value) and "photos/train/<class>/*.jpg" in str(failure.value)


def test_a_test_split_that_is_not_a_fraction_or_leaves_a_class_out_is_refused(tmp_path):
    root = photos(tmp_path / "photos", count=2)
    with pytest.raises(ConfigError, match=r"dataset.test_split=1 must be a fraction in \(0, 1\)"):
        data.build_dataset("imagefolder", root=root, test_split=1)
    with pytest.raises(ConfigError, match="dataset.test_split=0.9 cannot hold out a stratified split from 6 images"):
        data.build_dataset("imagefolder", root=root, test_split=0.9)


def test_the_test_split_enters_the_run_id_only_when_changed(make_cfg, tmp_path):
    root = photos(tmp_path / "photos", count=2)
    common = ["dataset=imagefolder", f"dataset.root={root}"]
    assert run_id_of(make_cfg(*common)) == run_id_of(make_cfg(*common, "dataset.test_split=0.2"))
    assert run_id_of(make_cfg(*common)) != run_id_of(make_cfg(*common, "dataset.test_split=0.3"))
