"""The config checked at the run layer's edge, in one style: each group option's dataclass
(tlbench/specs/) with field types OmegaConf enforces (a word or a quoted number where a number belongs,
or a word where true/false does, fails naming the key), the range checks of its `__post_init__`, and
unknown keys failing with the known ones named.
build.check_settings calls these before any data loads; only the optimizer's extra torch keywords
are left to the optimizer factory."""

import re
import typing
from dataclasses import fields

from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from tlbench import specs
from tlbench.configs import config_dir
from tlbench.errors import ConfigError
from tlbench.specs import (FREEZES, OPTIMIZERS, PROBES, SCHEDULES, Augment, DataPath, DatasetSplits, Defects,
                           Ema, L2SP, LrFind, Mix, ModelSettings, Shift, Training, closed)


def checked(schema, values, prefix: str = ""):
    """`values` (a mapping) typed and range-checked as `schema`; keys the schema does not have
    are left to their own checks. Raises ConfigError naming the key."""
    known = {f.name for f in fields(schema)}
    if OmegaConf.is_config(values):  # unset keys (???) are left to the code that needs them
        values = OmegaConf.to_container(values, resolve=True)
    given = {k: v for k, v in values.items() if k in known}
    _no_text_for_scalars(schema, given, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), given))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None) or "?"
        raise ConfigError(f"{prefix}{key}: {err.msg if hasattr(err, 'msg') else err}".splitlines()[0]) from None


def _no_text_for_scalars(schema, given: dict, prefix: str) -> None:
    """A quoted number or a word where a number or true/false belongs fails, naming the key: OmegaConf's typing
    would convert it, but the code reads the config as composed, where '3' is text (a crash) and 'no' is true."""
    hints = typing.get_type_hints(schema)
    for key, value in given.items():
        takes = {t for t in typing.get_args(hints[key]) or (hints[key],) if t is not type(None)}
        if isinstance(value, str) and takes and takes <= {int, float, bool}:
            raise ConfigError(f"{prefix}{key}={value!r} is text where "
                              f"{_scalar_fix(prefix + key, value, takes == {bool})}")


def _scalar_fix(key: str, text: str, boolean: bool) -> str:
    """What belongs at `key` instead of `text`, and the override that sets it."""
    if boolean:
        word = {"true": "true", "yes": "true", "on": "true", "1": "true",
                "false": "false", "no": "false", "off": "false", "0": "false"}.get(text.strip().lower())
        return (f"true or false belongs; write {key}={word} (without quotes)" if word else
                f"true or false belongs; write {key}=true or {key}=false")
    try:
        float(text)
    except ValueError:
        return f"a number belongs; write {key}=<a number>"
    return f"a number belongs; write {key}={text.strip()} (without quotes)"


def require_values(cfg) -> None:
    """Every value the config leaves to the user (`???`: a data set's root, a file list) is set; the
    error names each with its YAML comment (conf/<group>/<option>.yaml), which says what it wants."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing_value_message(missing, {key: _comment(cfg, key) for key in missing}))


def missing_value_message(keys: list[str], reasons: dict | None = None) -> str:
    """For settings whose config value is `???` (a data set's root, a file list): nothing can default them."""
    reasons = reasons or {}
    named = "\n".join(f"  {key}" + (f": {reasons[key]}" if reasons.get(key) else "") for key in keys)
    return (f"no value for what the config leaves to you (`???`):\n{named}\n"
            f"add {' '.join(f'{key}=...' for key in keys)} to the command")


def _comment(cfg, key: str) -> str | None:
    """The comment after a group option's `key: ???` line, or None (a key outside a group option,
    or an option in the user's own config folder)."""
    group, _, leaf = key.partition(".")
    name = OmegaConf.select(cfg, f"{group}.name", default=None) if leaf and "." not in leaf else None
    path = config_dir() / group / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        return None
    found = re.search(rf"^{re.escape(leaf)}:\s*\?\?\?\s*#\s*(.+)$", path.read_text(), flags=re.M)
    return found and found.group(1).strip()


# augment=auto (the default): the recipe that fits how the data set's images are preprocessed
AUTO_AUGMENT = {"squash": "crop_flip", "crop": "random_resized_crop"}


def concrete(cfg):
    """`cfg` with augment=auto replaced by the option that dataset.preprocess calls for, with the keys
    set on the command line (not null) on top (a copy; `cfg` itself when nothing is automatic), so a
    run, its result.json and its run_id record the augmentation it trains with: augment=auto is the
    same experiment as naming the option (and augment.hflip=0 as that option with hflip 0)."""
    if "auto" not in cfg.augment:
        return cfg
    mode = cfg.dataset.get("preprocess", "squash")
    specs.preprocess(mode)  # an unknown mode fails here, naming the choices
    recipe = OmegaConf.load(config_dir() / "augment" / f"{AUTO_AUGMENT[mode]}.yaml")
    unknown = sorted(set(cfg.augment) - set(recipe) - {"auto"})
    if unknown:
        raise ConfigError(f"augment does not take {', '.join(unknown)}; it takes {', '.join(recipe)}")
    for key, value in cfg.augment.items():
        if key != "auto" and value is not None:
            recipe[key] = value
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.augment = recipe
    return cfg


def validate(cfg) -> None:
    """Every shared setting, before any data loads."""
    require_values(cfg)
    checked(Training, cfg)
    checked(DatasetSplits, cfg.dataset, "dataset.")
    checked(DataPath, cfg.data, "data.")
    defects(cfg.get("defects") or {})
    augment(concrete(cfg).augment)
    optimizer(cfg.optimizer)
    _closed(ModelSettings, cfg.model, "model")
    lr_find(cfg.get("lr_find") or {})
    mix(cfg.get("mix") or {})
    l2sp(cfg.get("l2sp") or {})
    ema(cfg.get("ema") or {})
    shift(cfg.get("test_shift") or {})


def defects(values) -> Defects:
    return _closed(Defects, values, "defects")


def augment(values) -> Augment:
    return _closed(Augment, values, "augment")


def lr_find(values) -> LrFind:
    return _closed(LrFind, values, "lr_find")


def mix(values) -> Mix:
    return _closed(Mix, values, "mix")


def l2sp(values) -> L2SP:
    return _closed(L2SP, values, "l2sp")


def ema(values) -> Ema:
    return _closed(Ema, values, "ema")


def shift(values) -> Shift:
    return _closed(Shift, values, "test_shift")


def _closed(schema, values, group: str):
    """`values` checked as `schema`, which is the whole group: an unknown key fails, naming the known ones."""
    return checked(schema, closed(schema, values, group), f"{group}.")


def probe(freeze_cfg, val_split: float):
    """freeze=knn / logreg: the probe's keys (unknown ones fail, naming the known ones), typed and range-checked."""
    schema = PROBES[freeze_cfg.name]
    values = {k: v for k, v in dict(freeze_cfg).items() if k != "name"}
    found = checked(schema, closed(schema, values, f"freeze={freeze_cfg.name}"), "freeze.")
    if val_split == 0 and getattr(found, "refit_on", "train") == "train_val":
        raise ConfigError("freeze.refit_on=train_val with dataset.val_split=0 would fit the probe on the test "
                          "split (val is the test split); set freeze.refit_on=train, or dataset.val_split > 0")
    return found


def freeze(freeze_cfg, total_epochs: int):
    """A training freeze option's settings, typed and range-checked (specs.freeze's rules)."""
    values = {k: v for k, v in dict(freeze_cfg).items() if k != "name"}
    name = freeze_cfg.name
    if name in FREEZES:  # typed first (a word where a number belongs fails naming the key), then the cross rules
        checked(FREEZES[name], closed(FREEZES[name], values, f"freeze={name}"), "freeze.")
    return specs.freeze(name, _plain(values), total_epochs)


def _plain(values: dict) -> dict:
    return {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in values.items()}


def schedule(schedule_cfg):
    """A schedule option's settings, typed and range-checked (specs.SCHEDULES)."""
    values = {k: v for k, v in dict(schedule_cfg).items() if k != "name"}
    name = schedule_cfg.name
    if name in SCHEDULES:
        checked(SCHEDULES[name], closed(SCHEDULES[name], values, f"schedule={name}"), "schedule.")
    return specs.schedule(name, _plain(values))


def optimizer(optimizer_cfg):
    """An optimizer option's own settings, typed and range-checked (specs.OPTIMIZERS); keys beyond
    them are torch's (the factory checks them against the optimizer)."""
    values = {k: v for k, v in dict(optimizer_cfg).items() if k != "name"}
    name = optimizer_cfg.name
    if name in OPTIMIZERS:
        checked(OPTIMIZERS[name], values, "optimizer.")
    return specs.optimizer(name, _plain(values))
