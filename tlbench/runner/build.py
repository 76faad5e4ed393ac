"""The run layer's build step: the composed config checked (settings.py) and turned into the
objects the layers below take: data splits and the model (`prepare`), the freeze strategy, the
loaders, the training core's options, the optimizer factory, the schedule's settings and a probe's
feature spec. `run.py` orchestrates a run with them; the LR finder command builds with them too."""

import functools
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from tlbench import data, models, probes, specs
from tlbench.data import augment, corruptions, image_check, tensor_data
from tlbench.errors import ConfigError, DataNotFoundError, StartupError, WeightsNotFoundError
from tlbench.models import adapters
from tlbench.records import results
from tlbench.runner import devices, settings
from tlbench.specs import FeatureSpec
from tlbench.training import compiled, engine, freeze, optim, schedules, step
from tlbench.training.lr_find import FindingOptimizers
from tlbench.training.optim import OptimizerFactory


def placed_model(cfg, built: models.BuiltModel, device, options, strategy) -> torch.nn.Module:
    """The model on `device` as it trains: channels_last, cuDNN autotuning and torch.compile as asked."""
    model = built.model.to(device)
    if options.channels_last:
        model = models.channels_last(model)
    if device.type == "cuda" and not cfg.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    if cfg.compile:
        model = compiled.Compiled(model, compiled.graphs_needed(strategy, cfg.epochs))
    return model


def model_info(built: models.BuiltModel) -> dict:
    """result.json `model_info` (built.info is a live dict: freeze=lora adds its adapters to it later)."""
    return {"weights_source": built.weights_source, "total_params": models.count_params(built.model),
            "head_params": built.head_params, "stages": len(built.stages), **built.info}


def feature_spec(cfg, built: models.BuiltModel, device) -> FeatureSpec:
    """How freeze=knn / logreg extract their features: the evaluation preprocessing of this run."""
    mean, std = augment.resolve_normalization(cfg.normalize, built.mean, built.std)
    return FeatureSpec(model_name=cfg.model.name, model_source=cfg.model.source,
                       model_kwargs=OmegaConf.to_container(cfg.model.kwargs, resolve=True) if cfg.model.get("kwargs")
                       else {}, mean=mean, std=std, input_size=cfg.input_size,
                       eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
                       amp=devices.resolve_flag(cfg.amp, device), cache_dir=cfg.data.cache_dir,
                       dataset_name=cfg.dataset.name, decode_workers=cfg.data.decode_workers,
                       device_budget_gb=cfg.data.device_budget_gb)


def probe_head(cfg, built: models.BuiltModel, splits, device, dataset_identity: dict) -> dict:
    """model.head_init=probe (LP-FT, Kumar et al. 2022): the new head set to a logistic regression fitted on
    the starting backbone's features (freeze=logreg's defaults and feature cache; raw features, C chosen as that
    probe chooses it), so fine-tuning starts from a fitted head. The fit sees the training split only
    (`head_probe_fit: train`; C by cross-validation over it when val is small): the fine-tuning after it
    chooses its epoch, WiSE-FT its mix and a soup its members on val, which a head fitted on val would have
    seen (`train_val`, runs before 2026-12-07: val accuracy far above test). With `head_probe_bn=recompute` the
    backbone's BatchNorm statistics are first measured on the training batches (torch's update_bn), so the
    features the probe fits are the ones the fine-tuning's train-mode forward starts from; with the starting
    statistics (`running`) a BatchNorm network fed other images than it was trained on gives its head other
    features in train mode than the probe saw. Returns result.json `head_probe`."""
    import copy
    import dataclasses

    from tlbench.probes import features

    head = built.model.get_submodule(built.head_params[0].rsplit(".", 1)[0])
    if not isinstance(head, torch.nn.Linear) or set(built.head_params) != {n for n, _ in head.named_parameters(
            prefix=built.head_params[0].rsplit(".", 1)[0])}:
        raise ConfigError(f"model.head_init=probe fits a linear head, and {cfg.model.name}'s new head is not one "
                          f"linear layer ({', '.join(built.head_params)}); use model.head_init=zeros")
    if cfg.head_probe_bn == "recompute":  # the statistics the fine-tuning's first steps see: train mode, its images
        from tlbench.training import wise

        where = next(built.model.parameters()).device
        wise.bn_recompute(make_loaders(cfg, splits, built, device)["train"], device)(built.model.to(device))
        built.model.to(where)
    shadow = dataclasses.replace(built, model=copy.deepcopy(built.model))  # a torchvision head becomes identity
    found, used = features.split_features(feature_spec(cfg, built, device), splits, shadow, device, dataset_identity)
    setting, kept = specs.Logreg(), {}
    fit_on_val = cfg.head_probe_fit == "train_val"
    metrics, details = probes.logreg(found["train"], found["val"], found.get("test", found["val"]), setting,
                                     len(splits.classes), val_is_test="test" not in found, metric=splits.metric,
                                     keep=kept, fit_on_val=fit_on_val)
    weight, bias = probes.as_linear(kept["model"], len(splits.classes))
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    held_out = {} if fit_on_val else {"val_acc": probes.scores(kept["model"], found["val"], len(splits.classes))["acc"]}
    return {"C": details["C"], "C_chosen_on": details["C_chosen_on"], "fit_images": details["fit_images"],
            "fit_on": "train_val" if fit_on_val and details["refit_on"] == "train_val" else "train",
            "bn": cfg.head_probe_bn,
            "val_acc": metrics["val_acc"], "test_acc": metrics["test_acc"], **held_out, **used}


def adapt(cfg, built: models.BuiltModel) -> dict:
    """What a freeze strategy needs to know of the model, from the model: its normalisation-layer
    parameters (bitfit), its LoRA adapters (lora: injected into `built.model` here, recorded in
    `built.info`; before the model moves or compiles, and before the loaders are built, so that the
    adapters' random init draws the same random numbers as it always has)."""
    facts = {}
    if cfg.freeze.name == "bitfit":
        facts["norm_params"] = adapters.norm_param_names(built.model)
    if cfg.freeze.name == "lora":
        built.info["lora"] = adapters.inject_lora(built.model, built.info["head_module"], cfg.freeze.rank,
                                                  cfg.freeze.alpha, cfg.freeze.dropout,
                                                  OmegaConf.to_container(cfg.freeze, resolve=True)["target_modules"])
        facts["adapter_params"] = adapters.adapter_param_names(built.model)
    return facts


def build_strategy(cfg, built: models.BuiltModel, facts: dict, info: dict) -> freeze.FreezeStrategy:
    """The run's freeze strategy (`facts`: adapt's; `info`: data_info's, for the input size and the images per
    class) with the write-ups' defects applied (`defects.*`), over cfg.epochs: the budgeted config's (`budgeted`)."""
    strategy = freeze.build_freeze(stages=built.stages, total_epochs=cfg.epochs, **cfg.freeze, **facts,
                                   input_size=input_side(cfg, info), images_per_class=images_per_class(info),
                                   pretrained=bool(cfg.pretrained))
    return freeze.as_published(strategy, **cfg.defects)


def input_side(cfg, info: dict) -> int:
    """The side of the squares the model is fed: input_size, else the data set's image size."""
    return cfg.input_size or info["image_size"]


def images_per_class(info: dict) -> float:
    """The training images (those the run trains on, after any skipped) per class, on average."""
    return info["train_size"] / info["num_classes"]


def resolved(cfg, info: dict, steps_per_epoch: int | None = None) -> dict:
    """result.json `resolved`: each setting given as auto (or by a rule) that the run decides, with its value."""
    decided = {}
    if not cfg.pretrained and random_init_ratio(cfg) != 1 and not wanted(cfg.optimizer):
        decided["optimizer.lr"] = random_init_lr(cfg).optimizer.lr
    if cfg.freeze.name == "linear_probe" and cfg.freeze.get("head_lr_ratio") == "auto":
        settings = specs.LinearProbeSettings(head_lr_ratio="auto")
        decided["freeze.head_lr_ratio"] = settings.ratio_for(input_side(cfg, info))
    if cfg.freeze.name == "lora" and cfg.freeze.get("lr_ratio") == "auto":
        decided["freeze.lr_ratio"] = specs.LoraSettings(lr_ratio="auto").ratio_for(images_per_class(info),
                                                                                   bool(cfg.pretrained))
    if isinstance(cfg.get("bn_momentum"), str) and steps_per_epoch:
        decided["bn_momentum"] = training_settings(cfg).bn_momentum_for(steps_per_epoch)
    return decided


def training_settings(cfg) -> specs.Training:
    return settings.checked(specs.Training, cfg)


def epoch_rule(cfg) -> str:
    """The rule that picks this run's val-chosen epoch: select_epoch, or random_init_select_epoch from random
    weights (specs.Training.epoch_rule); summary.select_epoch records it."""
    return training_settings(cfg).epoch_rule()


def set_bn_momentum(cfg, model: torch.nn.Module, steps_per_epoch: int) -> None:
    """Every BatchNorm layer's momentum as `bn_momentum` asks; null leaves the model's own."""
    momentum = training_settings(cfg).bn_momentum_for(steps_per_epoch)
    if momentum is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = momentum


def budget(cfg, train_loader) -> schedules.Budget:
    """The run's budget: exactly cfg.steps optimizer steps when set, else cfg.epochs, raised to
    min_steps optimizer steps over this training split."""
    return schedules.Budget(cfg.epochs, cfg.min_steps, len(train_loader), cfg.get("steps"))


def random_init_ratio(cfg) -> float:
    """The multiple of optimizer.lr a pretrained=false run trains at: the freeze option's own random_init_lr_ratio
    where it has one (BitFit), else the top-level key (which its identity then leaves out)."""
    own = cfg.freeze.get("random_init_lr_ratio")  # BitFit has it (checked: a positive number)
    return float(own if own is not None else cfg.get("random_init_lr_ratio", 1.0))


def random_init_lr(cfg):
    """`cfg` with the lr a random-init run trains at: optimizer.lr x random_init_ratio for pretrained=false
    (a copy; a numeric lr only: lr=find measures its own), else `cfg` itself. result.json's config keeps the lr as
    configured (the run's identity holds the ratio); `resolved` records the lr trained at."""
    ratio = random_init_ratio(cfg)
    if cfg.pretrained or ratio == 1 or wanted(cfg.optimizer):
        return cfg
    cfg = cfg.copy()
    cfg.optimizer.lr = float(cfg.optimizer.lr) * ratio
    return cfg


def budgeted(cfg, run_budget: schedules.Budget):
    """`cfg` with the epochs the run trains (a copy when min_steps raised them or `steps` set them), so
    that the strategy, the schedule, the training core and compile all count the same epochs.
    result.json's config keeps the epochs as configured (the run's identity); its `budget` records what ran."""
    if not run_budget.changed:
        return cfg
    cfg = cfg.copy()
    cfg.epochs = run_budget.epochs
    return cfg


def core_options(cfg, device, model, num_classes: int, stages: list | None = None, **where) -> engine.TrainOptions:
    """How the training core steps `model` (precision, memory format, loss, mixing, penalty, clipping), shared by
    the run and the LR finder; `stages`: the model's parameter names by depth, head last (for L2-SP);
    `where`: the run's checkpoint and progress settings."""
    return engine.TrainOptions(
        epochs=cfg.epochs, steps=cfg.get("steps"), amp=devices.resolve_flag(cfg.amp, device),
        channels_last=devices.resolve_channels_last(cfg.channels_last, device, models.has_depthwise_conv(model)),
        label_smoothing=cfg.label_smoothing, mix=batch_mix(cfg, num_classes), penalty=l2sp_penalty(cfg, model, stages),
        sigmoid_before_loss=cfg.defects.sigmoid_before_loss,
        clip_grad_norm=cfg.clip_grad_norm, clip_grad_value=cfg.clip_grad_value, **where)


def weight_ema(cfg, model):
    """timm's ModelEmaV3 of `model` as it is now (the `ema` block), or None while it is off."""
    setting = settings.ema(cfg.get("ema") or {})
    if not setting.active:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=setting.decay, use_warmup=setting.warmup)


def l2sp_penalty(cfg, model, stages: list | None) -> step.L2SP | None:
    """L2-SP's penalty for the `l2sp` block, toward `model`'s weights as they are now (the starting point:
    the pretrained weights before training, also on a resumed attempt), or None while it is off."""
    setting = settings.l2sp(cfg.get("l2sp") or {})
    if not setting.active:
        return None
    params = dict(model.named_parameters())
    body = [params[name] for stage in stages[:-1] for name in stage if name in params]
    head = [params[name] for name in stages[-1] if name in params]
    return step.L2SP(body, head, setting.alpha, setting.beta)


def batch_mix(cfg, num_classes: int):
    """timm's Mixup for the `mix` block (its label smoothing is the run's), or None while it is off."""
    mix = settings.mix(cfg.get("mix") or {})
    if not mix.active:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=mix.mixup_alpha, cutmix_alpha=mix.cutmix_alpha, prob=mix.prob,
                 switch_prob=mix.switch_prob, label_smoothing=cfg.label_smoothing, num_classes=num_classes)


def schedule_settings(schedule_cfg, metric: str) -> dict:
    """The schedule group's settings; a plateau watching val_acc watches the data set's metric on
    val (val_mean_class_acc where mean per-class accuracy is the reported one), as selection does."""
    settings = dict(schedule_cfg)
    if settings.get("monitor") == "val_acc":
        settings["monitor"] = results.selection_field(metric)
    return settings


def check_shift(cfg) -> None:
    """test_shift's corruptions are ones built here, and the tensor pipeline holds the test split to corrupt."""
    setting = settings.shift(cfg.get("test_shift") or {})
    if not setting.active or probes.is_probe(cfg.freeze.name):
        return
    corruptions.chosen(setting.corruptions, setting.definitions)
    if cfg.data.pipeline != "tensor":
        raise ConfigError(f"test_shift corrupts the decoded test split of data.pipeline=tensor, not "
                          f"data.pipeline={cfg.data.pipeline}; set data.pipeline=tensor or test_shift.corruptions=null")


def shift_scorer(cfg, test_loader: tensor_data.DeviceBatches, device, options):
    """For `test_shift`: a function of a model giving result.json `test_shift` (its top-1 on the test split's
    images, a draw of `test_shift.images`, clean and under each corruption at each severity); None while it is
    off. The corrupted images are made here, once, into data.cache_dir, so every run of a sweep on the same
    test split shares them, and each call reads them back."""
    setting = settings.shift(cfg.get("test_shift") or {})
    if not setting.active:
        return None
    names = corruptions.chosen(setting.corruptions, setting.definitions)
    keep = torch.as_tensor(corruptions.drawn(len(test_loader.labels), setting.images, setting.seed))
    images, labels = test_loader.images.cpu()[keep], test_loader.labels.cpu()[keep]
    budget = cfg.data.device_budget_gb * 2**30
    corrupted = {(name, level): functools.partial(corruptions.corrupted_split, images, name, level, setting.seed,
                                                  cfg.data.cache_dir, setting.definitions)
                 for name in names for level in setting.severities}
    for make in corrupted.values():
        make()

    def accuracy(model, batch: torch.Tensor) -> float:
        split = tensor_data.CachedSplit(batch, labels, None, False)
        loader = tensor_data.DeviceBatches(split, test_loader.batch_size, test_loader.transform, device, False,
                                           cfg.seed, budget)
        return engine.evaluate(model, loader, device, options)[1]

    def scores(model) -> dict:
        started = time.perf_counter()
        scored = options.eval_view(model) if options.eval_view else model
        acc = {name: {str(level): accuracy(scored, corrupted[name, level]()) for level in setting.severities}
               for name in names}
        every = [value for levels in acc.values() for value in levels.values()]
        return {"kind": "corruptions", "definitions": setting.definitions, "images": len(labels), "seed": setting.seed,
                "severities": list(setting.severities), "clean_acc": accuracy(scored, images), "acc": acc,
                "mean_acc": sum(every) / len(every),
                "mean_acc_by_severity": {str(level): sum(acc[n][str(level)] for n in names) / len(names)
                                         for level in setting.severities},
                "time_s": time.perf_counter() - started}
    return scores


def check_settings(cfg) -> None:
    """Every setting, before any data loads: the shared groups by their schemas (settings.py)."""
    settings.validate(cfg)
    augment.check_preprocess(specs.preprocess(cfg.dataset.get("preprocess", "squash"),
                                              cfg.dataset.get("crop_fraction", "model")),
                             settings.augment(settings.concrete(cfg).augment))
    targets = devices.check_devices(cfg.device, cfg.devices)  # e.g. cuda:3 on a 2-GPU machine fails now
    if probes.is_probe(cfg.freeze.name):
        settings.probe(cfg.freeze, cfg.dataset.val_split)
    else:
        settings.freeze(cfg.freeze, cfg.epochs)
    settings.schedule(cfg.schedule)
    check_refit(cfg)
    check_shift(cfg)
    # The optimizer group passes any keyword on to torch (+optimizer.eps, +optimizer.foreach): the factory
    # checks them against torch's optimizer on the kernels the target device gets (fused on CUDA), now.
    optim.OptimizerFactory(**factory_settings(cfg.optimizer),  # optimizer.lr=find: the other keys
                           fused=any(target.type == "cuda" for target in targets))


def check_refit(cfg) -> None:
    """dataset.train_on=train_val trains on the val split too, so the test split takes its place: nothing may
    be chosen on it (the epoch, a plateau's reductions), and a probe refits on train + val by itself."""
    if cfg.dataset.get("train_on", "train") != "train_val":
        return
    if probes.is_probe(cfg.freeze.name):
        raise ConfigError(f"dataset.train_on=train_val with freeze={cfg.freeze.name}: the probe chooses on val and "
                          "then refits on train + val itself (freeze.refit_on=train_val); leave dataset.train_on=train")
    if epoch_rule(cfg) != "final":
        key = "select_epoch" if epoch_rule(cfg) == cfg.select_epoch else "random_init_select_epoch"
        raise ConfigError(f"dataset.train_on=train_val with {key}={epoch_rule(cfg)} would choose the epoch on the "
                          f"test split (val is trained on); set {key}=final: a refit trains its fixed budget")
    if cfg.schedule.name == "plateau":
        raise ConfigError("dataset.train_on=train_val with schedule=plateau would lower the lr by the test split "
                          "(val is trained on); use a schedule fixed in advance (cosine, step, multistep)")


def prepare(cfg) -> tuple[data.DataSplits, models.BuiltModel]:
    """Data and weights are both checked before anything trains; when both are missing (the
    usual case offline) one error names both, with how to supply each."""
    models.check_model_name(cfg.model.name, cfg.model.source)
    problems, splits, built = [], None, None
    try:
        splits = data.build_dataset(**cfg.dataset)
    except DataNotFoundError as err:
        problems.append(f"data: {err}")
    try:
        built = models.build_model(num_classes=len(splits.classes) if splits else 1000, pretrained=cfg.pretrained,
                                   weights_dir=cfg.weights_dir, **cfg.model)
    except WeightsNotFoundError as err:
        problems.append(f"weights: {err}")
    if len(problems) == 1:
        raise (DataNotFoundError if problems[0].startswith("data") else WeightsNotFoundError)(problems[0])
    if problems:
        raise StartupError("cannot start:\n" + "\n".join(problems))
    splits.preprocess = specs.preprocess(cfg.dataset.get("preprocess", "squash"), cfg.dataset.get("crop_fraction", "model"),
                                         built.crop_fraction)  # `model`: the weights' own crop
    return splits, built


def data_info(splits: data.DataSplits) -> dict:
    """Split sizes count the images actually used (undecodable files skipped are left out)."""
    sizes = {f"{name}_size": len(dataset) - len(splits.skipped.get(name, [])) for name, dataset in splits.named().items()}
    if splits.val_is_test:
        sizes["test_size"] = sizes["val_size"]
    return {"source": splits.source, "classes": splits.classes, "num_classes": len(splits.classes), **sizes,
            "val_is_test": splits.val_is_test, "val_source": splits.val_source, "test_source": splits.test_source,
            "train_subset": splits.train_subset,
            "image_size": splits.image_size, "preprocess": splits.preprocess.describe(), "metric": splits.metric,
            "skipped_images": image_check.summary({name: splits.skipped.get(name, []) for name in splits.named()})}


def make_loaders(cfg, splits: data.DataSplits, built: models.BuiltModel, device) -> dict:
    """{"train", "val", "test"} loaders yielding (images, labels): the tensor path (default) or the
    PIL/DataLoader path. "test" is absent when val is the test split (dataset.val_split=0).
    Undecodable files found while reading are recorded in `splits.skipped` (on_bad_image=skip)."""
    mean, std = augment.resolve_normalization(cfg.normalize, built.mean, built.std)
    input_size = cfg.input_size or splits.image_size
    eval_batch_size = cfg.eval_batch_size or 2 * cfg.batch_size
    if cfg.data.pipeline == "pil":
        return _pil_loaders(cfg, splits, mean, std, input_size, eval_batch_size, device)
    cache = dict(cache_dir=cfg.data.cache_dir, name=cfg.dataset.name, workers=cfg.data.decode_workers,
                 on_bad_image=splits.on_bad_image)
    budget = cfg.data.device_budget_gb * 2**30
    loaders = {}
    for name, dataset in splits.named().items():
        train = name == "train"
        size = (cfg.augment.resize or splits.image_size) if train else splits.image_size  # decoded resolution
        cached = tensor_data.cached_split(dataset, size, split=name, preprocess=splits.preprocess,
                                          view="train" if train else "eval", **cache)
        if cached.skipped:
            splits.skipped[name] = cached.skipped
        transform = tensor_data.BatchTransform(splits.image_size, input_size, mean, std, preprocess=splits.preprocess,
                                               **(cfg.augment if train else {}), train=train)
        loaders[name] = tensor_data.DeviceBatches(cached, cfg.batch_size if train else eval_batch_size, transform,
                                                  device, train, cfg.seed, budget)
    return loaders


def _pil_loaders(cfg, splits, mean, std, input_size, eval_batch_size, device) -> dict:
    common = dict(num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=cfg.num_workers > 0)
    loaders = {}
    for name, dataset in splits.named().items():
        readable, skipped = image_check.without_bad_images(dataset, splits.on_bad_image, cfg.data.decode_workers)
        if skipped:
            splits.skipped[name] = skipped
        if name == "train":
            transform = augment.train_transform(splits.image_size, mean, std, input_size=input_size,
                                                preprocess=splits.preprocess, **cfg.augment)
            loaders[name] = DataLoader(data.Transformed(readable, transform), batch_size=cfg.batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(cfg.seed), **common)
        else:
            transform = augment.eval_transform(splits.image_size, mean, std, input_size=input_size,
                                               preprocess=splits.preprocess)
            loaders[name] = DataLoader(data.Transformed(readable, transform), batch_size=eval_batch_size,
                                       shuffle=False, **common)
    return loaders


def wanted(optimizer_cfg) -> bool:
    return optimizer_cfg.get("lr") == "find"


def factory_settings(optimizer_cfg) -> dict:
    """The optimizer settings with a numeric placeholder for lr=find (to check the other keys)."""
    return {**optimizer_cfg, "lr": 1.0} if wanted(optimizer_cfg) else dict(optimizer_cfg)


def optimizer_factory(cfg, fused: bool, loader, device, options, strategy, folder: Path,
                      found: list | None) -> OptimizerFactory:
    """The run's optimizer factory: plain for a numeric optimizer.lr, FindingOptimizers for find,
    which appends each phase's lr to `found` (result.json's `lr_find`; a resumed run's earlier
    phases are in it already and are not measured again)."""
    if not wanted(cfg.optimizer):
        return OptimizerFactory(**cfg.optimizer, fused=fused)
    return FindingOptimizers(dict(cfg.optimizer), fused, loader, device, options, strategy, cfg.epochs,
                             settings.lr_find(cfg.lr_find), folder, found, folder.parent)
