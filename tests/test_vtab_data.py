"""VTAB's other tasks (tlbench/data/vtab.py) on tiny fake copies of their files, in their real formats: an
ImageFolder tree (RESISC45), .h5 files (PatchCamelyon), the dSprites .npz, NORB binary matrices (smallNORB)
and KITTI's label and devkit mapping files. Labels and splits are checked against the reference code's rules
(google-research/task_adaptation data/*.py, TFDS's kitti split) restated here."""

import gzip
import re

import numpy as np
import pytest
from PIL import Image

from tlbench import data
from tlbench.errors import DataNotFoundError
from tlbench.runner.run import run


def picture(path, shade=0, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade % 256, 80, 160)).save(path)


def resisc45(base, classes=("airport", "beach", "forest"), per_class=5):
    for name in classes:
        for i in range(per_class):
            picture(base / "NWPU-RESISC45" / name / f"{name}_{i + 1:03d}.jpg", i)


def patch_camelyon(base, sizes=(("train", 8), ("valid", 4), ("test", 6))):
    h5py = pytest.importorskip("h5py")
    folder = base / "pcam"
    folder.mkdir(parents=True)
    for split, count in sizes:
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as handle:
            handle["x"] = np.stack([np.full((96, 96, 3), 10 * i, np.uint8) for i in range(count)])
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as handle:
            handle["y"] = (np.arange(count) % 2).astype(np.uint8).reshape(-1, 1, 1, 1)


def dsprites(base, count=320):
    """Every x position (32) and orientation (40) value ten and eight times; pixel (0, 0) set on odd images."""
    folder = base / "dsprites"
    folder.mkdir(parents=True)
    latents = np.zeros((count, 6), np.int64)
    latents[:, 3] = np.arange(count) % 40
    latents[:, 4] = np.arange(count) % 32
    images = np.zeros((count, 64, 64), np.uint8)
    images[1::2, 0, 0] = 1
    np.savez_compressed(folder / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", imgs=images, latents_classes=latents)


def norb_matrix(path, array, gz=False):
    """The NORB binary format: type code, number of dimensions, max(3, ndim) sizes, data (little-endian)."""
    code = {np.uint8: 507333717, np.int32: 507333716}[array.dtype.type]
    dims = list(array.shape) + [1] * (3 - array.ndim)
    raw = np.array([code, array.ndim, *dims], "<i4").tobytes() + array.astype(array.dtype.newbyteorder("<")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    (gzip.open(str(path) + ".gz", "wb") if gz else open(path, "wb")).write(raw)


def smallnorb(base, count=36):
    """Elevation k % 9 and azimuth 2 * (k % 18) for image k; the left image's pixel (0, 0) is k, the right one's 255.
    The training files gunzipped, the test files as NYU serves them (.gz)."""
    k = np.arange(count)
    images = np.zeros((count, 2, 96, 96), np.uint8)
    images[:, 0, 0, 0], images[:, 1] = k, 255
    info = np.stack([k % 5, k % 9, 2 * (k % 18), k % 6], axis=1).astype(np.int32)
    for stem, gz in (("smallnorb-5x46789x9x18x6x2x96x96-training", False),
                     ("smallnorb-5x01235x9x18x6x2x96x96-testing", True)):
        norb_matrix(base / "smallnorb" / f"{stem}-dat.mat", images, gz)
        norb_matrix(base / "smallnorb" / f"{stem}-info.mat", info, gz)


KITTI_DRIVES = [f"2011_09_26_drive_{n:04d}_sync" for n in range(1, 21)]  # 20 drives: 2 test, 2 validation


def kitti(base, per_drive=3):
    """Image n belongs to drive n // per_drive, listed through a shuffled train_rand.txt as the devkit does.
    Image n's closest vehicle (z) cycles through 5, 8, 15, 30 m and none; a closer pedestrian and a DontCare
    box must not count."""
    raw = base / "Kitti" / "raw"
    count = len(KITTI_DRIVES) * per_drive
    lines = [f"2011_09_26 {KITTI_DRIVES[n // per_drive]} {n:010d}" for n in range(count)]
    order = np.random.default_rng(0).permutation(count)  # image n is described by line order[n]
    (raw / "mapping").mkdir(parents=True)
    (raw / "mapping" / "train_mapping.txt").write_text("\n".join(lines[i] for i in np.argsort(order)) + "\n")
    (raw / "mapping" / "train_rand.txt").write_text(",".join(str(order[n] + 1) for n in range(count)) + "\n")
    (raw / "training" / "label_2").mkdir(parents=True)
    depths = (5.0, 8.0, 15.0, 30.0, None)
    for n in range(count):
        picture(raw / "training" / "image_2" / f"{n:06d}.png", n)
        rows = ["Pedestrian 0.00 0 -0.20 712.40 143.00 810.73 307.92 1.89 0.48 1.20 1.84 1.47 1.50 0.01",
                "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"]
        depth = depths[n % len(depths)]
        if depth is not None:
            rows += [f"Car 0.00 0 -1.56 564.62 174.59 616.43 224.74 1.61 1.66 3.20 -0.69 1.69 {depth + 3:.2f} -1.59",
                     f"Van 0.00 1 1.71 481.59 180.09 512.55 202.42 2.19 1.90 4.95 -7.43 1.88 {depth:.2f} 1.55"]
        (raw / "training" / "label_2" / f"{n:06d}.txt").write_text("\n".join(rows) + "\n")
    return count, per_drive


def counts(split) -> list[int]:
    return np.bincount(data.targets_of(split)).tolist()


def test_resisc45_draws_a_stratified_60_20_20_split(make_cfg, tmp_path):
    resisc45(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=resisc45").dataset)
    assert [counts(part) for part in (splits.train, splits.val, splits.test)] == [[3, 3, 3], [1, 1, 1], [1, 1, 1]]
    assert splits.classes == ["airport", "beach", "forest"] and splits.metric == "top1" and splits.image_size == 224
    assert "60/20/20" in splits.val_source and splits.source.startswith("tlbench resisc45 in")
    paths = [{path for path, _ in part.samples} for part in (splits.train, splits.val, splits.test)]
    assert not (paths[0] & paths[1] or paths[0] & paths[2] or paths[1] & paths[2])


def test_patch_camelyon_reads_the_official_splits_from_the_h5_files(make_cfg, tmp_path):
    patch_camelyon(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=patch_camelyon").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 4, 6)
    assert splits.val_source == "official validation split" and data.targets_of(splits.test) == [0, 1, 0, 1, 0, 1]
    image, label = splits.test[3]
    assert image.mode == "RGB" and image.size == (96, 96) and image.getpixel((5, 5)) == (30, 30, 30) and label == 1
    result = run(make_cfg("dataset=patch_camelyon", "model=test_resnet", "pretrained=false", "epochs=1", "batch_size=4",
                          "augment=none", "dataset.image_size=32"), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["data_info"]["val_size"] == 4


@pytest.mark.parametrize("task, values", [("location", 32), ("orientation", 40)])
def test_dsprites_groups_its_latent_into_16_classes_and_draws_80_10_10(make_cfg, tmp_path, task, values):
    """VTAB: label = floor(value / (values / 16)); pixels 0/1 become 0/255; gray images read as RGB."""
    dsprites(tmp_path / "data")
    splits = data.build_dataset(**make_cfg(f"dataset=dsprites_{task}").dataset)
    column = {"location": 4, "orientation": 3}[task]
    latents = np.load(tmp_path / "data" / "dsprites" / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")["latents_classes"]
    expected = np.floor(latents[:, column] / (values / 16)).astype(int)
    assert sorted(data.targets_of(splits.train) + data.targets_of(splits.val) + data.targets_of(splits.test)) == \
        sorted(expected.tolist())
    whole = np.bincount(expected)  # 20 of every location class; 25 or 15 of the orientation classes (2.5 values each)
    for part, share in ((splits.train, 0.8), (splits.val, 0.1), (splits.test, 0.1)):
        assert np.abs(np.array(counts(part)) - share * whole).max() <= 1
    image, _ = splits.train[0]
    assert tuple(image.shape) == (3, 64, 64) and set(image.unique().tolist()) <= {0, 255}
    assert len(splits.classes) == 16 and splits.source.startswith(f"tlbench dsprites_{task} in")


@pytest.mark.parametrize("pipeline", ["tensor", "pil"])
def test_a_gray_in_memory_set_trains_on_both_data_paths(make_cfg, tmp_path, pipeline):
    dsprites(tmp_path / "data")
    result = run(make_cfg("dataset=dsprites_location", "model=test_resnet", "pretrained=false", "epochs=1",
                          "batch_size=16", "augment=none", "dataset.image_size=16", "dataset.train_per_class=2",
                          f"data.pipeline={pipeline}"), output_dir=tmp_path / pipeline)
    assert result["status"] == "ok" and result["data_info"]["train_size"] == 32


@pytest.mark.parametrize("task, column, divisor, classes", [("azimuth", 2, 2, 18), ("elevation", 1, 1, 9)])
def test_smallnorb_reads_the_norb_files_and_halves_the_official_test_split(make_cfg, tmp_path, task, column, divisor,
                                                                           classes):
    smallnorb(tmp_path / "data")
    splits = data.build_dataset(**make_cfg(f"dataset=smallnorb_{task}").dataset)
    k = np.arange(36)
    info = np.stack([k % 5, k % 9, 2 * (k % 18), k % 6], axis=1)
    assert data.targets_of(splits.train) == (info[:, column] // divisor).tolist() and len(splits.classes) == classes
    assert len(splits.val) == len(splits.test) == 18 and counts(splits.val) == counts(splits.test)
    image, label = splits.train[7]
    assert tuple(image.shape) == (3, 96, 96) and int(image[1, 0, 0]) == 7 and int(image[0, 5, 5]) == 0  # left camera
    assert "half of the official test split" in splits.val_source


def test_kitti_distance_is_tfds_split_by_drive_and_vtabs_closest_vehicle_label(make_cfg, tmp_path):
    count, per_drive = kitti(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=kitti_distance").dataset)
    # TFDS kitti 3.1.0's _build_splits, restated: global numpy seed 123, 10% of the sorted drives to test,
    # then 10% of the remaining sorted drives to validation
    np.random.seed(123)
    test_drives = set(np.random.choice(sorted(KITTI_DRIVES), 2, replace=False))
    val_drives = set(np.random.choice(sorted(set(KITTI_DRIVES) - test_drives), 2, replace=False))

    def drives(split):
        return {KITTI_DRIVES[int(path.stem) // per_drive] for path, _ in split.samples}

    assert drives(splits.test) == test_drives and drives(splits.val) == val_drives
    assert drives(splits.train) == set(KITTI_DRIVES) - test_drives - val_drives
    assert len(splits.train) + len(splits.val) + len(splits.test) == count
    # closest vehicle at 5, 8, 15, 30 m or none: thresholds (-100, 8, 20, 999), label = last threshold below it
    every = {int(path.stem): label for split in (splits.train, splits.val, splits.test) for path, label in split.samples}
    assert [every[n] for n in range(5)] == [0, 0, 1, 2, 3]
    assert splits.classes == ["up to 8 m", "8-20 m", "over 20 m", "no vehicle"]
    assert splits.source.startswith("torchvision kitti_distance in")


def _varint(value: int) -> bytes:
    out = b""
    while True:
        byte, value = value & 0x7F, value >> 7
        out += bytes([byte | (0x80 if value else 0)])
        if not value:
            return out


def _field(number: int, payload: bytes) -> bytes:  # length-delimited (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(image: bytes, filename: str, label: int, packed: bool) -> bytes:
    """A serialized tf.train.Example with the features TFDS's dmlab reads (protobuf's wire format, restated from
    tensorflow/core/example/{example,feature}.proto), the map entries in a shuffled order."""
    int64 = _field(1, _varint(label)) if packed else _varint(1 << 3) + _varint(label)  # Int64List.value, [packed]
    features = [_field(1, _field(1, b"label") + _field(2, _field(3, int64))),
                _field(1, _field(1, b"image") + _field(2, _field(1, _field(1, image)))),
                _field(1, _field(1, b"filename") + _field(2, _field(1, _field(1, filename.encode()))))]
    return _field(1, b"".join(features[::-1] if label % 2 else features))


def dmlab(base, sizes=(("train", 6), ("validation", 3), ("test", 4)), shards=2):
    """TFDS's source layout: dmlab-<split>.tfrecord-0000N-of-0000M files of length-prefixed records (the CRCs
    are written as zeros: the reader does not check them), JPEG frames whose red channel is 20 x the index."""
    folder = base / "dmlab" / "dmlab"
    folder.mkdir(parents=True)
    import io
    import struct
    for split, count in sizes:
        for shard in range(shards):
            records = b""
            for n in range(shard, count, shards):
                buffer = io.BytesIO()
                Image.new("RGB", (48, 36), (20 * n, 60, 90)).save(buffer, "JPEG", quality=95)
                data = example(buffer.getvalue(), f"{split}_{n}.jpg", n % 6, packed=n % 3 == 0)
                records += struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4
            (folder / f"dmlab-{split}.tfrecord-{shard:05d}-of-{shards:05d}").write_bytes(records)


def test_dmlab_reads_tfdss_records_without_tensorflow(make_cfg, tmp_path):
    dmlab(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=dmlab").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 4)
    assert sorted(data.targets_of(splits.train)) == [0, 1, 2, 3, 4, 5] and sorted(data.targets_of(splits.val)) == [0, 1, 2]
    assert splits.val_source == "official validation split" and len(splits.classes) == 6
    for index in range(len(splits.test)):
        image, label = splits.test[index]
        assert image.size == (48, 36) and abs(image.getpixel((5, 5))[0] - 20 * label) <= 3  # the frame of that record
    result = run(make_cfg("dataset=dmlab", "model=test_resnet", "pretrained=false", "epochs=1", "batch_size=4",
                          "dataset.image_size=32"), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["data_info"]["val_size"] == 3


def test_a_truncated_record_file_is_one_message_naming_it(make_cfg, tmp_path):
    dmlab(tmp_path / "data")
    victim = tmp_path / "data" / "dmlab" / "dmlab" / "dmlab-train.tfrecord-00001-of-00002"
    victim.write_bytes(victim.read_bytes()[:-30])
    with pytest.raises(DataNotFoundError, match="dmlab-train.tfrecord-00001-of-00002 ends inside a record"):
        data.build_dataset(**make_cfg("dataset=dmlab").dataset)


def eye(path, size=(200, 160), radius=60, shade=200):
    """A fundus-like photograph: a bright disc of `radius` on black in the middle of a `size` JPEG, with a dark
    spot of radius 4 twenty pixels right of the centre."""
    ys, xs = np.mgrid[0:size[1], 0:size[0]]
    disc = (xs - size[0] // 2) ** 2 + (ys - size[1] // 2) ** 2 <= radius ** 2
    spot = (xs - size[0] // 2 - 20) ** 2 + (ys - size[1] // 2) ** 2 <= 16
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[disc] = (shade, shade // 2, shade // 4)
    pixels[spot] = (shade // 2, shade // 4, shade // 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=95)


def retinopathy(base, train=6, public=3, private=4):
    """Kaggle's layout: train/ with trainLabels.csv (image, level), test/ with retinopathy_solution.csv (image,
    level, Usage Public or Private); levels cycle 0-4."""
    folder = base / "diabetic_retinopathy"
    rows = [f"{n}_left" for n in range(train)]
    for name in rows:
        eye(folder / "train" / f"{name}.jpeg")
    folder.joinpath("trainLabels.csv").write_text("image,level\n" + "".join(f"{r},{i % 5}\n" for i, r in enumerate(rows)))
    tests = [(f"{100 + n}_right", n % 5, "Public" if n < public else "Private") for n in range(public + private)]
    for name, _, _ in tests:
        eye(folder / "test" / f"{name}.jpeg")
    folder.joinpath("retinopathy_solution.csv").write_text(
        "image,level,Usage\n" + "".join(f"{name},{level},{usage}\n" for name, level, usage in tests))


def test_retinopathy_splits_as_tfds_and_prepares_each_photo_as_btgraham_300(make_cfg, tmp_path):
    pytest.importorskip("cv2")
    retinopathy(tmp_path / "data")
    splits = data.build_dataset(**make_cfg("dataset=diabetic_retinopathy").dataset)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 3, 4)  # trainLabels; Public; Private
    assert data.targets_of(splits.train) == [0, 1, 2, 3, 4, 0] and data.targets_of(splits.test) == [3, 4, 0, 1]
    assert splits.classes == ["no DR", "mild", "moderate", "severe", "proliferative DR"]
    image, _ = splits.train[0]
    # radius 60 scaled to 300 (x5: 1000 x 800), then cropped to 90% of it: 540 x 540, grey (128) outside the circle
    pixels = np.asarray(image).astype(int)
    assert image.mode == "RGB" and image.size == (540, 540)
    assert np.abs(pixels[0, 0] - 128).max() <= 3 and np.abs(pixels[220, 270] - 128).max() <= 3  # outside; flat: 128
    assert pixels[270, 370, 0] < 60  # the spot (x5: 100 px right of the centre) minus its surroundings, x4
    result = run(make_cfg("dataset=diabetic_retinopathy", "model=test_resnet", "pretrained=false", "epochs=1",
                          "batch_size=4", "dataset.image_size=32"), output_dir=tmp_path / "run")
    assert result["status"] == "ok" and result["data_info"]["val_size"] == 3


def test_retinopathy_without_opencv_is_one_message(make_cfg, tmp_path, monkeypatch):
    import sys

    retinopathy(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(DataNotFoundError, match="needs OpenCV: pip install opencv-python-headless"):
        data.build_dataset(**make_cfg("dataset=diabetic_retinopathy").dataset)


MAKERS = {"resisc45": resisc45, "patch_camelyon": patch_camelyon, "dsprites_location": dsprites,
          "smallnorb_azimuth": smallnorb, "kitti_distance": kitti, "diabetic_retinopathy": retinopathy, "dmlab": dmlab}
HINTS = {"resisc45": r"tlbench cannot download it: its only copy is a RAR archive.*NWPU-RESISC45.rar",
         "patch_camelyon": r"offline mode.*camelyonpatch_level_2_split_\{train,valid,test\}_\{x,y\}.h5",
         "dsprites_location": r"offline mode.*tlbench downloads it\), or put that file",
         "smallnorb_azimuth": r"offline mode.*smallnorb-5x46789x9x18x6x2x96x96-training-\{dat,info\}.mat",
         "kitti_distance": r"offline mode.*raw/mapping/train_\{rand,mapping\}.txt.*devkit_object.zip",
         "diabetic_retinopathy": r"Kaggle serves it to a logged-in user only.*trainLabels.csv",
         "dmlab": r"offline mode.*dmlab-\{train,validation,test\}.tfrecord.*dmlab.tar.gz"}


@pytest.mark.parametrize("name", HINTS)
def test_offline_and_missing_fails_naming_the_folder_and_how_to_supply_it(make_cfg, tmp_path, name):
    with pytest.raises(DataNotFoundError, match=f"{re.escape(str(tmp_path / 'data'))}.* does not exist .*{HINTS[name]}"):
        data.build_dataset(**make_cfg(f"dataset={name}").dataset)


@pytest.mark.parametrize("name", MAKERS)
def test_a_damaged_copy_fails_naming_the_file(make_cfg, tmp_path, name):
    MAKERS[name](tmp_path / "data")
    victim = {"resisc45": None, "patch_camelyon": "pcam/camelyonpatch_level_2_split_train_y.h5",
              "dsprites_location": "dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
              "smallnorb_azimuth": "smallnorb/smallnorb-5x46789x9x18x6x2x96x96-training-info.mat",
              "kitti_distance": "Kitti/raw/mapping/train_rand.txt",
              "diabetic_retinopathy": "diabetic_retinopathy/trainLabels.csv",
              "dmlab": "dmlab/dmlab/dmlab-test.tfrecord-00000-of-00002"}[name]
    if victim is None:  # an empty tree
        for path in (tmp_path / "data" / "NWPU-RESISC45").rglob("*.jpg"):
            path.unlink()
    else:
        (tmp_path / "data" / victim).write_bytes(b"not the file")
    with pytest.raises(DataNotFoundError, match=f"{name.split('_')[0] if name != 'patch_camelyon' else name}"):
        data.build_dataset(**make_cfg(f"dataset={name}").dataset)


def example_class():
    """tf.train.Example built by the protobuf library from its .proto definition (tensorflow/core/example/
    {example,feature}.proto, restated as a descriptor): an encoder independent of tlbench's parser."""
    descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
    from google.protobuf import descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="example.proto", package="tensorflow", syntax="proto3")
    label = descriptor_pb2.FieldDescriptorProto
    for name, number, kind, packed in (("BytesList", 1, label.TYPE_BYTES, False), ("FloatList", 2, label.TYPE_FLOAT, True),
                                       ("Int64List", 3, label.TYPE_INT64, True)):
        message = proto.message_type.add(name=name)
        field = message.field.add(name="value", number=1, type=kind, label=label.LABEL_REPEATED)
        field.options.packed = packed
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for name, number, kind in (("bytes_list", 1, "BytesList"), ("float_list", 2, "FloatList"), ("int64_list", 3, "Int64List")):
        feature.field.add(name=name, number=number, type=label.TYPE_MESSAGE, type_name=f".tensorflow.{kind}",
                          label=label.LABEL_OPTIONAL, oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=label.TYPE_STRING, label=label.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=label.TYPE_MESSAGE, type_name=".tensorflow.Feature", label=label.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=label.TYPE_MESSAGE, type_name=".tensorflow.Features.FeatureEntry",
                       label=label.LABEL_REPEATED)
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=label.TYPE_MESSAGE,
                                                     type_name=".tensorflow.Features", label=label.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


def test_the_example_parser_reads_what_the_protobuf_library_writes():
    from tlbench.data.tfrecord import example_features

    made = example_class()()
    made.features.feature["label"].int64_list.value.extend([5, -3, 300])
    made.features.feature["image"].bytes_list.value.append(b"\xff\xd8 jpeg bytes")
    made.features.feature["filename"].bytes_list.value.append("frame_7.jpg".encode())
    made.features.feature["x"].float_list.value.append(0.5)
    parsed = example_features(made.SerializeToString())
    assert parsed["label"] == [5, -3, 300] and parsed["image"] == [b"\xff\xd8 jpeg bytes"]
    assert parsed["filename"] == [b"frame_7.jpg"]
