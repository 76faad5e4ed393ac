"""A new classifier starts neutral: the first loss is about ln(C) for every model option and class
count, with random weights and with real ImageNet weights; and a linear probe on real lite0
features learns real CIFAR-10 classes (../shared, skipped when absent)."""

import math
import subprocess

import pytest
import torch
import torch.nn.functional as F

from conftest import CONF, SHARED
from tlbench import models
from tlbench.runner.run import run

MODEL_OPTIONS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
LITE0 = SHARED / "weights" / "tf_efficientnet_lite0.in1k.pth"


def first_loss(built, num_classes: int, size: int) -> float:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, size, size, generator=generator)
    images = (images - torch.tensor(built.mean)[:, None, None]) / torch.tensor(built.std)[:, None, None]
    labels = torch.randint(0, num_classes, (8,), generator=generator)
    built.model.eval()  # BN on running statistics, as the first eval would see it; train mode gives the same init
    with torch.no_grad():
        return F.cross_entropy(built.model(images), labels).item()


@pytest.mark.parametrize("option", MODEL_OPTIONS)
def test_first_loss_is_about_ln_c_for_every_model_option(make_cfg, option):
    cfg = make_cfg(f"model={option}", "pretrained=false")
    size = 224 if "deit" in cfg.model.name else 64
    for num_classes in (2, 10, 100):
        built = models.build_model(num_classes=num_classes, pretrained=False, **cfg.model)
        loss = first_loss(built, num_classes, size)
        assert loss == pytest.approx(math.log(num_classes), rel=0.15), (option, num_classes, loss)
        assert built.info["head_init"] == "zeros"


def test_first_loss_with_real_lite0_weights_is_about_ln_c():
    if not LITE0.is_file():
        pytest.skip("../shared/weights is not present")
    for num_classes in (2, 10, 100):
        built = models.build_model("tf_efficientnet_lite0", "timm", num_classes, True, weights_file=LITE0)
        assert first_loss(built, num_classes, 96) == pytest.approx(math.log(num_classes), rel=0.15)


@pytest.mark.parametrize("head_init", ["zeros", "normal"])
def test_head_init_touches_only_the_head(head_init):
    torch.manual_seed(0)
    library = models.build_model("resnet18", "timm", 5, False, head_init="library").model.state_dict()
    torch.manual_seed(0)
    built = models.build_model("resnet18", "timm", 5, False, head_init=head_init)
    state = built.model.state_dict()
    changed = {k for k in state if not torch.equal(state[k], library[k])}
    assert changed == {"fc.weight", "fc.bias"} - ({"fc.bias"} if head_init == "zeros" else set()) or \
        changed == {"fc.weight", "fc.bias"}
    assert torch.count_nonzero(state["fc.bias"]) == 0
    if head_init == "normal":
        assert 0.005 < state["fc.weight"].std().item() < 0.02


# Model options with a torchvision builder too: (option, source, model.name there, the head's module).
BOTH_SOURCES = [(option, source, name if source == "torchvision" else None, head)
                for option, name, heads in (("resnet18", "resnet18", ("fc", "fc")),
                                            ("efficientnet_b0", "efficientnet_b0", ("classifier", "classifier.1")),
                                            ("mobilenetv2_100", "mobilenet_v2", ("classifier", "classifier.1")))
                for source, head in zip(("timm", "torchvision"), heads)]
NUM_CLASSES = 5


def build(make_cfg, option, source, name, head_init, seed=0):
    overrides = [f"model={option}", f"model.source={source}", f"model.head_init={head_init}", "pretrained=false"]
    cfg = make_cfg(*overrides, *([f"model.name={name}"] if name else []))
    torch.manual_seed(seed)
    return models.build_model(num_classes=NUM_CLASSES, pretrained=False, **cfg.model)


def library_model(option, source, name, seed=0):
    """The builder's own model with a new NUM_CLASSES classifier, written out without tlbench."""
    import timm
    import torchvision

    torch.manual_seed(seed)
    if source == "timm":
        return timm.create_model(option, pretrained=False, num_classes=NUM_CLASSES)
    model = torchvision.models.get_model(name, weights=None)
    if name == "resnet18":
        model.fc = torch.nn.Linear(model.fc.in_features, NUM_CLASSES)
    else:
        model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, NUM_CLASSES)
    return model


@pytest.mark.parametrize("head_init", ["zeros", "normal", "library", "linear"])
@pytest.mark.parametrize("option, source, name, head_module", BOTH_SOURCES)
def test_head_init_through_both_sources(make_cfg, option, source, name, head_module, head_init):
    """Every head_init acts on the classifier of a timm and of a torchvision model alike, and on
    nothing else: the body is the library's own init."""
    built = build(make_cfg, option, source, name, head_init)
    assert built.info["head_module"] == head_module and built.info["head_init"] == head_init
    head = built.model.get_submodule(head_module)
    weight, bias = head.weight.detach(), head.bias.detach()
    assert weight.shape[0] == NUM_CLASSES and sorted(built.head_params) == [f"{head_module}.bias", f"{head_module}.weight"]
    bound = 1 / math.sqrt(weight.shape[1])  # nn.Linear's own init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias
    if head_init == "zeros":
        assert torch.count_nonzero(weight) == 0 and torch.count_nonzero(bias) == 0
        assert first_loss(built, NUM_CLASSES, 64) == pytest.approx(math.log(NUM_CLASSES), rel=1e-6)
    elif head_init == "normal":
        assert torch.count_nonzero(bias) == 0 and weight.mean().abs() < 0.002
        assert weight.std().item() == pytest.approx(0.01, rel=0.1)
    elif head_init == "linear":
        assert weight.abs().max() <= bound and bias.abs().max() <= bound and torch.count_nonzero(bias) == NUM_CLASSES
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    library = library_model(option, source, name).state_dict()
    state = built.model.state_dict()
    assert state.keys() == library.keys()
    changed = {key for key in state if not torch.equal(state[key], library[key])}
    if head_init == "library":
        assert not changed, "library keeps the builder's own head"
    else:
        assert changed <= {f"{head_module}.weight", f"{head_module}.bias"} and f"{head_module}.weight" in changed


@pytest.fixture(scope="module")
def cifar_two_classes(tmp_path_factory):
    archive = SHARED / "data" / "cifar10-jpg.tar.gz"
    if not archive.is_file() or not LITE0.is_file():
        pytest.skip("../shared data or weights are not present")
    root = tmp_path_factory.mktemp("cifar")
    members = [f"cifar10-jpg/{split}/{name}" for split in ("train", "test") for name in ("cat", "ship")]
    subprocess.run(["tar", "xzf", str(archive), "-C", str(root), *members], check=True)
    return root / "cifar10-jpg"


@pytest.mark.slow
def test_a_linear_probe_on_real_lite0_features_learns_real_cifar_classes(make_cfg, cifar_two_classes, tmp_path):
    cfg = make_cfg("model=tf_efficientnet_lite0", f"model.weights_file={LITE0}", "pretrained=true",
                   "freeze=linear_probe", "dataset=imagefolder", f"dataset.root={cifar_two_classes}",
                   "dataset.image_size=32", "input_size=64", "dataset.train_fraction=0.05",
                   "dataset.val_split=0.02", "dataset.test_fraction=0.2", "epochs=3", "batch_size=32")
    result = run(cfg, output_dir=tmp_path / "probe")
    first = result["iter_loss"][0]
    assert first == pytest.approx(math.log(2), rel=0.15)
    # Measured 2026-11-24 on the 2-core CPU (torch 2.14.1), 490 train / 400 test images, cat vs ship,
    # defaults (head at 10 x 1e-3): test acc at the val-chosen epoch 94.5 / 94.0 / 94.75% (seeds 0-2);
    # final 88.25 / 94.25 / 87.0% (the large head step oscillates on this tiny binary set). A broken
    # head init, freeze or normalization drops it towards 50%.
    assert result["summary"]["test_acc_at_best_val"] > 0.90, result["summary"]
