"""Typed specs: what the run layer (tlbench/runner/) turns the composed config into, and what the
code below it takes. Plain dataclasses with their range checks in `__post_init__`: no torch, no
OmegaConf. Each default here is the code's own; the YAML under conf/ is what a run composes, and
tests/test_defaults.py holds the two together. shared.py: the settings every run shares;
options.py: one dataclass per option of the freeze, optimizer and schedule groups, and the probes."""

from tlbench.specs.checks import closed, require
from tlbench.specs.options import (FREEZES, OPTIMIZERS, PROBES, REFIT_CHOICES, SCHEDULES, AdamSettings,
                                   AdamWSettings, BitFitSettings, ConstantSchedule, CosineSchedule, Freeze,
                                   FreezeUnfreezeSettings, GradualSettings, Knn, LayerDecaySettings,
                                   LinearProbeSettings, Logreg, LoraSettings, NoFreezeSettings, OneCycleSchedule,
                                   OptimizerSettings, PlateauSchedule, SgdSettings, StepSchedule, SurgicalSettings,
                                   freeze, optimizer,
                                   schedule)
from tlbench.specs.shared import (AUTO_FLAGS, BAD_IMAGE_CHOICES, HEAD_INITS, METRICS, MODEL_SOURCES, PAD_MODES,
                                  PIPELINES, PREPROCESSES, SELECT_RULES, SHIFT_DEFINITIONS, SQUASH, DEFAULT_CROP_FRACTION, Augment, DataPath,
                                  DatasetSplits, Defects, Ema, FeatureSpec, L2SP, Shift, LrFind, Mix, ModelSettings, Preprocess, Training,
                                  augment, epoch_rule, preprocess)

__all__ = [
    "closed", "require",
    "FREEZES", "OPTIMIZERS", "PROBES", "REFIT_CHOICES", "SCHEDULES", "AdamSettings", "AdamWSettings",
    "BitFitSettings", "ConstantSchedule", "CosineSchedule", "Freeze", "FreezeUnfreezeSettings", "GradualSettings",
    "Knn", "LayerDecaySettings", "LinearProbeSettings", "Logreg", "LoraSettings", "NoFreezeSettings",
    "OneCycleSchedule", "OptimizerSettings", "PlateauSchedule", "SgdSettings", "StepSchedule", "SurgicalSettings",
    "freeze", "optimizer",
    "schedule",
    "AUTO_FLAGS", "BAD_IMAGE_CHOICES", "HEAD_INITS", "METRICS", "MODEL_SOURCES", "PAD_MODES", "PIPELINES",
    "PREPROCESSES",
    "SELECT_RULES", "SHIFT_DEFINITIONS", "SQUASH", "DEFAULT_CROP_FRACTION", "Preprocess", "preprocess", "Augment",
    "DataPath", "DatasetSplits", "Defects", "Ema", "FeatureSpec", "Shift", "L2SP", "LrFind", "Mix", "ModelSettings", "Training", "augment",
    "epoch_rule",
]
