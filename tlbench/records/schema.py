"""result.json, field by field: the one description of the schema (version results.SCHEMA_VERSION).

docs/reference/result-json.md is generated from FIELDS, and tests/test_reference_docs.py checks a
real run's result.json against it both ways (every field written is described here; every field
described without a `when` is written). Adding a field to result.json means adding it here."""

from dataclasses import dataclass

from tlbench.records.identity import CONTENT_KEYS, NOT_IDENTITY


@dataclass(frozen=True)
class Field:
    """One key of result.json. `when`: empty when every file has it, else when it is there.
    `keys`: the fields of an object, or of each item of a list (empty: free-form or a plain value)."""
    name: str
    type: str
    meaning: str
    when: str = ""
    keys: tuple = ()


def _fields(*rows) -> tuple:
    """Rows (name, type, meaning[, when]) as Fields without keys of their own."""
    return tuple(Field(*row) for row in rows)


BUDGET = _fields(
    ("epochs", "int", "the epochs trained: max(epochs, ceil(min_steps / steps_per_epoch)), or ceil(steps / "
                      "steps_per_epoch) under a `steps` budget (the last one partial)"),
    ("steps", "int", "optimizer steps in all: config steps, else epochs x steps_per_epoch"),
    ("steps_per_epoch", "int", "batches of the training split per epoch"),
    ("min_steps", "int", "config min_steps"),
    ("configured_epochs", "int", "config epochs"),
    ("configured_steps", "int or null", "config steps (an exact budget in optimizer steps); absent before issue 24"),
    ("raised", "bool", "whether min_steps raised the epochs"),
)

EPOCH = _fields(
    ("epoch", "int", "from 1"),
    ("train_loss", "float", "mean training loss of the epoch"),
    ("train_acc", "float", "top-1 accuracy on the training images as they were trained on"),
    ("val_loss", "float", "loss on the val split"),
    ("val_acc", "float", "top-1 accuracy on the val split"),
    ("val_mean_class_acc", "float", "mean over the split's classes of each class's accuracy, on val"),
    ("test_loss", "float", "loss on the test split"),
    ("test_acc", "float", "top-1 accuracy on the test split"),
    ("test_mean_class_acc", "float", "mean over the split's classes of each class's accuracy, on test"),
    ("lr", "float", "the head's param group's learning rate at the end of the epoch"),
    ("time_s", "float", "training plus evaluation of val and test"),
    ("images_per_s", "float", "training images / training time"),
    ("trainable_params", "int", "parameters trained in this epoch"),
    ("trainable_fraction", "float", "of every parameter the model holds, adapters included"),
    ("freeze_phase", "str", "the freeze strategy's phase, e.g. head or all"),
    ("train_images", "int", "images trained on (a compiled run drops the partial last batch)"),
    ("compile_s", "float", "compile warm-up before the epoch, outside time_s; 0 without one"),
    *((f"ema_{name}", "float", f"{name} of the weight EMA (timm's ModelEmaV3) at the end of the epoch", "ema.decay > 0")
      for name in ("val_loss", "val_acc", "val_mean_class_acc", "test_loss", "test_acc", "test_mean_class_acc")),
)

SUMMARY = _fields(
    ("final_test_acc", "float", "test accuracy at the last epoch"),
    ("test_acc_at_best_val", "float", "test accuracy at best_epoch"),
    ("final_val_acc", "float", "val accuracy at the last epoch"),
    ("best_val_acc", "float", "val accuracy at best_epoch"),
    ("best_epoch", "int", "the epoch chosen on val by select_epoch; the first wins a tie"),
    ("final_train_acc", "float", "train accuracy at the last epoch"),
    ("final_val_loss", "float", "val loss at the last epoch"),
    ("final_test_loss", "float", "test loss at the last epoch"),
    ("overfit_gap", "float", "final train accuracy - final test accuracy"),
    ("total_time_s", "float", "sum of the epochs' time_s"),
    ("metric", "str", "the data set's metric: top1 or mean_per_class"),
    ("final_test_metric", "float", "the data set's metric on test at the last epoch"),
    ("test_metric_at_best_val", "float", "the data set's metric on test at best_epoch"),
    ("final_val_metric", "float", "the data set's metric on val at the last epoch"),
    ("best_val_metric", "float", "the data set's metric on val at best_epoch (what a search maximizes)"),
    ("select_epoch", "str", "the rule that chose best_epoch (config select_epoch; random_init_select_epoch from random weights)"),
    ("ema", "object", "the weight EMA's final_test_acc, test_acc_at_best_val, final_val_acc, best_val_acc, best_epoch "
                      "(chosen on its own val scores by select_epoch), final_test_metric, test_metric_at_best_val, "
                      "best_val_metric", "ema.decay > 0"),
)

MODEL_INFO = (
    *_fields(
        ("weights_source", "str or null", "where the pretrained weights came from; null for random init"),
        ("total_params", "int", "every parameter of the model"),
        ("head_params", "list of str", "the new classifier's parameter names"),
        ("head_module", "str", "the classifier module's name"),
        ("head_init", "str", "how the new classifier started (model.head_init)"),
        ("stages", "int", "the backbone stages freeze=gradual and layer_decay count"),
        ("feature_dim", "int", "the feature size the probe fitted on", "freeze=logreg or knn"),
    ),
    Field("lora", "object", "the adapters peft injected", "freeze=lora", _fields(
        ("targets", "int", "layers that got an adapter"),
        ("first_targets", "list of str", "the first 5 of their names"),
        ("rank", "int", "freeze.rank"),
        ("alpha", "float", "freeze.alpha"),
        ("dropout", "float", "freeze.dropout"),
        ("adapter_params", "int", "parameters the adapters add"),
    )),
)

DATA_INFO = (
    *_fields(
        ("source", "str", "where the images came from"),
        ("classes", "list of str", "class names, in label order"),
        ("num_classes", "int", ""),
        ("train_size", "int", "training images used, after any skipped"),
        ("val_size", "int", "val images used"),
        ("test_size", "int", "test images used"),
        ("val_is_test", "bool", "true only with dataset.val_split=0: val is the test split, so the best epoch "
         "was chosen on test (unless select_epoch=final, which chooses nothing)"),
        ("val_source", "str", "how the val split was made"),
        ("test_source", "str", "where the test split came from: the official split, a folder, or the held-out part"),
        ("train_subset", "str", "all, or the fraction / K per class and subset_seed"),
        ("image_size", "int", "the side the images were decoded to"),
        ("metric", "str", "the data set's metric, as the top-level metric"),
    ),
    Field("preprocess", "object", "how the images became squares (from issue 22)", keys=_fields(
        ("mode", "str", "squash or crop"),
        ("crop_fraction", "float", "the crop fraction, model resolved", "mode is crop"),
    )),
    Field("skipped_images", "object", "undecodable files left out (dataset.on_bad_image=skip)", keys=_fields(
        ("train", "int", "files skipped in train"),
        ("val", "int", "files skipped in val"),
        ("test", "int", "files skipped in test"),
        ("examples", "list of str", "the first 10 paths"),
    )),
)

COST = _fields(
    ("total_params", "int", "every parameter of the model"),
    ("trainable_params", "int", "the most any freeze phase trained"),
    ("gmacs_per_image", "float", "forward multiply-accumulates of one image at input_size (torch's FlopCounterMode "
                                 "/ 2), checked against torchvision's published numbers"),
    ("input_size", "int", "the side the model saw, px"),
    ("train_images_per_s", "float", "mean over epochs"),
    ("wall_s", "float", "this attempt, from start-up to the end of training"),
    ("peak_host_mib", "float", "the process's peak resident memory"),
    ("peak_device_mib", "float or null", "peak CUDA memory allocated; null off CUDA"),
)

COMPILE = _fields(
    ("backend", "str", "torch.compile's backend"),
    ("dynamic", "bool", "false: static shapes"),
    ("graphs_needed", "int", "2 x freeze phases"),
    ("recompile_limit", "int", "dynamo's limit as set for the run"),
    ("compile_s", "float", "total compile time"),
    ("phases", "list", "one {epoch, phase, compile_s, graphs} per warm-up"),
    ("graphs_in_timed_epochs", "int", "0 unless a graph compiled outside a warm-up"),
    ("fell_back_to_eager", "bool", "whether the run gave up compiling"),
    ("fallback_reason", "str or null", "why it did"),
    ("dropped_train_images", "list of int", "per epoch, the partial last batch left out"),
)

SEEDS = _fields(
    ("python", "int", "random.seed"), ("numpy", "int", "np.random.seed"), ("torch", "int", "torch.manual_seed"),
    ("data_order", "int", "the training loader's shuffle"),
)

ENV = _fields(
    ("python", "str", "Python version"), ("torch", "str", "torch version"),
    ("torchvision", "str", "torchvision version"), ("timm", "str", "timm version"),
    ("device", "str", "the device the run used, e.g. cpu or cuda:0"), ("device_name", "str", "its name"),
    ("git_sha", "str or null", "the checkout's commit, when there is one"), ("hostname", "str", ""),
    ("pid", "int", "the process that trained"), ("threads", "int", "CPU threads used"),
    ("job_num", "int or null", "the run's number in its sweep, or null"),
    ("amp", "bool", "bf16 autocast as used (auto resolved)"),
    ("channels_last", "bool", "memory format as used (auto resolved)"),
)

LR_FIND = _fields(
    ("phase", "str", "the freeze phase measured"), ("before_epoch", "int", "the first epoch of that phase"),
    ("lr", "float or null", "the valley rule's suggestion, used as optimizer.lr; null when skipped"),
    ("rule", "str", "the suggestion rule"),
    ("steps", "int", "ramp steps taken", "lr is not null"), ("stopped", "str", "why the ramp stopped", "lr is not null"),
    ("curve", "str", "the PNG under lr_find/, relative to the run folder", "lr is not null"),
    ("data", "str", "the JSON of the curve under lr_find/", "lr is not null"),
    ("group_lrs", "list of float", "each param group's lr before the schedule's factor", "lr is not null"),
    ("skipped", "str", "why nothing was found: every group has an absolute lr", "lr is null"),
)

FIELDS = (
    Field("schema_version", "int", "2 (version 1 had no test split: its val was the test split)"),
    Field("run_id", "str", "first 12 hex digits of sha256 over identity (canonical JSON)"),
    Field("identity", "object", "what makes this experiment this experiment (tlbench/records/identity.py): the "
          f"resolved config flattened to dotted keys, without where files live or how fast things run "
          f"({', '.join(sorted(NOT_IDENTITY))}); {', '.join(CONTENT_KEYS)} replaced by the content fingerprints of the "
          "files they name; settings added later left out while they keep "
          "the behaviour older runs had (identity.LATER_SETTINGS)"),
    Field("fingerprints", "object", "{dotted key: fingerprint} for every local file or folder the config names: a "
          "folder is tree:<hash of every file's relative path and size>:<n>files:<bytes>bytes, a file "
          "sha256:<first 16 hex digits>"),
    Field("status", "str", "ok, failed, interrupted (Ctrl-C, or a cluster's preemption signal), or running (still "
          "going, or killed)"),
    Field("config", "object", "the resolved config"),
    *(Field(group, "str", f"config {group}.name") for group in ("model", "dataset", "freeze", "optimizer", "schedule")),
    Field("metric", "str or null", "the data set's accuracy metric: top1 or mean_per_class; it selects the best "
          "epoch and fills summary.*_metric; null until the data is built; absent in older files (read as top1)"),
    Field("pretrained", "bool", "config pretrained"),
    Field("seed", "int", "config seed"),
    Field("epochs", "list", "one object per epoch; *_acc are top-1, *_mean_class_acc the mean per-class accuracy, "
          "train is top-1 only", keys=EPOCH),
    Field("iter_loss", "list of float", "training loss of every optimizer step"),
    Field("iters_per_epoch", "int", "optimizer steps per epoch"),
    Field("summary", "object or null", "the headline numbers; *_acc are top-1, *_metric the data set's metric, "
          "read at the same best_epoch; null before the first epoch", keys=SUMMARY),
    Field("model_info", "object", "the model as built", keys=MODEL_INFO),
    Field("data_info", "object", "the data as built", keys=DATA_INFO),
    Field("cost", "object", "what the run cost (tlbench/training/cost.py)", keys=COST),
    Field("compile", "object or null", "null unless compile=true (tlbench/training/compiled.py)", keys=COMPILE),
    Field("seeds", "object", "the seeds given to Python, NumPy, torch and the data order", keys=SEEDS),
    Field("deterministic", "bool", "whether deterministic kernels were requested"),
    Field("env", "object", "the software and the machine", keys=ENV),
    Field("error", "object or null", "{type, message} when status is failed or interrupted"),
    Field("started_at", "str", "UTC, ISO 8601; the first attempt's when resumed"),
    Field("finished_at", "str or null", "UTC, ISO 8601; null while running"),
    Field("resumes", "list", "one {at, after_epoch, rng} per resume from a checkpoint; [] for a run that never "
          "stopped (rng: which random states could not be restored on this device)"),
    Field("budget", "object", "how long the run trained: the configured epochs, raised when min_steps asked for "
          "more optimizer steps than they give, or exactly the configured steps", "a fine-tuning run (not freeze=knn / logreg)", keys=BUDGET),
    Field("resolved", "object", "each setting given as auto (or by a rule) that the run decided, with the value "
          "used (freeze.head_lr_ratio, freeze.lr_ratio, bn_momentum, optimizer.lr)", "a setting was auto "
          "(freeze=linear_probe's head_lr_ratio; freeze=lora's lr_ratio; bn_momentum=kornblith) or set by a rule "
          "(random init's optimizer.lr)"),
    Field("head_probe", "object", "LP-FT: the logistic regression the head started from (C, C_chosen_on, fit_images, "
          "fit_on: train or train_val (head_probe_fit), its val_acc and test_acc, the features' weights_fingerprint)", "model.head_init=probe"),
    Field("wise_ft", "object", "WiSE-FT: alphas, curve (one {alpha, val_*, test_*} per alpha: the starting and "
          "final weights interpolated; with test_shift also shift_mean_acc, the mix's mean accuracy under the "
          "corruptions), bn (the mixes' BatchNorm statistics: interpolate or recompute, wise_ft_bn), chosen_alpha, "
          "chosen_on (the data set's metric on val)", "wise_ft set"),
    Field("test_shift", "object", "the trained model on the test split's images clean and corrupted (tlbench/data/"
          "corruptions.py): kind, definitions (cifar10c or imagenet_c), images (how many, drawn by seed), seed, "
          "severities, clean_acc, acc ({corruption: "
          "{severity: top-1}}), mean_acc, mean_acc_by_severity, time_s; with ema.decay also ema (the weight EMA "
          "after the last step: its clean_acc, acc, mean_acc)", "test_shift.corruptions set"),
    Field("lr_find", "list", "the LR finder, one entry per freeze phase", "optimizer.lr=find", keys=LR_FIND),
    Field("probe", "object", "the probe's settings, choice, feature size, timings and cache hits",
          "freeze=logreg or freeze=knn"),
)
