"""One definition of "the same experiment", used by the run_id, the sweep folder's name and the
report's grouping alike. Torch-free, so the report can use it on JSON alone.

An experiment is its resolved config, less what only says where files live or how fast things
run, with local data and weights named by their content rather than their path: the same
experiment composed on another machine (another HOME, data_dir, weights_dir, results_dir, cache
folder, thread or worker count, device) has the same identity, and two runs on different data or
different weights files never do."""

import hashlib
import json
import os
from pathlib import Path

# Dotted config keys that never change what is trained or measured: where files live, how a
# job is launched, and speed-only switches.
NOT_IDENTITY = frozenset({
    "results_dir", "data_dir", "weights_dir", "hydra", "published", "resume", "run_lock", "keep_checkpoint",
    "save_best", "save_model",
    "device", "devices", "threads", "num_workers", "eval_batch_size", "compile", "channels_last", "deterministic",
    "checkpoint_every_s", "logger",  # trackers only copy result.json (tlbench/runner/loggers.py)
    "data.cache_dir", "data.device_budget_gb", "data.decode_workers", "dataset.data_dir", "dataset.download",
    # removed settings, so results written before their removal keep their identity
    "dataset.allow_absolute_paths",  # file lists now take absolute paths always (a run that used one trained the same)
})
# Keys that point at local files: their content (fingerprints below) stands in for the path.
CONTENT_KEYS = ("dataset.root", "dataset.train_list", "dataset.test_list", "dataset.val_list", "dataset.path",
                "model.weights_file")
# Files whose bytes join a folder's fingerprint: a Hugging Face save_to_disk folder's state.json holds
# the data's own fingerprint, which follows content that the Arrow files' sizes alone may not.
READ_IN_FOLDERS = frozenset({"state.json"})
# Settings added after schema 1 first shipped, with the value whose behaviour an older result.json
# had: at that value they are left out, so an experiment keeps its identity across upgrades (and
# the report groups a schema-1 run with the schema-2 run that repeats its protocol).
LATER_SETTINGS = {
    "freeze.bn_eval": False, "dataset.on_bad_image": "fail",
    "model.head_init": "library", "optimizer.filter_bias_and_bn": False, "dataset.val_split": 0,
    "dataset.split_seed": 0, "freeze.keep_optimizer_state": False, "defects.freeze_by_name": None,
    "defects.freeze_noop": False, "defects.sigmoid_before_loss": False, "schedule.cycle_momentum": False,
    "schedule.base_momentum": 0.85, "schedule.max_momentum": 0.95,
    "dataset.train_per_class": None, "dataset.subset_seed": 0, "dataset.train_images": None,
    # the LR finder's ramp: it acts only with optimizer.lr=find, which older runs never had
    "lr_find.start_lr": 1e-7, "lr_find.end_lr": 10.0, "lr_find.steps": 100, "lr_find.stop_factor": 4.0,
    "lr_find.beta": 0.98,
    "freeze.cv_folds": 0,  # logreg's C chosen by cross-validation: older runs chose it on val
    # how images become squares: older runs squashed every image; `model` is the weights' own crop,
    # which the model setting already names (an explicit fraction is part of the identity)
    "dataset.preprocess": "squash", "dataset.crop_fraction": "model",
    "select_epoch": "acc",  # the val-chosen epoch's rule: older runs took the first highest val metric
    # the test split held out of a root of class folders, which older runs refused: a root with split folders
    # never reads it, and a root's layout is in its fingerprint (the same root, the same layout)
    "dataset.test_split": 0.2,
    "min_steps": 0,  # a floor on optimizer steps (issue 22): older runs trained `epochs` whatever the split size
    "steps": None,  # an exact budget in optimizer steps (issue 24): older runs trained `epochs`
    "dataset.train_on": "train",  # train + val, a protocol's refit (issue 24): older runs trained on train
    "optimizer.decay_per_lr": False,  # weight decay divided by the lr (issue 24): older runs decayed weight_decay
    "dataset.background": False,  # caltech101's BACKGROUND_Google as a 102nd class (issue 24): older runs left it out
    "freeze.l2_grid": None,  # logreg's L2 strengths in place of C_grid (issue 24): older runs searched C_grid
    "bn_momentum": None,  # BatchNorm's momentum set by the run (issue 24): older runs kept the model's own
    # mixup / cutmix (issue 25): older runs mixed nothing
    "mix.mixup_alpha": 0.0, "mix.cutmix_alpha": 0.0, "mix.prob": 1.0, "mix.switch_prob": 0.5,
    "l2sp.alpha": 0.0, "l2sp.beta": 0.0,  # L2-SP's penalty (issue 25): older runs had none
    "wise_ft": None,  # the WiSE-FT curve after training (issue 25): older runs scored the final weights only
    "random_init_lr_ratio": 1.0,  # random init at a multiple of the lr (issue 22): older runs used optimizer.lr as is
    "random_init_select_epoch": None,  # random init's own epoch rule (issue 22): older runs chose by select_epoch
    "freeze.random_init_lr_ratio": 1.0,  # BitFit's own random-init ratio (issue 22): 1 x lr, as older runs trained
    "head_probe_fit": "train_val",  # LP-FT's probe held off val (issue 25): older probes also fitted val
    "head_probe_bn": "running",  # LP-FT's probe on recomputed BatchNorm statistics (issue 25): older ones kept the start's
    "wise_ft_bn": "interpolate",  # a mix's BatchNorm statistics measured anew (issue 25): older curves interpolated them
    "ema.decay": 0.0, "ema.warmup": True,  # weight EMA scored beside the weights (issue 25): older runs had none
    "test_shift.corruptions": None,  # the test split under corruptions (issue 25): older runs scored it clean only
    "test_shift.definitions": "cifar10c",  # ImageNet-C's parameters (issue 25): older runs had CIFAR-10-C's only
}
# Settings that do nothing for a frozen-feature probe (one fit, no epochs to choose among): left out of its identity.
NOT_FOR_PROBES = frozenset({"select_epoch", "min_steps", "steps", "bn_momentum", "mix.mixup_alpha", "mix.cutmix_alpha",
                            "mix.prob", "mix.switch_prob", "l2sp.alpha", "l2sp.beta", "wise_ft", "wise_ft_bn",
                            "head_probe_fit", "head_probe_bn", "random_init_lr_ratio", "random_init_select_epoch",
                            "ema.decay", "ema.warmup",
                            "test_shift.corruptions", "test_shift.severities", "test_shift.images", "test_shift.seed",
                            "test_shift.definitions"})
# Settings that do nothing under an exact budget in optimizer steps (`steps` set): left out of its identity.
IDLE_UNDER_STEPS = frozenset({"epochs", "min_steps"})
# Settings that do nothing while the block they tune is off (its switches all 0): left out of the identity then.
IDLE_WHILE_OFF = {("mix.mixup_alpha", "mix.cutmix_alpha"): frozenset({"mix.prob", "mix.switch_prob"}),
                  ("ema.decay",): frozenset({"ema.warmup"}), ("wise_ft",): frozenset({"wise_ft_bn"}),
                  ("test_shift.corruptions",): frozenset({"test_shift.severities", "test_shift.images", "test_shift.seed",
                                                          "test_shift.definitions"})}
# Settings that act only while another key has one value: left out of the identity otherwise.
IDLE_UNLESS = {"head_probe_fit": ("model.head_init", "probe"), "head_probe_bn": ("model.head_init", "probe"),
               "random_init_lr_ratio": ("pretrained", False), "random_init_select_epoch": ("pretrained", False),
               "freeze.random_init_lr_ratio": ("pretrained", False)}
# Settings that a more specific key replaces while the config has it: left out of the identity then.
REPLACED_BY = {"random_init_lr_ratio": "freeze.random_init_lr_ratio"}  # BitFit's own (issue 22)
PROBE_NAMES = ("knn", "logreg")  # specs.PROBES, named here to keep records/ free of the specs' imports
# Settings that some data set options gained later than the others, left out at their old behaviour there only.
LATER_FOR_DATASET = {"digits": {"dataset.train_fraction": 1.0}, "synthetic": {"dataset.train_fraction": 1.0}}
# Schema-1 names of settings renamed in schema 2 (one meaning per name), per data set where it differs.
RENAMED_IN_SCHEMA_2 = {"dataset.val_fraction": "dataset.test_fraction", "dataset.val_size": "dataset.test_size",
                       "dataset.val_list": "dataset.test_list"}
DIGITS_RENAMED = {"dataset.val_fraction": "dataset.test_size"}  # digits: the size of its held-out test split


def is_identity_key(dotted_key: str) -> bool:
    """False for a key (or anything under a key) in NOT_IDENTITY, e.g. `hydra.launcher.n_jobs`."""
    parts = dotted_key.lstrip("+~").split(".")
    return not any(".".join(parts[:i]) in NOT_IDENTITY for i in range(1, len(parts) + 1))


def experiment(config: dict, fingerprints: dict | None = None) -> dict:
    """The config that defines the experiment: a pruned deep copy, with each local file key in
    CONTENT_KEYS replaced by its fingerprint when one is given (else its path is kept: without
    its content, only the same path can be known to be the same data)."""
    flat = flatten(json.loads(json.dumps(config, default=str)))
    fingerprints = fingerprints or {}
    later = {**LATER_SETTINGS, **LATER_FOR_DATASET.get(flat.get("dataset.name"), {})}
    if flat.get("freeze.name") in PROBE_NAMES:
        idle = NOT_FOR_PROBES
    else:
        idle = IDLE_UNDER_STEPS if flat.get("steps") is not None else frozenset()
        for switches, tuned in IDLE_WHILE_OFF.items():
            if not any(flat.get(switch) for switch in switches):
                idle = idle | tuned
    idle = idle | {key for key, (switch, value) in IDLE_UNLESS.items() if flat.get(switch) != value}
    idle = idle | {key for key, specific in REPLACED_BY.items() if flat.get(specific) is not None}
    kept = {}
    for key, value in flat.items():
        if not is_identity_key(key) or (key in later and later[key] == value) or key in idle:
            continue
        kept[key] = {"content": fingerprints[key]} if key in fingerprints and value is not None else value
    return kept


def run_id(config: dict, fingerprints: dict | None = None) -> str:
    """First 12 hex digits of sha256 over the experiment (canonical JSON)."""
    canonical = json.dumps(experiment(config, fingerprints), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def upgrade_schema_1_config(config: dict) -> dict:
    """A schema-1 config under schema-2 names (a copy), so old runs group with new ones."""
    flat = flatten(json.loads(json.dumps(config, default=str)))
    renamed = {**RENAMED_IN_SCHEMA_2, **(DIGITS_RENAMED if flat.get("dataset.name") == "digits" else {})}
    return _unflatten({renamed.get(key, key): value for key, value in flat.items()})


def fingerprint_paths(config: dict) -> dict:
    """{dotted key: content fingerprint} for every local file or folder the config points at."""
    flat = flatten(config)
    found = {}
    for key in CONTENT_KEYS:
        path = flat.get(key)
        if isinstance(path, str) and path and Path(path).expanduser().exists():
            found[key] = fingerprint(Path(path).expanduser())
    return found


def fingerprint(path: Path) -> str:
    """A file: sha256 of its bytes (weights, list files). A folder (an ImageFolder root): its
    layout, i.e. every file's path relative to the root with its size, so the same images copied
    to another machine match and one added, removed or resized image does not. File contents are
    not read (60,000 CIFAR files take a second to list, minutes to hash), except the small records
    in READ_IN_FOLDERS."""
    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()[:16]
    count, total = 0, 0
    for folder, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            size = os.stat(os.path.join(folder, name)).st_size
            digest.update(f"{os.path.relpath(os.path.join(folder, name), path)}|{size}\n".encode())
            if name in READ_IN_FOLDERS:
                digest.update(Path(folder, name).read_bytes())
            count, total = count + 1, total + size
    return f"tree:{digest.hexdigest()[:16]}:{count}files:{total}bytes"


def flatten(mapping: dict, prefix: str = "") -> dict:
    """{"optimizer.lr": 0.001, ...}: a nested config as dotted keys (empty sections kept as values)."""
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _unflatten(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *parents, name = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = value
    return nested
