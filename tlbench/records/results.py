"""The one JSON file per run (`result.json`) and how it is written. Its fields, one by one, are described in
schema.py (docs/reference/result-json.md is generated from there). Version 1 had no test split (its val was the
test split) and no identity.

`metric` (also data_info.metric) is the accuracy the literature reports for the data set
(DataSplits.metric): "top1", or "mean_per_class" (Kornblith et al. 2019: FGVC Aircraft,
Oxford-IIIT Pets, Caltech-101, Flowers-102); null while the data is not built yet, and absent in
files from before it, which are top1. Every epoch record has both: val_acc / test_acc (top-1) and
val_mean_class_acc / test_mean_class_acc (the mean over the classes present in the split of each
class's accuracy); train_acc is top-1. The metric picks the best epoch (on val; best.safetensors,
plateau with monitor=val_acc, a search's objective `best_val_metric`) and fills the summary's
*_metric fields (summarize); with top1 they equal the *_acc ones."""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from tlbench.records import atomic, identity
from tlbench.errors import ResultsWriteError
from tlbench.specs import METRICS, SELECT_RULES, epoch_rule

SCHEMA_VERSION = 2  # 2: train / val / test splits; selection on val, test reported
RESULT_FILE = "result.json"  # one per run folder; the report reads these and nothing else
# The data set's metric (DataSplits.metric; the one list of metrics) -> the epoch fields holding it on (val, test).
METRIC_FIELDS = dict(zip(METRICS, [("val_acc", "test_acc"), ("val_mean_class_acc", "test_mean_class_acc")]))
OLD_SELECT_RULE = "acc"  # how every run chose before `select_epoch` existed: a file without the key
SETTLE_LAG = {"smoothed": 1}  # epochs a rule waits before an epoch's key is final (settled)


def new_result(config: dict, fingerprints: dict | None = None) -> dict:
    """`fingerprints`: content fingerprints of the local files the config names (identity.py)."""
    return {
        "schema_version": SCHEMA_VERSION, "run_id": identity.run_id(config, fingerprints), "status": "running",
        "identity": identity.experiment(config, fingerprints), "fingerprints": fingerprints or {}, "config": config,
        "model": config["model"]["name"], "dataset": config["dataset"]["name"], "metric": None,
        "pretrained": bool(config["pretrained"]), "freeze": config["freeze"]["name"],
        "optimizer": config["optimizer"]["name"], "schedule": config["schedule"]["name"],
        "seed": config["seed"], "epochs": [], "iter_loss": [], "iters_per_epoch": None, "summary": None,
        "model_info": None, "data_info": None, "cost": None, "compile": None, "seeds": None, "deterministic": None,
        "env": None, "error": None, "started_at": _now(), "finished_at": None, "resumes": [],
    }


class RunRecord:
    """result.json as the run layer fills it while a run starts (`data` is the dict that is written;
    the epochs and summary come from `update` and `finish`). Each step hands its facts to one method,
    so every field has one writer."""

    def __init__(self, data: dict):
        self.data = data

    def seeded(self, seeds: dict, deterministic) -> None:
        """The seeds drawn and the determinism set, before the data and model are built."""
        self.data.update(seeds=seeds, deterministic=deterministic)

    def started(self, metric: str, env: dict) -> None:
        """The data set's metric (what selects and what the summary's *_metric fields hold) and the machine."""
        self.data.update(metric=metric, env=env)

    def model(self, info: dict) -> None:
        self.data["model_info"] = info

    def data_info(self, info: dict) -> None:
        self.data["data_info"] = info

    def precision(self, amp: bool, channels_last: bool) -> None:
        """How the model ran: bf16 autocast and memory format, as resolved for the device."""
        self.data["env"].update(amp=amp, channels_last=channels_last)

    def probe(self, summary: dict, feature_dim: int) -> None:
        self.data["probe"] = summary
        self.data["model_info"]["feature_dim"] = feature_dim

    def lr_find(self) -> list:
        """The LR finder's list, one entry per freeze phase, kept across a resume (appended to as phases start)."""
        return self.data.setdefault("lr_find", [])

    def resumed_rng(self, described: dict) -> None:
        """Which random states a resume could not restore on this device (checkpoint.describe)."""
        self.data["resumes"][-1]["rng"] = described

    def cost(self, cost: dict) -> None:
        self.data["cost"] = cost

    def budget(self, budget: dict) -> None:
        self.data["budget"] = budget

    def wise_ft(self, curve: dict) -> None:
        self.data["wise_ft"] = curve

    def resolved(self, settings: dict) -> None:
        """Settings given as auto, with the value the run used (none: nothing is written)."""
        if settings:
            self.data["resolved"] = settings


def resumed(previous: dict, config: dict, after_epoch: int) -> dict:
    """The earlier attempt's result, going on: same run_id and start time, one more entry in
    `resumes`, the current config (keys outside the run's identity, e.g. num_workers, may differ)."""
    result = dict(previous, config=config, status="running", error=None, finished_at=None)
    result["resumes"] = [*previous.get("resumes", []), {"at": _now(), "after_epoch": after_epoch}]
    return result


def metric_fields(metric: str | None) -> tuple[str, str]:
    """(val field, test field) of the epoch records that hold the data set's `metric`."""
    metric = metric or "top1"  # null (data not built yet) or absent (older files): top-1
    if metric not in METRIC_FIELDS:
        raise ValueError(f"metric={metric!r} is not known; use one of {', '.join(METRIC_FIELDS)}")
    return METRIC_FIELDS[metric]


def selection_field(metric: str | None) -> str:
    """The epoch record's field that selects (the best epoch, best.pt): the metric on val."""
    return metric_fields(metric)[0]


def selection_keys(values: list[float], losses: list[float], rule: str = OLD_SELECT_RULE) -> list[tuple]:
    """Per epoch, what `rule` (specs.SELECT_RULES) ranks it by: the chosen epoch is the first with the
    largest key. `values`: the data set's metric on val per epoch; `losses`: val loss per epoch. A
    missing value (NaN or None) ranks below every real one, on either list."""
    values = [-math.inf if _missing(v) else v for v in values]
    losses = [math.inf if _missing(v) else v for v in losses]
    if rule == "acc":
        return [(v,) for v in values]
    if rule == "acc_loss":
        return [(v, -loss) for v, loss in zip(values, losses)]
    if rule == "loss":
        return [(-loss,) for loss in losses]
    if rule == "smoothed":  # centred 3-epoch mean; the first and last epochs average the two that exist
        smoothed = [sum(values[max(0, i - 1):i + 2]) / len(values[max(0, i - 1):i + 2]) for i in range(len(values))]
        return [(s, -loss) for s, loss in zip(smoothed, losses)]
    if rule == "final":
        return [(i,) for i in range(len(values))]
    raise ValueError(f"select_epoch={rule!r} is not known; use one of {', '.join(SELECT_RULES)}")


def settled(rule: str, recorded: int, complete: bool) -> int:
    """How many of the `recorded` epochs have a key that later epochs can no longer change: all of a
    complete run; smoothed's last epoch waits for the next one, whose value joins its mean."""
    return recorded if complete else max(0, recorded - SETTLE_LAG.get(rule, 0))


def chosen_position(values: list[float], losses: list[float], rule: str = OLD_SELECT_RULE) -> int:
    """The one home of the val-chosen epoch: its 0-based position under `rule` (the first wins a tie).
    The summary, best.pt (training/engine.py), the report and benchmarks/selection_rules.py all ask here."""
    keys = selection_keys(values, losses, rule)
    return max(range(len(keys)), key=keys.__getitem__)  # max keeps the first of equal keys


def best_epoch(epochs: list[dict], metric: str | None = "top1", rule: str = OLD_SELECT_RULE) -> dict:
    """The epoch record `rule` chooses on val, in the data set's metric."""
    field = selection_field(metric)
    return epochs[chosen_position([e[field] for e in epochs], [e.get("val_loss") for e in epochs], rule)]


def select_rule(config: dict | None) -> str:
    """The rule that picked the run's epoch, from its config (specs.epoch_rule): `select_epoch`, or
    `random_init_select_epoch` from random weights; files from before the settings chose by `acc`."""
    config = config or {}
    return epoch_rule(config.get("select_epoch") or OLD_SELECT_RULE, config.get("random_init_select_epoch"),
                      config.get("pretrained") is None or bool(config["pretrained"]))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def summarize(epochs: list[dict], metric: str | None = "top1", rule: str = OLD_SELECT_RULE) -> dict | None:
    """Accuracies are fractions in [0, 1]. The best epoch is chosen on val only, by `rule`
    (chosen_position; the first wins a tie), on the data set's `metric`; the test split is reported at the last epoch and at that
    chosen epoch, never maximized. *_acc are top-1 (best_val_acc and test_acc_at_best_val: at the
    chosen epoch), *_metric the data set's metric. overfit_gap = final train acc - final test acc."""
    if not epochs:
        return None
    best, final = best_epoch(epochs, metric, rule), epochs[-1]
    val, test = metric_fields(metric)
    return {
        "final_test_acc": final["test_acc"], "test_acc_at_best_val": best["test_acc"],
        "final_val_acc": final["val_acc"], "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
        "final_train_acc": final["train_acc"], "final_val_loss": final["val_loss"],
        "final_test_loss": final["test_loss"], "overfit_gap": final["train_acc"] - final["test_acc"],
        "total_time_s": sum(e["time_s"] for e in epochs),
        "metric": metric or "top1", "final_test_metric": final[test], "test_metric_at_best_val": best[test],
        "final_val_metric": final[val], "best_val_metric": best[val], "select_epoch": rule,
        **_ema_summary(epochs, metric, rule),
    }


def _ema_summary(epochs: list[dict], metric: str | None, rule: str) -> dict:
    """`ema`: the weight EMA's scores (epoch fields ema_*), its epoch chosen on its own val curve by the same
    rule; {} for a run without one."""
    if "ema_val_acc" not in epochs[-1]:
        return {}
    averaged = [{"epoch": e["epoch"], **{k[len("ema_"):]: v for k, v in e.items() if k.startswith("ema_")}}
                for e in epochs]
    best, final = best_epoch(averaged, metric, rule), averaged[-1]
    val, test = metric_fields(metric)
    return {"ema": {"final_test_acc": final["test_acc"], "test_acc_at_best_val": best["test_acc"],
                    "final_val_acc": final["val_acc"], "best_val_acc": best["val_acc"], "best_epoch": best["epoch"],
                    "final_test_metric": final[test], "test_metric_at_best_val": best[test],
                    "best_val_metric": best[val]}}


def objective(summary: dict) -> float | None:
    """What a search maximizes: the best val value of the data set's metric (best_val_acc in files
    from before it, and in the placeholder of a run another process holds)."""
    return summary.get("best_val_metric", summary.get("best_val_acc"))


def update(result: dict, history) -> dict:
    """`history`: the core's History (epochs, iter_loss, iters_per_epoch), complete or partial."""
    result.update(epochs=history.epochs, iter_loss=history.iter_loss, iters_per_epoch=history.iters_per_epoch or None,
                  summary=summarize(history.epochs, result.get("metric"), select_rule(result.get("config"))),
                  compile=history.compile)
    return result


def finish(result: dict, history, error: BaseException | None) -> dict:
    update(result, history)
    interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))  # Ctrl-C, a cluster's preemption signal
    result.update(finished_at=_now(), status="interrupted" if interrupted else "failed" if error else "ok",
                  error={"type": type(error).__name__, "message": str(error)} if error else None)
    return result


def write_json_atomic(data: dict, path: Path) -> Path:
    """atomic.write_atomic with JSON; a failure names the fix."""
    try:
        return atomic.write_atomic(path, lambda handle: json.dump(data, handle, indent=1, default=str, allow_nan=True),
                                   binary=False)
    except OSError as err:
        kept = "the previous file is intact; " if Path(path).is_file() else ""
        raise ResultsWriteError(
            f"cannot write {path}: {err.strerror or err}; {kept}free disk space or fix the folder's permissions, or "
            f"write elsewhere (results_dir=..., or hydra.run.dir / hydra.sweep.dir), then run the same command "
            f"again") from err


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
