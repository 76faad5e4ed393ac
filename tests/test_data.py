"""Local data as users bring it: ImageFolder trees and `<path> <label>` lists, with clear errors."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlbench import data
from tlbench.errors import BadImageError, ConfigError, DataNotFoundError
from tlbench.run import run


@pytest.fixture
def food_lists(tmp_path):
    """Write-up D's layout: lists beside an images/ folder, relative paths, integer labels."""
    images = tmp_path / "food" / "images"
    images.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (30, 20), (60 * i, 10, 10)).save(images / f"{i}.jpg")
    (tmp_path / "food" / "train.txt").write_text("images/0.jpg 0\nimages/1.jpg 1\n\n# a comment\nimages/2.jpg 2\n")
    (tmp_path / "food" / "test.txt").write_text("images/3.jpg 1\n")
    return tmp_path / "food"


def test_filelist_resolves_relative_paths_against_the_list_folder(make_cfg, food_lists, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the list's folder: relative paths must not depend on the cwd
    cfg = make_cfg("dataset=filelist", f"dataset.train_list={food_lists / 'train.txt'}",
                   f"dataset.test_list={food_lists / 'test.txt'}", "dataset.val_split=0")
    splits = data.build_dataset(**cfg.dataset)
    assert len(splits.train) == 3 and len(splits.test) == 1 and len(splits.classes) == 3 and splits.val_is_test
    image, label = splits.train[1]
    assert image.size == (30, 20) and label == 1


@pytest.mark.parametrize("line, message", [
    ("images/0.jpg", "cannot parse 'images/0.jpg'; expected `<image path> <integer label>`"),
    ("images/0.jpg cat", "cannot parse"),
    ("images/9.jpg 0", "image 'images/9.jpg' does not exist"),
    ("../outside.jpg 0", "points outside the list's folder"),
])
def test_filelist_errors_name_the_file_and_line(food_lists, line, message):
    (food_lists.parent / "outside.jpg").write_bytes(b"")
    bad = food_lists / "bad.txt"
    bad.write_text(f"images/1.jpg 1\n{line}\n")
    with pytest.raises((ConfigError, DataNotFoundError), match=f"bad.txt:2: .*{message[:30]}"):
        data.filelist(bad, food_lists / "test.txt")


def test_filelist_label_out_of_range(food_lists):
    with pytest.raises(ConfigError, match="label 2 is out of range for dataset.num_classes=2"):
        data.filelist(food_lists / "train.txt", food_lists / "test.txt", num_classes=2)


def test_imagefolder_reads_train_and_test(image_tree):
    splits = data.imagefolder(image_tree)
    assert splits.classes == ["cat", "dog"] and len(splits.train) == 6 and len(splits.test) == 4


def test_imagefolder_errors_are_specific(image_tree, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.imagefolder(tmp_path / "nowhere")
    (image_tree / "train" / "bird").mkdir()
    with pytest.raises(DataNotFoundError, match="class folder .*bird holds no images"):
        data.imagefolder(image_tree)
    Image.new("RGB", (8, 8)).save(image_tree / "train" / "bird" / "0.png")
    with pytest.raises(DataNotFoundError, match=r"different classes: only in train: \['bird'\]"):
        data.imagefolder(image_tree)


def test_fraction_keeps_every_class_and_is_independent_of_the_run_seed():
    splits = data.build_dataset("synthetic", num_classes=4, train_size=400, test_size=40, train_fraction=0.25,
                                val_split=0)
    labels = data.targets_of(splits.train)
    assert len(labels) == 100 and sorted(set(labels)) == [0, 1, 2, 3]
    again = data.build_dataset("synthetic", num_classes=4, train_size=400, test_size=40, train_fraction=0.25,
                               val_split=0)
    assert torch.equal(splits.train.images, again.train.images)


def test_unknown_dataset_option_lists_what_it_takes():
    with pytest.raises(ConfigError, match="does not take colour"):
        data.build_dataset("synthetic", colour=1)


@pytest.fixture
def tree_with_bad_images(image_tree):
    """The image tree plus a truncated JPEG (train/cat) and a text file named .jpg (test/dog)."""
    import io

    encoded = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(encoded, format="JPEG")
    (image_tree / "train" / "cat" / "truncated.jpg").write_bytes(encoded.getvalue()[:300])
    (image_tree / "test" / "dog" / "notes.jpg").write_text("not an image\n")
    return image_tree


def bad_tree_run(make_cfg, root, output_dir, *overrides):
    cfg = make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=32", "pretrained=false",
                   "epochs=1", "batch_size=4", "augment=none", "dataset.val_split=0", *overrides)
    return run(cfg, output_dir=output_dir)


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_an_undecodable_image_fails_the_run_before_training_naming_the_file(make_cfg, tree_with_bad_images, tmp_path,
                                                                           pipeline):
    with pytest.raises(BadImageError, match=r"truncated\.jpg.*dataset\.on_bad_image=skip"):
        bad_tree_run(make_cfg, tree_with_bad_images, tmp_path / "run", f"data.pipeline={pipeline}")
    failed = json.loads((tmp_path / "run" / "result.json").read_text())
    assert failed["status"] == "failed" and failed["epochs"] == [] and "truncated.jpg" in failed["error"]["message"]


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_on_bad_image_skip_leaves_the_files_out_and_counts_them(make_cfg, tree_with_bad_images, tmp_path, pipeline):
    result = bad_tree_run(make_cfg, tree_with_bad_images, tmp_path / "run", f"data.pipeline={pipeline}",
                          "dataset.on_bad_image=skip")
    assert result["status"] == "ok"
    skipped = result["data_info"]["skipped_images"]
    assert (skipped["train"], skipped["val"]) == (1, 1)
    assert sorted(Path(p).name for p in skipped["examples"]) == ["notes.jpg", "truncated.jpg"]
    assert (result["data_info"]["train_size"], result["data_info"]["val_size"]) == (6, 4)


def test_a_cache_built_while_skipping_still_fails_a_run_that_does_not_skip(make_cfg, tree_with_bad_images, tmp_path):
    bad_tree_run(make_cfg, tree_with_bad_images, tmp_path / "skip", "dataset.on_bad_image=skip")
    with pytest.raises(BadImageError, match="truncated.jpg"):
        bad_tree_run(make_cfg, tree_with_bad_images, tmp_path / "fail")


def test_on_bad_image_takes_fail_or_skip_only(make_cfg, image_tree, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.on_bad_image='ignore'.*use fail .* or skip"):
        bad_tree_run(make_cfg, image_tree, tmp_path / "run", "dataset.on_bad_image=ignore")


def test_a_download_that_fails_fastais_published_check_is_kept_aside_and_not_extracted(tmp_path, monkeypatch):
    """An archive already in data_dir (an interrupted or tampered download) is checked like a fresh one."""
    monkeypatch.setenv("TLBENCH_OFFLINE", "0")
    archive = tmp_path / "imagewoof2-160.tgz"
    archive.write_bytes(b"\x1f\x8b" + b"not the real archive" * 100)
    with pytest.raises(DataNotFoundError, match=r"is not fast.ai's imagewoof archive: size 2002 .* expected 92612825 "
                                                r"and 3559b194123981a540b87132dbda412f .* kept as .*\.rejected"):
        data.imagewoof(tmp_path, download=True)
    assert not archive.exists() and (tmp_path / "imagewoof2-160.tgz.rejected").is_file()
    assert not (tmp_path / "imagewoof2-160").exists(), "a rejected archive was extracted"
