"""The transfer data sets (tlbench/data/transfer.py) on tiny fake copies of their on-disk layouts,
written as torchvision's own test suite writes them: a few small JPEGs and the annotation and
split files under their real names and formats."""

import json
import os
import re

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tlbench import data
from tlbench.errors import ConfigError, DataNotFoundError
from tlbench.runner.run import run


def jpeg(path, shade=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade % 256, 80, 160)).save(path)


def food101(base):
    folder = base / "food-101"
    (folder / "meta").mkdir(parents=True)
    for split, count in (("train", 4), ("test", 2)):
        listed = {name: [f"{name}/{split}{i}" for i in range(count)] for name in ("waffles", "apple_pie")}
        (folder / "meta" / f"{split}.json").write_text(json.dumps(listed))
        for names in listed.values():
            for name in names:
                jpeg(folder / "images" / f"{name}.jpg")


def fgvc_aircraft(base):
    folder = base / "fgvc-aircraft-2013b" / "data"
    folder.mkdir(parents=True)
    variants = ["707-320", "Cessna 172", "A300B4"]
    (folder / "variants.txt").write_text("\n".join(variants) + "\n")
    image = 1000
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        lines = []
        for variant in variants:
            for _ in range(count):
                image += 1
                jpeg(folder / "images" / f"{image:07d}.jpg", image)
                lines.append(f"{image:07d} {variant}")
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")


def stanford_cars(base):
    folder = base / "stanford_cars"
    (folder / "devkit").mkdir(parents=True)
    classes = np.array(["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], dtype=object)
    scipy.io.savemat(folder / "devkit" / "cars_meta.mat", {"class_names": classes})
    for split, annotations, count in (("cars_train", folder / "devkit" / "cars_train_annos.mat", 3),
                                      ("cars_test", folder / "cars_test_annos_withlabels.mat", 2)):
        records = [(f"{i:05d}.jpg", 1 + i % 2) for i in range(2 * count)]
        for name, _ in records:
            jpeg(folder / split / name)
        scipy.io.savemat(annotations, {"annotations": np.array(records, dtype=[("fname", "O"), ("class", "O")])})


def dtd(base):
    folder = base / "dtd" / "dtd"
    (folder / "labels").mkdir(parents=True)
    for partition in (1, 2):
        for split in ("train", "val", "test"):
            lines = [f"{texture}/{texture}_{partition}{split}{i}.jpg" for texture in ("banded", "zigzagged")
                     for i in range(2 if split == "train" else 1)]
            (folder / "labels" / f"{split}{partition}.txt").write_text("\n".join(lines) + "\n")
            for line in lines:
                jpeg(folder / "images" / line)


def oxford_pets(base):
    folder = base / "oxford-iiit-pet"
    (folder / "annotations").mkdir(parents=True)
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]
    for split, count in (("trainval", 3), ("test", 2)):
        lines = [f"{breed}_{split}{i} {label} {species} 1" for breed, label, species in breeds for i in range(count)]
        (folder / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            jpeg(folder / "images" / f"{line.split()[0]}.jpg")


def caltech101(base):
    folder = base / "caltech101" / "101_ObjectCategories"
    for name, count in (("BACKGROUND_Google", 3), ("accordion", 32), ("airplanes", 33)):
        for i in range(1, count + 1):
            jpeg(folder / name / f"image_{i:04d}.jpg", i)


def flowers102(base):
    folder = base / "flowers-102"
    labels = [1, 2, 3] * 5  # images 1..15, three classes
    for image in range(1, len(labels) + 1):
        jpeg(folder / "jpg" / f"image_{image:05d}.jpg", image)
    scipy.io.savemat(folder / "imagelabels.mat", {"labels": np.array([labels])})
    scipy.io.savemat(folder / "setid.mat", {"trnid": np.array([[1, 2, 3, 4, 5, 6]]), "valid": np.array([[7, 8, 9]]),
                                            "tstid": np.array([[10, 11, 12, 13, 14, 15]])})


def sun397(base, partition_files=True):
    folder = base / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/beach"]
    folder.mkdir(parents=True)
    (folder / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for name in classes:
        for i in range(5):  # the fifth image of each class is in no partition file
            jpeg(folder / name.lstrip("/") / f"sun_{i}.jpg", i)
    if partition_files:
        for prefix, images in (("Training", (0, 1)), ("Testing", (2, 3))):
            lines = [f"{name}/sun_{i}.jpg" for name in classes for i in images]
            (folder / f"{prefix}_01.txt").write_text("\n".join(lines) + "\n")


def eurosat(base):
    for name in ("AnnualCrop", "Forest", "River"):
        for i in range(5):
            jpeg(base / "eurosat" / "2750" / name / f"{name}_{i + 1}.jpg", i)


def clevr(base, depths=(7.0, 8.2, 9.9, 12.0)):
    """Scenes of 3 and 4 objects (VTAB's count classes 0 and 1), each object's depth from `depths`."""
    folder = base / "clevr" / "CLEVR_v1.0"
    for split, count in (("train", 10), ("val", 4)):
        scenes = []
        for i in range(count):
            name = f"CLEVR_{split}_{i:06d}.png"
            jpeg(folder / "images" / split / name, i)
            objects = [{"pixel_coords": [10, 20, depths[(i + k) % len(depths)] + k]} for k in range(3 + i % 2)]
            scenes.append({"image_filename": name, "objects": objects})
        (folder / "scenes").mkdir(parents=True, exist_ok=True)
        (folder / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"scenes": scenes}))
    (folder / "images" / "test").mkdir(parents=True, exist_ok=True)


def svhn(base):
    """The .mat files as the SVHN site ships them: X (32, 32, 3, N) uint8, y (N, 1) with 10 for the digit 0."""
    folder = base / "svhn"
    folder.mkdir(parents=True)
    for split, labels in (("train", [10, 1, 2, 10, 1, 2, 10, 1, 2, 10, 1, 2]), ("test", [10, 1, 2, 1])):
        images = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(len(labels))], axis=3)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images, "y": np.array(labels).reshape(-1, 1)})


@pytest.fixture(autouse=True)
def flowers_md5s_unchecked(monkeypatch):
    """Flowers102 checks its .mat files' MD5s even with download=False: the fakes' differ."""
    from torchvision.datasets import flowers102 as module

    monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


# name: (train, val, test) sizes with the YAML's val_split=0.1, class names, metric, image_size, where val comes from
OFFICIAL, CARVED = "official validation split", "0.1 of train, stratified, split_seed=0"
EXPECTED = {
    "food101": ((6, 2, 4), ["apple_pie", "waffles"], "top1", 224, CARVED),
    "fgvc_aircraft": ((6, 3, 3), ["707-320", "Cessna 172", "A300B4"], "mean_per_class", 224, OFFICIAL),
    "stanford_cars": ((4, 2, 4), ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"], "top1", 224, CARVED),
    "dtd": ((4, 2, 2), ["banded", "zigzagged"], "top1", 224, OFFICIAL),
    "oxford_pets": ((6, 3, 6), ["Abyssinian", "American Bulldog", "Bengal"], "mean_per_class", 224, CARVED),
    "caltech101": ((54, 6, 5), ["accordion", "airplanes"], "mean_per_class", 224, CARVED),
    "flowers102": ((6, 3, 6), data.transfer.datasets.Flowers102.classes, "mean_per_class", 224, OFFICIAL),  # all 102
    "sun397": ((3, 3, 6), ["abbey", "apartment_building/outdoor", "beach"], "top1", 224, CARVED),
    "eurosat": ((9, 3, 3), ["AnnualCrop", "Forest", "River"], "top1", 64,
                "20% of every class, stratified, split_seed=0 (VTAB's 60/20/20)"),
    "clevr": ((8, 2, 4), [str(n) for n in range(3, 11)], "top1", 224, CARVED),
}
MAKERS = {"food101": food101, "fgvc_aircraft": fgvc_aircraft, "stanford_cars": stanford_cars, "dtd": dtd,
          "oxford_pets": oxford_pets, "caltech101": caltech101, "flowers102": flowers102, "sun397": sun397,
          "eurosat": eurosat, "clevr": clevr, "svhn": svhn}


@pytest.mark.parametrize("name", EXPECTED)
def test_each_set_builds_its_official_splits_from_a_copy_in_data_dir(make_cfg, tmp_path, name):
    MAKERS[name](tmp_path / "data")
    splits = data.build_dataset(**make_cfg(f"dataset={name}").dataset)
    sizes, classes, metric, image_size, val_source = EXPECTED[name]
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    assert splits.classes == list(classes) and splits.metric == metric and splits.image_size == image_size
    assert splits.val_source == val_source and not splits.val_is_test
    assert set(data.targets_of(splits.train)) == set(data.targets_of(splits.test)) <= set(range(len(classes)))
    image, label = splits.test[0]
    assert image.mode == "RGB" and image.size == (12, 10) and 0 <= label < len(classes)
    assert splits.source.startswith(f"torchvision {name} in {tmp_path / 'data'}")


@pytest.mark.parametrize("name", ["fgvc_aircraft", "dtd", "flowers102", "eurosat"])
def test_val_split_0_validates_on_test_even_with_an_official_val(make_cfg, tmp_path, name):
    MAKERS[name](tmp_path / "data")
    splits = data.build_dataset(**make_cfg(f"dataset={name}", "dataset.val_split=0").dataset)
    assert splits.val_is_test and len(splits.train) == EXPECTED[name][0][0]


def test_official_val_images_are_the_listed_ones(make_cfg, tmp_path):
    fgvc_aircraft(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=fgvc_aircraft").dataset)
    assert [path.stem for path, _ in splits.val.samples] == ["0001007", "0001008", "0001009"]
    assert splits.val_source == "official validation split"


def test_root_is_the_sets_folder_or_the_folder_holding_it(make_cfg, tmp_path):
    oxford_pets(tmp_path / "copy")
    for root in (tmp_path / "copy", tmp_path / "copy" / "oxford-iiit-pet"):
        splits = data.build_dataset(**make_cfg("dataset=oxford_pets", f"dataset.root={root}").dataset)
        assert len(splits.classes) == 3 and len(splits.test) == 6


def test_dtd_reads_the_partition_asked_for(make_cfg, tmp_path):
    dtd(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=dtd", "dataset.partition=2").dataset)
    assert all(path.name.startswith(f"{path.parent.name}_2train") for path, _ in splits.train.samples)
    with pytest.raises(ConfigError, match=r"dataset.partition=11 is not one of dtd's official partitions; use 1 to 10"):
        data.build_dataset(**make_cfg("dataset=dtd", "dataset.partition=11").dataset)


def test_caltech101_draws_30_per_class_for_training_with_split_seed_and_leaves_out_background(make_cfg, tmp_path):
    caltech101(tmp_path / "data")
    draws = [data.build_dataset(**make_cfg("dataset=caltech101", "dataset.val_split=0",
                                           f"dataset.split_seed={seed}").dataset) for seed in (0, 0, 1)]
    first, again, other = ([path for path, _ in splits.test.samples] for splits in draws)
    assert np.bincount(data.targets_of(draws[0].train)).tolist() == [30, 30]
    assert first == again and first != other and len(first) == 2 + 3
    assert "BACKGROUND_Google" not in draws[0].classes and "BACKGROUND_Google left out" in draws[0].source


def test_caltech101_background_is_the_102nd_class_with_30_training_images(make_cfg, tmp_path):
    """Kornblith et al.'s and VTAB's count (3,060 / 6,084 on the real set); the other labels stay as they were."""
    caltech101(tmp_path / "data")
    folder = tmp_path / "data" / "caltech101" / "101_ObjectCategories" / "BACKGROUND_Google"
    for i in range(4, 35):
        jpeg(folder / f"image_{i:04d}.jpg", i)
    plain = data.build_dataset(**make_cfg("dataset=caltech101", "dataset.val_split=0").dataset)
    splits = data.build_dataset(**make_cfg("dataset=caltech101_background", "dataset.val_split=0").dataset)
    assert splits.classes == [*plain.classes, "BACKGROUND_Google"]
    assert np.bincount(data.targets_of(splits.train)).tolist() == [30, 30, 30]
    assert np.bincount(data.targets_of(splits.test)).tolist() == [2, 3, 4]
    assert [s for s in splits.train.samples if s[1] < 2] == list(plain.train.samples)
    assert "BACKGROUND_Google as the 102nd class" in splits.source


def test_eurosat_draws_a_stratified_60_20_20_split_with_split_seed(make_cfg, tmp_path):
    eurosat(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=eurosat").dataset)
    parts = [{path for path, _ in part.samples} for part in (splits.train, splits.val, splits.test)]
    assert [np.bincount(data.targets_of(part)).tolist() for part in (splits.train, splits.val, splits.test)] == \
        [[3, 3, 3], [1, 1, 1], [1, 1, 1]]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert "60/20/20" in splits.val_source


def test_clevr_reads_vtabs_two_tasks_from_the_scene_files(make_cfg, tmp_path):
    """count_all: objects less 3; closest_object_distance: the last of VTAB's thresholds (0, 8, 8.5, 9, 9.5,
    10, 100) below the closest object's depth."""
    clevr(tmp_path / "data")
    count = data.build_dataset(**make_cfg("dataset=clevr", "dataset.val_split=0").dataset)
    assert data.targets_of(count.test) == [0, 1, 0, 1] and len(count.classes) == 8
    distance = data.build_dataset(**make_cfg("dataset=clevr_distance", "dataset.val_split=0").dataset)
    # the closest depths of the 4 test scenes: 7.0 (bin 0-8), 8.2 (8-8.5), 9.0 (8.5-9: a threshold is not below
    # itself), 8.0 (0-8)
    closest = [min(7.0, 8.2 + 1, 9.9 + 2), min(8.2, 9.9 + 1, 12.0 + 2, 7.0 + 3), min(9.9, 12.0 + 1, 7.0 + 2),
               min(12.0, 7.0 + 1, 8.2 + 2, 9.9 + 3)]
    expected = [max(i for i, t in enumerate((0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)) if t < d) for d in closest]
    assert data.targets_of(distance.test) == expected == [0, 1, 2, 0]
    assert distance.classes == ["0-8", "8-8.5", "8.5-9", "9-9.5", "9.5-10", "10-100"]
    assert distance.source.startswith("torchvision clevr_distance in") and count.source.startswith("torchvision clevr in")


def test_svhn_reads_the_mat_files_in_memory_with_digit_0_as_label_0(make_cfg, tmp_path):
    svhn(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=svhn", "dataset.val_split=0").dataset)
    assert data.targets_of(splits.test) == [0, 1, 2, 1] and splits.classes == [str(d) for d in range(10)]
    image, label = splits.train[3]
    assert tuple(image.shape) == (3, 32, 32) and int(image[0, 5, 7]) == 60 and label == 0
    result = run(make_cfg("dataset=svhn", "model=test_resnet", "pretrained=false", "epochs=1", "batch_size=3",
                          "augment=none"), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["data_info"]["train_size"] + result["data_info"]["val_size"] == 12


def test_sun397_without_its_partition_files_says_where_to_get_them(make_cfg, tmp_path):
    sun397(tmp_path / "data", partition_files=False)
    with pytest.raises(DataNotFoundError, match=r"Training_01.txt does not exist.*Partitions.zip into .*SUN397"):
        data.build_dataset(**make_cfg("dataset=sun397").dataset)


# a distinctive part of each set's hint: what torchvision reads there
HINTS = {"food101": "meta/train.json", "fgvc_aircraft": "images_variant_", "dtd": r"dtd/labels/",
         "oxford_pets": r"annotations/\{trainval,test\}.txt", "caltech101": "101_ObjectCategories",
         "flowers102": "setid.mat", "sun397": "Partitions.zip", "eurosat": "2750/", "clevr": "CLEVR_v1.0/scenes",
         "svhn": "train_32x32.mat",
         "stanford_cars": r"URLs are dead.*cars_test_annos_withlabels.mat.*kaggle"}


@pytest.mark.parametrize("name", HINTS)
def test_offline_and_missing_fails_naming_the_folder_and_how_to_supply_it(make_cfg, tmp_path, name):
    folder = tmp_path / "data" / data.transfer.SOURCES[name].folder
    expected = f"{name}: {re.escape(str(folder))} does not exist .*{HINTS[name]}.*dataset.root"
    with pytest.raises(DataNotFoundError, match=expected):
        data.build_dataset(**make_cfg(f"dataset={name}").dataset)
    assert not folder.exists()


def test_download_false_never_fetches(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TLBENCH_OFFLINE", "0")
    with pytest.raises(DataNotFoundError, match=r"was not fetched \(download=false\)"):
        data.build_dataset(**make_cfg("dataset=food101", "dataset.download=false").dataset)


def test_a_damaged_copy_says_what_torchvision_could_not_read(make_cfg, tmp_path):
    food101(tmp_path / "data")
    (tmp_path / "data" / "food-101" / "meta" / "test.json").unlink()
    with pytest.raises(DataNotFoundError, match=r"cannot be read by torchvision.datasets.Food101 \(FileNotFoundError"):
        data.build_dataset(**make_cfg("dataset=food101").dataset)


@pytest.mark.parametrize("name, pipeline", [("flowers102", "tensor"), ("food101", "pil")])
def test_a_tiny_run_on_a_fake_copy_writes_result_json(make_cfg, tmp_path, name, pipeline, one_thread):
    """flowers102 (mean per-class, official val) on the tensor path, food101 (top-1, carved val) on the PIL path."""
    MAKERS[name](tmp_path / "data")
    cfg = make_cfg(f"dataset={name}", "dataset.image_size=32", "pretrained=false", "epochs=1", "batch_size=3",
                   "augment=none", "checkpoint_every_s=0", f"data.pipeline={pipeline}")
    result = run(cfg, output_dir=tmp_path / "run")
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == written["status"] == "ok"
    sizes = EXPECTED[name][0]
    info = written["data_info"]
    assert (info["train_size"], info["val_size"], info["test_size"]) == sizes
    assert info["num_classes"] == len(EXPECTED[name][1]) and info["image_size"] == 32
    cached = sorted(path.name.split("-")[1] for path in (tmp_path / "data" / "tensor-cache").glob(f"{name}-*.pt"))
    assert cached == (["test", "train", "val"] if pipeline == "tensor" else [])  # the tensor path's cache is keyed


def test_sun397_partition_tfds_reads_tfdss_three_lists_as_vtab(make_cfg, tmp_path):
    sun397(tmp_path / "data", partition_files=False)
    folder = tmp_path / "data" / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/beach"]
    for split, images in (("tr", (0, 1, 2)), ("va", (3,)), ("te", (4,))):  # TFDS's lines: /<letter>/<class>/<file>
        (folder / f"sun397_tfds_{split}.txt").write_text("".join(f"{name}/sun_{i}.jpg\n" for name in classes
                                                                 for i in images))
    splits = data.build_dataset(**make_cfg("dataset=sun397_tfds").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 3)  # nothing carved: TFDS's val
    assert splits.val_source == "TFDS's sun397/tfds validation list" and data.targets_of(splits.test) == [0, 1, 2]
    (folder / "sun397_tfds_va.txt").unlink()
    with pytest.raises(DataNotFoundError, match=r"sun397_tfds_va.txt does not exist.*dataset.partition=tfds"):
        data.build_dataset(**make_cfg("dataset=sun397_tfds").dataset)
