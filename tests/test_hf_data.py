"""dataset=hf: Hugging Face `datasets` sets from local copies (save_to_disk, Parquet, imagefolder),
offline, with the errors a user meets first. Each copy is written by the datasets library itself."""

import json
import sys
import time

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from tlbench import data  # noqa: E402
from tlbench.data import tensor_data  # noqa: E402
from tlbench.records import identity
from tlbench.errors import ConfigError, DataNotFoundError  # noqa: E402
from tlbench.runner.run import run  # noqa: E402

CLASSES = ["cat", "dog", "eel"]
COLUMNS = ("dataset.image_column=img", "dataset.label_column=fine")


def split(per_class: int, shade: int = 0):
    images = [Image.new("RGB", (20, 16), (80 * k + 10 * i + shade, 40, 90)) for k in range(3) for i in range(per_class)]
    features = datasets.Features({"img": datasets.Image(), "fine": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict({"img": images, "fine": [k for k in range(3) for _ in range(per_class)]},
                                      features=features)


@pytest.fixture
def on_disk(tmp_path):
    """A DatasetDict written by save_to_disk: train 4, test 2 and validation 1 image per class."""
    folder = tmp_path / "pets-hf"
    datasets.DatasetDict(train=split(4), test=split(2), validation=split(1)).save_to_disk(str(folder))
    return folder


def hf_splits(make_cfg, path, *overrides):
    return data.build_dataset(**make_cfg("dataset=hf", f"dataset.path={path}", *overrides).dataset)


def test_a_save_to_disk_folder_gives_its_classlabel_names_and_a_carved_val_split(make_cfg, on_disk):
    splits = hf_splits(make_cfg, on_disk, *COLUMNS, "dataset.val_split=0.25")
    assert splits.classes == CLASSES
    assert (len(splits.train), len(splits.val), len(splits.test)) == (9, 3, 6)
    assert sorted(data.targets_of(splits.val)) == [0, 1, 2] and splits.val_source.startswith("0.25 of train")
    image, label = splits.test[5]
    assert image.mode == "RGB" and image.size == (20, 16) and label == 2
    assert "save_to_disk folder" in splits.source and "ClassLabel feature 'fine'" in splits.source


def test_an_official_validation_split_is_used_when_named(make_cfg, on_disk):
    splits = hf_splits(make_cfg, on_disk, *COLUMNS, "dataset.val_split_name=validation")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 3, 6)
    assert splits.val_source == "official validation split" and "val=validation" in splits.source


def test_parquet_files_load_by_folder_or_named_per_split(make_cfg, tmp_path):
    folder = tmp_path / "parquet"
    for name, rows in (("train", split(4)), ("test", split(2)), ("holdout", split(1))):
        rows.to_parquet(str(folder / f"{name}.parquet"))
    splits = hf_splits(make_cfg, folder, *COLUMNS, "dataset.val_split=0",
                       "dataset.data_files={train:train.parquet,test:holdout.parquet}")
    assert splits.classes == CLASSES and (len(splits.train), len(splits.test)) == (12, 3)
    assert splits.val_is_test and "local copy" in splits.source


def test_an_imagefolder_tree_loads_with_the_default_columns(make_cfg, image_tree):
    splits = hf_splits(make_cfg, image_tree, "dataset.val_split=0")
    assert splits.classes == ["cat", "dog"] and (len(splits.train), len(splits.test)) == (6, 4)
    assert splits.train[0][0].size == (40, 40)


def test_file_paths_and_string_labels_are_numbered_in_sorted_order(make_cfg, image_tree, tmp_path):
    def rows(part):
        files = sorted((image_tree / part).rglob("*.png"))
        return datasets.Dataset.from_dict({"file": [str(f) for f in files], "kind": [f.parent.name for f in files]})
    datasets.DatasetDict(train=rows("train"), test=rows("test")).save_to_disk(str(tmp_path / "paths"))
    splits = hf_splits(make_cfg, tmp_path / "paths", "dataset.image_column=file", "dataset.label_column=kind",
                       "dataset.val_split=0")
    assert splits.classes == ["cat", "dog"] and data.targets_of(splits.train) == [0, 0, 0, 1, 1, 1]
    assert splits.train[4][0].size == (40, 40) and "sorted distinct values of 'kind'" in splits.source


def test_a_wrong_column_or_split_fails_naming_what_there_is(make_cfg, on_disk):
    with pytest.raises(ConfigError, match=r"dataset.image_column='image' is not a column .* its columns: img "
                                          r"\(Image\), fine \(ClassLabel\)"):
        hf_splits(make_cfg, on_disk)
    with pytest.raises(ConfigError, match="dataset.label_column='label' is not a column"):
        hf_splits(make_cfg, on_disk, "dataset.image_column=img")
    with pytest.raises(ConfigError, match="dataset.test_split='holdout': .* it has train, test, validation"):
        hf_splits(make_cfg, on_disk, *COLUMNS, "dataset.test_split=holdout")


def test_a_hub_set_not_cached_offline_fails_fast_saying_how_to_supply_it(make_cfg, tmp_path):
    started = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=r"the Hub data set 'someone/no-such-set' is not in .*huggingface and "
                                                r"could not be fetched \(offline mode is set\).*save_to_disk.*Parquet"):
        hf_splits(make_cfg, "someone/no-such-set")
    assert time.perf_counter() - started < 10, "the Hub was tried although offline"
    with pytest.raises(DataNotFoundError, match="dataset.path='/no/such/folder' does not exist"):
        hf_splits(make_cfg, "/no/such/folder")


def test_without_the_datasets_package_the_error_names_the_extra(make_cfg, on_disk, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match=r"pip install 'tlbench\[hf\]'"):
        hf_splits(make_cfg, on_disk)


def test_new_data_in_the_folder_changes_the_cache_key_and_the_run_identity(make_cfg, on_disk, tmp_path):
    def keys():
        cfg = make_cfg("dataset=hf", f"dataset.path={on_disk}", *COLUMNS)
        splits = data.build_dataset(**cfg.dataset)
        return tensor_data.fingerprint(splits.train), identity.fingerprint_paths(dict(dataset=dict(cfg.dataset)))
    before = keys()
    assert before[0] is not None and before[1]["dataset.path"].startswith("tree:")
    datasets.DatasetDict(train=split(4), test=split(2), validation=split(1)).save_to_disk(str(tmp_path / "copy"))
    assert identity.fingerprint(tmp_path / "copy") == before[1]["dataset.path"], "the same data saved again differs"
    new_data = datasets.DatasetDict(train=split(4, shade=5), test=split(2), validation=split(1))
    new_data.save_to_disk(str(tmp_path / "new"))
    for part in ("train", "test", "validation"):  # replaced in place, as a user re-saving the set would
        for old in (on_disk / part).iterdir():
            old.unlink()
        for new in (tmp_path / "new" / part).iterdir():
            new.rename(on_disk / part / new.name)
    after = keys()  # the Arrow files keep their sizes: the data's own fingerprint (state.json) tells them apart
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_a_run_on_a_hf_set_writes_an_ok_result(make_cfg, on_disk, tmp_path, pipeline):
    cfg = make_cfg("dataset=hf", f"dataset.path={on_disk}", *COLUMNS, "dataset.val_split_name=validation",
                   "dataset.image_size=32", "pretrained=false", "epochs=1", "batch_size=8", "augment=none",
                   "checkpoint_every_s=0", "save_model=false", f"data.pipeline={pipeline}")
    run(cfg, output_dir=tmp_path / "run")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and len(result["epochs"]) == 1
    info = result["data_info"]
    assert info["classes"] == CLASSES and (info["train_size"], info["val_size"], info["test_size"]) == (12, 3, 6)


def test_rows_that_do_not_decode_are_skipped_and_counted_when_asked(make_cfg, tmp_path):
    """On the PIL path, which reads every row once first (the tensor path skips while decoding its cache)."""
    import io

    encoded = io.BytesIO()
    Image.new("RGB", (12, 12), (200, 10, 10)).save(encoded, format="PNG")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    rows = datasets.Dataset.from_dict({"image": [{"bytes": encoded.getvalue(), "path": None}] * 4
                                       + [{"bytes": b"not an image", "path": None}], "label": [0, 1, 0, 1, 1]},
                                      features=features)
    datasets.DatasetDict(train=rows, test=rows).save_to_disk(str(tmp_path / "bad"))
    cfg = make_cfg("dataset=hf", f"dataset.path={tmp_path / 'bad'}", "dataset.val_split=0", "dataset.image_size=32",
                   "dataset.on_bad_image=skip", "pretrained=false", "epochs=1", "batch_size=4", "augment=none",
                   "checkpoint_every_s=0", "save_model=false", "data.pipeline=pil")
    result = run(cfg, output_dir=tmp_path / "run")
    skipped = result["data_info"]["skipped_images"]
    assert result["status"] == "ok" and skipped["train"] == 1 and skipped["examples"][0].endswith("[train] row 4")
    assert result["data_info"]["classes"] == ["0", "1"] and result["data_info"]["train_size"] == 4
