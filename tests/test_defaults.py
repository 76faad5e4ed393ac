"""One source for every default: the YAML under conf/ and the code's own defaults (the dataclasses
in tlbench/specs/, and the builders that a group option's keys are the arguments of) cannot
disagree silently. Each YAML value that the code also defaults must equal that default, and each
YAML key must be one the code takes."""

import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import yaml

from tlbench import specs
from tlbench.configs import config_dir
from tlbench.runner import settings
from tlbench.training import optim, schedules

CONF = Path(config_dir())


def load(path: Path) -> dict:
    return {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}


def defaults_of(schema) -> dict:
    found = {}
    for f in fields(schema):
        if f.default is not MISSING:
            found[f.name] = f.default
        elif f.default_factory is not MISSING:
            found[f.name] = f.default_factory()
    return found


def disagreements(values: dict, code_defaults: dict, where: str) -> list[str]:
    return [f"{where}: {key}={values[key]!r} in the YAML, {code_defaults[key]!r} in the code"
            for key in values if key in code_defaults and isinstance(values[key], (int, float, str, bool, list))
            and not (isinstance(values[key], str) and "${" in values[key]) and values[key] != code_defaults[key]]


def test_top_level_settings_agree_with_their_schemas():
    config = load(CONF / "config.yaml")
    problems = disagreements(config, defaults_of(specs.Training), "config.yaml")
    for block, schema in (("lr_find", specs.LrFind), ("defects", specs.Defects), ("data", specs.DataPath),
                          ("mix", specs.Mix), ("l2sp", specs.L2SP), ("ema", specs.Ema), ("test_shift", specs.Shift)):
        assert set(config[block]) == {f.name for f in fields(schema)}, f"config.yaml {block} vs specs.{schema.__name__}"
        problems += disagreements(config[block], defaults_of(schema), f"config.yaml {block}")
    assert set(defaults_of(specs.Training)) <= set(config), "a Training setting config.yaml does not have"
    assert not problems, "\n".join(problems)


def test_augment_auto_names_existing_options_for_every_preprocessing():
    auto = load(CONF / "augment" / "auto.yaml")
    assert auto == {"auto": True, **{f.name: None for f in fields(specs.Augment)}}  # every key, null: the recipe's
    assert set(settings.AUTO_AUGMENT) == set(specs.PREPROCESSES)
    for option in settings.AUTO_AUGMENT.values():
        specs.augment(load(CONF / "augment" / f"{option}.yaml"))


@pytest.mark.parametrize("path", sorted(p for p in (CONF / "augment").glob("*.yaml") if p.stem != "auto"),
                         ids=lambda p: p.stem)
def test_augment_options_take_only_augment_keys(path):
    values = load(path)
    specs.augment(values)  # unknown keys fail
    assert set(values) <= {f.name for f in fields(specs.Augment)}


# Keys an option takes that its YAML leaves out, with the default that keeps what the code did before
# specs existed: build_schedule took warmup_epochs for every schedule (plateau warms up; onecycle ignores it).
ACCEPTED_BEYOND_YAML = {"plateau": {"warmup_epochs"}, "onecycle": {"warmup_epochs"}}


def assert_option_matches(path: Path, schemas: dict) -> dict:
    """The option's YAML has exactly its dataclass's keys (`schemas[name]`), each at its default; returns the YAML."""
    values = load(path)
    schema = schemas[values["name"]]
    options = {k: v for k, v in values.items() if k != "name"}
    where = f"{path.parent.name}/{path.name}"
    extra = ACCEPTED_BEYOND_YAML.get(values["name"], set())
    assert set(options) == {f.name for f in fields(schema)} - extra, f"{where} vs specs.{schema.__name__}"
    problems = disagreements(options, defaults_of(schema), where)
    assert not problems, "\n".join(problems)
    return values


@pytest.mark.parametrize("path", sorted((CONF / "freeze").glob("*.yaml")), ids=lambda p: p.stem)
def test_freeze_options_agree_with_their_settings(path):
    """specs.FREEZES and specs.PROBES."""
    assert_option_matches(path, {**specs.FREEZES, **specs.PROBES})


@pytest.mark.parametrize("path", sorted((CONF / "optimizer").glob("*.yaml")), ids=lambda p: p.stem)
def test_optimizer_options_agree_with_their_settings(path):
    """specs.OPTIMIZERS, and the factory takes them."""
    optim.OptimizerFactory(**assert_option_matches(path, specs.OPTIMIZERS))


@pytest.mark.parametrize("path", sorted((CONF / "schedule").glob("*.yaml")), ids=lambda p: p.stem)
def test_schedule_options_agree_with_their_settings(path):
    """specs.SCHEDULES, and each builds."""
    schedules.build_schedule(epochs=10, steps_per_epoch=5, **assert_option_matches(path, specs.SCHEDULES))


@pytest.mark.parametrize("path", sorted((CONF / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_model_options_have_the_model_settings(path):
    """Each model's YAML has exactly specs.ModelSettings' keys, valid values, and the shared defaults."""
    values = load(path)
    assert set(values) == {f.name for f in fields(specs.ModelSettings)}, f"model/{path.name}"
    specs.ModelSettings(**values)
    shared = {k: v for k, v in defaults_of(specs.ModelSettings).items() if k not in ("name", "source")}
    assert not disagreements(values, shared, f"model/{path.name}")


# Data set options that are a variant of another over the same builder: the keys they set away from its default.
VARIANTS = {"caltech101_background": {"background"}, "sun397_tfds": {"partition"}}  # a second option of one builder


@pytest.mark.parametrize("path", sorted((CONF / "dataset").glob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_options_agree_with_their_builders(path):
    """Each data set's YAML: the shared keys are specs.DatasetSplits' (valid as written), the others its
    builder's arguments (data.BUILDERS), at the builder's defaults where it has one."""
    from tlbench import data

    values = load(path)
    builder = data.BUILDERS[values.pop("name")]
    shared = {f.name for f in fields(specs.DatasetSplits)}
    specs.DatasetSplits(**{k: v for k, v in values.items() if k in shared and v != "???"})
    parameters = inspect.signature(builder).parameters
    own = {k: v for k, v in values.items() if k not in shared or k in parameters}
    assert set(own) - shared <= set(parameters), f"dataset/{path.name}: {sorted(set(own) - shared - set(parameters))}"
    defaults = {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}
    problems = disagreements({k: v for k, v in own.items() if v != "???" and k not in VARIANTS.get(path.stem, ())},
                             defaults, f"dataset/{path.name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overrides", [
    ["schedule=plateau", "+schedule.warmup_epochs=1"], ["schedule=onecycle", "++schedule.warmup_epochs=1"],
    ["schedule=plateau", "schedule.monitor=val_mean_class_acc"], ["model.kwargs=null"],
    ["schedule=step", "schedule.step_epochs=2.5"], ["schedule=plateau", "schedule.patience=2.5"],
    ["freeze=freeze_unfreeze", "freeze.epochs=2.0"], ["freeze=gradual", "freeze.epochs_per_stage=1.5"],
    ["optimizer=sgd", "optimizer.momentum=1.0"], ["optimizer.lr=find"], ["+optimizer.eps=1e-6"],
    ["optimizer.lr=1"], ["search=optuna"], ["freeze=lora", "freeze.target_modules=[.*qkv]"],
], ids=lambda overrides: " ".join(overrides))
def test_settings_accepted_before_the_specs_still_pass(make_cfg, overrides):
    """What the code took before each option had a dataclass (321b965) still passes the startup checks."""
    from tlbench.runner.build import check_settings

    check_settings(make_cfg(*overrides))
