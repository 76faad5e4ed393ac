"""Data sets by name (the `dataset` group), one module per source family: memory.py (digits,
synthetic), local.py (the user's ImageFolder or file lists), cifar.py, fastai.py, transfer.py
(Kornblith et al. 2019's transfer sets, EuroSAT, SVHN, CLEVR, through torchvision's classes), vtab.py
(VTAB's other tasks), both finding their copies through sources.py, hf.py (Hugging Face `datasets`: a
Hub name or a local copy). Each builder returns the raw train and test splits
(and val where the set has an official one); build_dataset carves validation and training subsets
the same way for all of them, and transforms are added afterwards, so one builder serves every
model and augmentation."""

import inspect

from tlbench import specs
from tlbench.data import cifar, fastai, hf, local, memory, retinopathy, transfer, vtab
from tlbench.data.splits import (DataSplits, TensorImages, Transformed, carve_validation, cut_training,
                                 offline, stratified_indices, subset, targets_of, train_on_train_val)
from tlbench.errors import ConfigError

BUILDERS = {
    "cifar10": cifar.cifar10, "cifar100": cifar.cifar100, "imagefolder": local.imagefolder,
    "filelist": local.filelist, "imagewoof": fastai.imagewoof, "imagenette": fastai.imagenette,
    "digits": memory.digits, "synthetic": memory.synthetic,
    "food101": transfer.food101, "fgvc_aircraft": transfer.fgvc_aircraft, "stanford_cars": transfer.stanford_cars,
    "dtd": transfer.dtd, "oxford_pets": transfer.oxford_pets, "caltech101": transfer.caltech101,
    "flowers102": transfer.flowers102, "sun397": transfer.sun397, "eurosat": transfer.eurosat, "clevr": transfer.clevr, "clevr_distance": transfer.clevr_distance,
    "svhn": transfer.svhn,
    "resisc45": vtab.resisc45, "patch_camelyon": vtab.patch_camelyon, "kitti_distance": vtab.kitti_distance,
    "dsprites_location": vtab.dsprites_location, "dsprites_orientation": vtab.dsprites_orientation,
    "smallnorb_azimuth": vtab.smallnorb_azimuth, "smallnorb_elevation": vtab.smallnorb_elevation,
    "diabetic_retinopathy": retinopathy.diabetic_retinopathy, "dmlab": vtab.dmlab,
    "hf": hf.hf,
}

__all__ = ["BUILDERS", "DataSplits", "TensorImages", "Transformed", "build_dataset", "offline",
           "stratified_indices", "subset", "targets_of"]


def build_dataset(name: str, val_split: float = 0.1, split_seed: int = 0, train_fraction: float = 1.0,
                  train_per_class: int | None = None, train_images: int | None = None, subset_seed: int = 0,
                  test_fraction: float = 1.0, on_bad_image: str = "fail", preprocess: str = "squash",
                  crop_fraction="model", metric: str | None = None, train_on: str = "train",
                  **kwargs) -> DataSplits:
    """`val_split`: the stratified fraction of the training split held out for validation, or an
    integer >= 1, that many images (drawn with `split_seed`, not the run's seed, so every run of a
    sweep validates on the same images); 0 = validate on the test split (the write-ups' protocol:
    every "best" number is then selected on the reported split). What is left for training can be
    cut to `train_fraction` of every class, to `train_per_class` images of every class (k-shot) or
    to `train_images` images in all (VTAB-1k), drawn with `subset_seed`: the
    validation split stays the same for every size, and the draws are nested (the 10-shot subset
    holds the 5-shot one), so a data-efficiency curve changes one thing at a time.
    `test_fraction`: a stratified part of the test split (fixed seed). `preprocess`, `crop_fraction`:
    how images become squares (specs.Preprocess; crop_fraction `model` is the field's 0.875 here,
    the weights' own once the run layer knows the model). `metric`: what selects and is reported, in place of
    the data set's own (its literature's, DataSplits.metric); None keeps that. `train_on`: train_val trains on
    train + val once they are cut (a select-then-refit protocol's refit); val is then the test split."""
    if name not in BUILDERS:
        raise ConfigError(f"dataset.name={name!r} is not known; use one of {', '.join(BUILDERS)}")
    builder = BUILDERS[name]
    specs.DatasetSplits(val_split=val_split, split_seed=split_seed, on_bad_image=on_bad_image,  # range checks
                        train_fraction=train_fraction, train_per_class=train_per_class, train_images=train_images,
                        subset_seed=subset_seed, test_fraction=test_fraction, image_size=kwargs.get("image_size", 1),
                        preprocess=preprocess, crop_fraction=crop_fraction, metric=metric,
                        train_on=train_on)
    accepted = inspect.signature(builder).parameters
    if "split_seed" in accepted:
        kwargs["split_seed"] = split_seed
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}")
    splits = builder(**kwargs)
    splits.on_bad_image = on_bad_image
    splits.metric = metric or splits.metric
    splits.preprocess = specs.preprocess(preprocess, crop_fraction)
    carve_validation(splits, val_split, split_seed)
    cut_training(splits, train_fraction, train_per_class, subset_seed, train_images)
    if train_on == "train_val":
        train_on_train_val(splits)
    if test_fraction < 1:
        kept = subset(splits.test, stratified_indices(targets_of(splits.test), test_fraction))
        splits.val = kept if splits.val_is_test else splits.val
        splits.test = kept
    return splits
