"""dataset.preprocess: how photos become squares. crop = the field's evaluation view (shorter side to
image_size / crop_fraction, then the central square; timm's transform is the oracle), training boxes
drawn from the whole photo on both data paths; squash = the old resize of both sides, kept for
square sets and the write-ups."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from tlbench import specs
from tlbench.data import augment, tensor_data
from tlbench.data import batch_augment as ops
from tlbench.runner.run import run

CROP = specs.preprocess("crop", 0.875)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth photo-like image (gradients and a blob), so resampling differences stay small."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    blob = 255 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.05 * width * height))
    rgb = np.stack([255 * x / width, 255 * y / height, blob], axis=-1)
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256)])
def test_eval_view_is_timms_center_crop(size):
    """timm's eval transform for the same crop_pct (bilinear) is the oracle: shorter side to
    floor(160 / 0.875) = 182, central 160 px."""
    timm_data = pytest.importorskip("timm.data")
    image = photo(*size)
    ours = augment.eval_transform(160, (0, 0, 0), (1, 1, 1), preprocess=CROP)(image)
    reference = timm_data.create_transform(input_size=160, crop_pct=0.875, interpolation="bilinear",
                                           mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert ours.shape == reference.shape == (3, 160, 160)
    assert (ours - reference).abs().mean() < 2 / 255  # PIL's and torch's antialiased bilinear differ by rounding


def test_squash_keeps_the_old_resize():
    image = photo(300, 200)
    squashed = augment.eval_transform(64, (0, 0, 0), (1, 1, 1))(image)
    expected = torch.nn.functional.interpolate(torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float(),
                                               size=(64, 64), mode="bilinear", antialias=True)[0] / 255
    assert squashed.shape == (3, 64, 64) and (squashed - expected).abs().max() < 2 / 255


def photos_dataset(sizes):
    return [(photo(w, h, seed), i % 2) for i, ((w, h), seed) in enumerate(zip(sizes, range(len(sizes))))]


class Listed(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


SIZES = [(240, 180), (180, 240), (200, 160), (180, 180), (400, 300)]  # up to 4:3: the canvas holds them whole


def test_training_view_without_boxes_is_the_evaluation_view(tmp_path):
    """augment without random-resized-crop trains on exactly what evaluation sees."""
    data = Listed(photos_dataset(SIZES))
    common = dict(cache_dir=tmp_path, name="photos", split="train", preprocess=CROP)
    canvas = tensor_data.cached_split(data, 64, view="train", **common)
    viewed = tensor_data.cached_split(data, 64, view="eval", **common)
    assert canvas.images.shape[-1] == CROP.canvas_side(64) == math.ceil(73 * 4 / 3)
    assert canvas.extents.tolist() == [[73, 97], [97, 73], [73, 91], [73, 73], [73, 97]]
    assert torch.equal(ops.center_crop_photos(canvas.images, 64, canvas.extents), viewed.images)
    per_image = torch.stack([augment.eval_transform(64, (0, 0, 0), (1, 1, 1), preprocess=CROP)(image)
                             for image, _ in data])
    assert (viewed.images.float() / 255 - per_image).abs().max() < 1e-6  # the cache holds the per-image view


def test_random_resized_crops_stay_inside_the_photo():
    """White photos on a black canvas: every box drawn from the photo alone stays white, at the
    photo's own aspect ratio (a 2:1 box of a 4:3 photo is impossible)."""
    crop = specs.preprocess("crop", 1.0)
    images, extents = [], []
    for w, h in [(120, 90), (90, 120), (100, 100)]:
        canvas, extent = augment.PhotoCanvas(64, crop)(Image.new("RGB", (w, h), (255, 255, 255)))
        images.append(canvas)
        extents.append(extent)
    images, extents = torch.stack(images).repeat(20, 1, 1, 1), torch.stack(extents).repeat(20, 1)
    boxes = ops.random_resized_crop(images, 32, (0.08, 1.0), torch.Generator().manual_seed(0), extents=extents)
    assert boxes.min() >= 250, "a box reached the canvas's padding"
    # scale 1 with the photo's own ratio can only be the whole photo: a 4:3 photo's whole area at ratio 4/3
    whole = ops.random_resized_crop(images[:1], 32, (1.0, 1.0), torch.Generator().manual_seed(1),
                                    ratio=(4 / 3, 4 / 3), extents=extents[:1])
    assert whole.min() >= 250


def test_box_areas_follow_torchvision():
    """The mean area of the boxes (as a fraction of the photo) matches torchvision's
    RandomResizedCrop on the same photo, for a wide photo where the ratio matters."""
    v2 = pytest.importorskip("torchvision.transforms.v2")
    crop = specs.preprocess("crop", 1.0)
    w, h = 96, 72
    marked = torch.zeros(3, h, w, dtype=torch.uint8)
    marked[0] = torch.arange(w).repeat(h, 1).to(torch.uint8)      # x coordinate in red
    marked[1] = torch.arange(h)[:, None].repeat(1, w).to(torch.uint8)  # y in green
    canvas, extent = augment.PhotoCanvas(72, crop)(marked)
    n = 2000
    ours = ops.random_resized_crop(canvas[None].repeat(n, 1, 1, 1), 16, (0.2, 1.0), torch.Generator().manual_seed(0),
                                   extents=extent[None].repeat(n, 1))
    torch.manual_seed(0)
    rrc = v2.RandomResizedCrop(16, scale=(0.2, 1.0), antialias=False)
    theirs = torch.stack([rrc(marked) for _ in range(n)])

    def area(boxes):  # spans of x and y seen in each box, as a fraction of the photo
        x, y = boxes[:, 0].float(), boxes[:, 1].float()
        return ((x.amax((1, 2)) - x.amin((1, 2)) + 1) / w * (y.amax((1, 2)) - y.amin((1, 2)) + 1) / h).mean()

    assert abs(area(ours) - area(theirs)) < 0.03


def test_a_photo_folder_trains_with_the_photo_recipe_on_both_paths(make_cfg, tmp_path):
    """The user's command: a folder of photos of several shapes. Both pipelines run; result.json
    names the recipe (random_resized_crop's keys), and model.json how to preprocess for predict."""
    root = tmp_path / "photos"
    for split, count in (("train", 6), ("test", 4)):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                photo(60 + 20 * (i % 3), 50 + 10 * (i % 2), seed=i).save(root / split / label / f"{i}.png")
    results = {}
    for pipeline in ("tensor", "pil"):
        out = tmp_path / pipeline
        cfg = make_cfg(*TINY, "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=32",
                       "augment=auto", "dataset.val_split=0.25", "pretrained=false", f"data.pipeline={pipeline}")
        results[pipeline] = result = run(cfg, out)
        assert result["status"] == "ok"
        assert result["config"]["augment"]["random_resized_crop"] == [0.35, 1.0]
        assert result["config"]["dataset"]["preprocess"] == "crop"
        assert result["data_info"]["preprocess"] == {"mode": "crop", "crop_fraction": 0.95}  # `model`, resolved
        card = json.loads((out / "model.json").read_text())
        # crop_fraction=model: the weights' own (timm's pretrained_cfg crop_pct of test_resnet)
        assert card["preprocessing"] == {**card["preprocessing"], "mode": "crop", "crop_fraction": 0.95}
    for pipeline, result in results.items():
        assert result["summary"]["final_test_acc"] is not None, pipeline


def test_squash_is_one_override_away_and_keeps_old_run_ids(make_cfg, tmp_path):
    """dataset.preprocess=squash with augment=crop_flip is the experiment an older tlbench ran on a
    photo folder: same run_id as a config that never had the new keys."""
    from tlbench.runner.run import run_id_of

    common = ["dataset=imagefolder", f"dataset.root={tmp_path}", "model=test_resnet"]
    old = make_cfg(*common, "dataset.preprocess=squash", "augment=crop_flip")
    new_default = make_cfg(*common)
    assert run_id_of(old) != run_id_of(new_default)
    assert run_id_of(make_cfg(*common, "dataset.preprocess=squash")) == run_id_of(old)  # auto -> crop_flip
    # a key set with augment=auto goes on top of the recipe: the same experiment as naming the option
    assert run_id_of(make_cfg(*common, "augment.hflip=0")) == \
        run_id_of(make_cfg(*common, "augment=random_resized_crop", "augment.hflip=0"))


def test_bad_preprocess_values_fail_before_training(make_cfg, tmp_path):
    from tlbench.errors import ConfigError
    from tlbench.runner import build

    for override, named in (("dataset.preprocess=center", "dataset.preprocess='center'"),
                            ("dataset.crop_fraction=1.5", "dataset.crop_fraction=1.5"),
                            ("augment=writeup_food", "augment.resize=300")):
        cfg = make_cfg(*TINY, "dataset=imagefolder", f"dataset.root={tmp_path}", override)
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            build.check_settings(cfg)
