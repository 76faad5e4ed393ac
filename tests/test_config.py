"""Every option of every config group composes and builds (lightning-hydra-template style)."""

import pytest
import torch
from conftest import CONF

from tlbench.data import augment
from tlbench import data, models, probes
from tlbench.training import freeze, optim, schedules
from tlbench.errors import ConfigError, DataNotFoundError
from tlbench.runner import settings
from tlbench.runner.build import check_settings

GROUPS = ["model", "dataset", "augment", "optimizer", "schedule", "freeze", "experiment"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_its_documented_options():
    assert {"resnet18", "resnet50", "efficientnet_b0", "mobilenetv2_100", "tf_efficientnet_lite0",
            "tf_efficientnet_lite1", "tf_efficientnet_lite2", "deit_tiny"} <= set(options("model"))
    assert {"cifar10", "cifar100", "imagefolder", "filelist", "imagewoof", "imagenette", "digits",
            "synthetic"} <= set(options("dataset"))
    assert set(options("optimizer")) == {"sgd", "adam", "adamw"}
    assert set(options("schedule")) == {"constant", "plateau", "onecycle", "cosine", "step", "multistep"}
    assert {"none", "linear_probe", "freeze_unfreeze", "gradual", "layer_decay", "logreg", "knn"} <= set(options("freeze"))
    assert {"quickstart", "seed_resnet18_cifar10", "seed_efficientnet_b0_cifar10", "seed_resnet50_imagewoof",
            "seed_resnet18_food20"} <= set(options("experiment"))


@pytest.mark.parametrize("option", options("model"))
def test_model_option_builds_with_a_new_head(make_cfg, option):
    cfg = make_cfg(f"model={option}", "pretrained=false")
    built = models.build_model(num_classes=7, pretrained=False, weights_dir=None, **cfg.model)
    head = dict(built.model.named_parameters())
    assert built.stages[-1] == built.head_params
    assert any(head[n].shape[0] == 7 for n in built.head_params)
    size = 224 if "deit" in option else 32
    with torch.no_grad():
        assert built.model.eval()(torch.zeros(1, 3, size, size)).shape == (1, 7)


@pytest.mark.parametrize("option", ["resnet18", "efficientnet_b0", "resnet50"])
def test_model_builds_through_torchvision(make_cfg, option):
    cfg = make_cfg(f"model={option}", "model.source=torchvision")
    built = models.build_model(num_classes=3, pretrained=False, weights_dir=None, **cfg.model)
    assert built.info["head_module"] in ("fc", "classifier.1")


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_weights_file_loads_every_body_tensor_through_both_sources(make_cfg, tmp_path, source):
    """model.weights_file: the file's tensors, all of them, in the body; the head new (zeros)."""
    torch.manual_seed(1)
    saved = models.build_model("resnet18", source, 1000, False, head_init="normal").model.state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(saved, path)
    cfg = make_cfg("model=resnet18", f"model.source={source}", f"model.weights_file={path}", "pretrained=true")
    torch.manual_seed(2)
    built = models.build_model(num_classes=3, pretrained=True, **cfg.model)
    state = built.model.state_dict()
    assert built.weights_source.startswith("model.weights_file")
    for key, value in state.items():
        if key.startswith("fc."):
            assert value.shape[0] == 3 and torch.count_nonzero(value) == 0, key
        else:
            assert torch.equal(value, saved[key]), key
    del saved["layer1.0.conv1.weight"]
    torch.save(saved, path)
    with pytest.raises(RuntimeError, match=r"missing: layer1.0.conv1.weight"):
        models.build_model(num_classes=3, pretrained=True, **cfg.model)


@pytest.mark.parametrize("source, kwargs, took", [
    ("timm", "{drop_rate:0.25}", lambda m: m.drop_rate == 0.25),
    ("torchvision", "{zero_init_residual:true}",
     lambda m: all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (m.layer1, m.layer4) for b in layer)),
])
def test_model_kwargs_reach_the_builder_through_both_sources(make_cfg, source, kwargs, took):
    cfg = make_cfg("model=resnet18", f"model.source={source}", f"+model.kwargs={kwargs}")
    model = models.build_model(num_classes=3, pretrained=False, **cfg.model).model
    assert took(model)


@pytest.mark.parametrize("option", ["synthetic", "digits"])
def test_offline_dataset_option_builds(make_cfg, option):
    splits = data.build_dataset(**make_cfg(f"dataset={option}").dataset)
    image, label = splits.train[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and 0 <= label < len(splits.classes)


@pytest.mark.parametrize("option", ["cifar10", "cifar100", "imagewoof", "imagenette"])
def test_downloadable_dataset_offline_says_how_to_supply_it(make_cfg, option):
    with pytest.raises(DataNotFoundError, match="dataset.root"):
        data.build_dataset(**make_cfg(f"dataset={option}").dataset)


def test_cifar10_reads_a_local_imagefolder_copy(make_cfg, image_tree):
    splits = data.build_dataset(**make_cfg("dataset=cifar10", f"dataset.root={image_tree}").dataset)
    assert splits.classes == ["cat", "dog"] and splits.image_size == 32
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 4)  # one val image per class of 6


@pytest.mark.parametrize("option", options("augment"))
def test_augment_option_builds_and_keeps_the_size(make_cfg, option):
    cfg = settings.concrete(make_cfg(f"augment={option}"))  # auto: the data set's recipe (crop_flip on cifar10)
    transform = augment.train_transform(48, (0.5,) * 3, (0.5,) * 3, **cfg.augment)
    out = transform(torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizer_option_builds(make_cfg, option):
    factory = optim.OptimizerFactory(**make_cfg(f"optimizer={option}").optimizer)
    model = torch.nn.Linear(2, 2)
    phase = freeze.Phase("all", (freeze.ParamGroup(("weight", "bias")),))
    assert factory.build(model, phase).param_groups[0]["lr"] == factory.lr


@pytest.mark.parametrize("option", options("schedule"))
def test_schedule_option_builds_and_stays_positive(make_cfg, option):
    schedule = schedules.build_schedule(epochs=4, steps_per_epoch=10, **make_cfg(f"schedule={option}").schedule)
    factors = [schedule.factor(step) for step in range(40)]
    assert all(0 <= f <= 1 + 1e-9 for f in factors)


@pytest.mark.parametrize("option", [o for o in options("freeze") if o not in probes.PROBES])  # probes: test_probes.py
def test_freeze_option_builds(make_cfg, option):
    stages = [["a"], ["b"], ["head"]]
    strategy = freeze.build_freeze(stages=stages, total_epochs=10, **make_cfg(f"freeze={option}").freeze,
                                   input_size=224, images_per_class=100)
    assert "head" in strategy.phase(0).trainable


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_preset_composes_and_passes_checks(make_cfg, option):
    """With the values a preset leaves to the user (`???`: the food20 lists) given, as its comment says."""
    from omegaconf import OmegaConf

    given = [f"{key}=/data/{key}.txt" for key in sorted(OmegaConf.missing_keys(make_cfg(f"experiment={option}")))]
    cfg = make_cfg(f"experiment={option}", *given)
    check_settings(cfg)
    assert cfg.epochs >= 1


def test_seed_preset_a_matches_the_write_up(make_cfg):
    cfg = make_cfg("experiment=seed_resnet18_cifar10")
    assert (cfg.model.name, cfg.model.source, cfg.batch_size, cfg.epochs) == ("resnet18", "torchvision", 64, 10)
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("adam", 1e-3, 1e-4)
    assert (cfg.schedule.name, cfg.schedule.monitor, cfg.schedule.factor, cfg.schedule.patience) == \
        ("plateau", "val_loss", 0.5, 2)
    assert (cfg.freeze.name, cfg.freeze.epochs, cfg.freeze.backbone_lr) == ("freeze_unfreeze", 5, 1e-4)
    assert list(cfg.augment.color_jitter) == [0.2, 0.2, 0.2, 0.1] and cfg.augment.rotation_deg == 15
    # the write-up's own protocol, not tlbench's default recipe: plain cross-entropy, torch's Linear init,
    # weight decay on every parameter, best epoch and plateau on the test split
    assert (cfg.label_smoothing, cfg.model.head_init, cfg.optimizer.filter_bias_and_bn) == (0.0, "linear", False)
    assert cfg.dataset.val_split == 0


@pytest.mark.parametrize("overrides, message", [
    (["epochs=0"], "epochs=0 must be a positive integer"),
    (["batch_size=-2"], "batch_size=-2 must be a positive integer"),
    (["freeze=freeze_unfreeze", "freeze.epochs=5", "epochs=3"], "freeze.epochs=5 must be between 0 and epochs=3"),
    (["optimizer=adam", "+optimizer.momentum=0.9"], "optimizer=adam: .*momentum"),
    (["schedule=plateau", "schedule.monitor=train_loss"], "schedule.monitor='train_loss'"),
    (["dataset.image_size=-5"], "dataset.image_size=-5 must be a positive size"),
    (["dataset.train_fraction=1.5"], r"dataset.train_fraction=1.5 must be in \(0, 1\]"),
    (["dataset.val_split=1.5"], r"dataset.val_split=1.5 must be a fraction in \[0, 1\)"),
    (["augment.pad_mode=wrap"], "augment.pad_mode='wrap' is not known; use one of constant, reflect, edge, symmetric"),
    (["augment.hflip=often"], r"augment.hflip='often' is text where a number belongs; write augment.hflip=<a number>"),
    (["+augment.blur=3"], "augment does not take blur"),
    (["augment.random_resized_crop=[0.9,0.2]"], "augment.random_resized_crop=.* 0 < min <= max <= 1"),
    (["batch_size=2.5"], "batch_size: Value '2.5'"),
    # a quoted number or a word for true/false: the code reads the composed config, where '3' would crash and
    # 'no' would be true, so they fail here, naming the override that works
    (["epochs='2'"], r"epochs='2' is text where a number belongs; write epochs=2 \(without quotes\)"),
    (["freeze=bitfit", "freeze.lr_ratio='3'"], r"freeze.lr_ratio='3' is text where a number belongs; write "
                                             r"freeze.lr_ratio=3 \(without quotes\)"),
    (["freeze=freeze_unfreeze", "freeze.epochs='1'"], r"freeze.epochs='1' is text .* write freeze.epochs=1 "),
    (["freeze=layer_decay", "freeze.decay='0.5'"], r"freeze.decay='0.5' is text .* write freeze.decay=0.5 "),
    (["freeze=bitfit", "freeze.train_bn='no'"], r"freeze.train_bn='no' is text where true or false belongs; write "
                                                r"freeze.train_bn=false \(without quotes\)"),
    (["dataset.image_size='96'"], r"dataset.image_size='96' is text .* write dataset.image_size=96 "),
    (["schedule=step", "schedule.step_epochs='2'"], r"schedule.step_epochs='2' is text .* schedule.step_epochs=2 "),
    (["label_smoothing=1.2"], r"label_smoothing=1.2 must be in \[0, 1\)"),
    (["data.pipeline=dali"], "data.pipeline='dali' is not known"),
    (["model.head_init=xavier"], "model.head_init='xavier' is not known; use one of zeros, normal, library, linear"),
    (["amp=maybe"], "amp='maybe' must be auto, true or false"),
])
def test_bad_settings_fail_before_training_naming_the_value(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_settings(make_cfg(*overrides))


def test_unknown_model_name_suggests_close_timm_names():
    with pytest.raises(ConfigError, match="closest timm names: resnet18"):
        models.check_model_name("resnet-18", "timm")


def test_unknown_group_option_lists_the_valid_ones(make_cfg):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=r"Could not find 'freeze/linear'\s+Available options in "
                                                     r"'freeze':\s+bitfit\s+freeze_unfreeze\s+gradual\s+knn\s+"
                                                     r"layer_decay\s+linear_probe\s+logreg\s+lora\s+none"):
        make_cfg("freeze=linear")
