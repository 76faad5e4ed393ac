"""Local data as users bring it: ImageFolder trees and `<path> <label>` lists, with clear errors."""

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from tlbench import data
from tlbench.errors import BadImageError, ConfigError, DataNotFoundError
from tlbench.runner.run import run


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


def filelist_splits(make_cfg, train_list, test_list):
    cfg = make_cfg("dataset=filelist", f"dataset.train_list={train_list}", f"dataset.test_list={test_list}",
                   "dataset.val_split=0")
    return data.build_dataset(**cfg.dataset)


def test_filelist_resolves_relative_paths_against_the_list_folder(make_cfg, food_lists, monkeypatch, tmp_path,
                                                                  caplog):
    monkeypatch.chdir(tmp_path)  # not the list's folder: relative paths must not depend on the cwd
    splits = filelist_splits(make_cfg, food_lists / "train.txt", food_lists / "test.txt")
    assert len(splits.train) == 3 and len(splits.test) == 1 and len(splits.classes) == 3 and splits.val_is_test
    image, label = splits.train[1]
    assert image.size == (30, 20) and label == 1
    assert splits.source.endswith("test.txt (paths relative to the lists' folder)")
    assert "working directory" not in caplog.text


def test_filelist_kept_apart_from_its_images_reaches_them_with_dotdot(make_cfg, food_lists, monkeypatch, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("../food/images/0.jpg 0\n../food/images/1.jpg 1\n")
    (lists / "test.txt").write_text("../food/images/3.jpg 1\n")
    monkeypatch.chdir(food_lists / "images")
    splits = filelist_splits(make_cfg, lists / "train.txt", lists / "test.txt")
    assert [label for _, label in splits.train] == [0, 1]
    assert splits.source.endswith("(paths relative to the lists' folder)")


def test_filelist_takes_absolute_paths_as_written(make_cfg, food_lists, tmp_path):
    images = food_lists / "images"
    (tmp_path / "train.txt").write_text(f"{images / '0.jpg'} 0\n{images / '1.jpg'} 1\n")
    (tmp_path / "test.txt").write_text(f"{images / '3.jpg'} 1\n")
    splits = filelist_splits(make_cfg, tmp_path / "train.txt", tmp_path / "test.txt")
    assert splits.train.samples[0][0] == images / "0.jpg" and splits.train[0][0].size == (30, 20)
    assert splits.source.endswith("(absolute paths)")


@pytest.fixture
def write_up_d(tmp_path, monkeypatch):
    """Write-up D as run: `./food/apple/1.jpg 0` lines, opened from the folder holding food/, while
    the lists given to tlbench live elsewhere (here lists/)."""
    work = tmp_path / "work"
    for name, shade in (("apple", 0), ("pear", 200)):
        (work / "food" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (24, 24), (shade, 40 * i, 90)).save(work / "food" / name / f"{i}.jpg")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("./food/apple/0.jpg 0\n./food/pear/0.jpg 1\n./food/pear/1.jpg 1\n")
    (lists / "test.txt").write_text("./food/apple/1.jpg 0\n")
    monkeypatch.chdir(work)
    return lists


def test_write_up_d_lists_resolve_against_the_working_directory_and_warn(make_cfg, write_up_d, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tlbench"):
        splits = filelist_splits(make_cfg, write_up_d / "train.txt", write_up_d / "test.txt")
    assert len(splits.train) == 3 and splits.train[2][1] == 1
    work = tmp_path / "work"
    assert splits.source.endswith(f"(paths relative to the working directory {work})")
    warnings = [r.getMessage() for r in caplog.records if r.name == "tlbench" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert (f"4 image paths in {write_up_d / 'train.txt'}, {write_up_d / 'test.txt'} were found relative to the "
            f"working directory {work}") in warnings[0]
    assert "depends on the directory it is started from" in warnings[0]
    assert "relative to the list file's folder" in warnings[0] and "absolute paths" in warnings[0]


def test_filelist_source_counts_each_base_when_lists_mix_them(make_cfg, write_up_d, tmp_path):
    (write_up_d / "extra.jpg").write_bytes((tmp_path / "work" / "food" / "pear" / "1.jpg").read_bytes())
    (write_up_d / "test.txt").write_text(f"extra.jpg 1\n{tmp_path / 'work' / 'food' / 'apple' / '1.jpg'} 0\n")
    splits = filelist_splits(make_cfg, write_up_d / "train.txt", write_up_d / "test.txt")
    assert splits.source.endswith(f"(1 relative to the lists' folder, 3 to the working directory "
                                  f"{tmp_path / 'work'}, 1 absolute)")


def test_filelist_follows_symlinks_as_the_os_does(make_cfg, food_lists, tmp_path, monkeypatch):
    """`lists` is a link into another folder: `../images` is the link target's sibling, as for `ls`,
    and the recorded path keeps the link rather than replacing it with its target."""
    real = tmp_path / "store" / "lists"
    real.mkdir(parents=True)
    (tmp_path / "store" / "images").symlink_to(food_lists / "images")
    (real / "train.txt").write_text("../images/0.jpg 0\n../images/1.jpg 1\n")
    (real / "test.txt").write_text("../images/3.jpg 1\n")
    (tmp_path / "lists").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    splits = filelist_splits(make_cfg, "lists/train.txt", "lists/test.txt")
    assert splits.train.samples[1][0] == tmp_path / "lists" / ".." / "images" / "1.jpg"
    assert splits.train[1][0].size == (30, 20)


def test_a_missing_image_fails_at_startup_naming_the_line_and_both_folders(make_cfg, food_lists, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    (food_lists / "bad.txt").write_text("images/1.jpg 1\nimages/9.jpg 0\n")
    cfg = make_cfg("dataset=filelist", f"dataset.train_list={food_lists / 'bad.txt'}",
                   f"dataset.test_list={food_lists / 'test.txt'}", "pretrained=false", "epochs=1")
    message = f"{food_lists / 'bad.txt'}:2: images/9.jpg not found (looked in {food_lists} and {tmp_path})"
    with pytest.raises(DataNotFoundError, match=re.escape(message)):
        run(cfg, output_dir=tmp_path / "run")


@pytest.mark.parametrize("line, message", [
    ("images/0.jpg", "cannot parse 'images/0.jpg'; expected `<image path> <integer label>`"),
    ("images/0.jpg cat", "cannot parse"),
    ("images/0.jpg -1", "label -1 is negative"),
    ("images/9.jpg 0", "images/9.jpg not found (looked in"),
    ("/no/such/9.jpg 0", "/no/such/9.jpg not found"),
])
def test_filelist_errors_name_the_file_and_line(food_lists, line, message):
    bad = food_lists / "bad.txt"
    bad.write_text(f"images/1.jpg 1\n{line}\n")
    with pytest.raises((ConfigError, DataNotFoundError), match=f"bad.txt:2: {re.escape(message)}"):
        data.local.filelist(bad, food_lists / "test.txt")


def test_filelist_label_out_of_range(food_lists):
    with pytest.raises(ConfigError, match="label 2 is out of range for dataset.num_classes=2"):
        data.local.filelist(food_lists / "train.txt", food_lists / "test.txt", num_classes=2)


def test_imagefolder_reads_train_and_test(image_tree):
    splits = data.local.imagefolder(image_tree)
    assert splits.classes == ["cat", "dog"] and len(splits.train) == 6 and len(splits.test) == 4


def test_imagefolder_errors_are_specific(image_tree, tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        data.local.imagefolder(tmp_path / "nowhere")
    (image_tree / "train" / "bird").mkdir()
    with pytest.raises(DataNotFoundError, match="class folder .*bird holds no images"):
        data.local.imagefolder(image_tree)
    Image.new("RGB", (8, 8)).save(image_tree / "train" / "bird" / "0.png")
    with pytest.raises(DataNotFoundError, match=r"different classes: only in train: \['bird'\]"):
        data.local.imagefolder(image_tree)


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
        data.fastai.imagewoof(tmp_path, download=True)
    assert not archive.exists() and (tmp_path / "imagewoof2-160.tgz.rejected").is_file()
    assert not (tmp_path / "imagewoof2-160").exists(), "a rejected archive was extracted"
