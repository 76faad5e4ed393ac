"""`run(cfg)`: compose-time config in, one result.json out. Works with or without the Hydra
runtime (tests compose a config and call it directly). The config is read here and only here;
everything below receives objects."""

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from tlbench import models, probes
from tlbench.data import augment
from tlbench.models import adapters, export
from tlbench.records import identity, results
from tlbench.runner import build, devices, loggers, resume, runlock, settings
from tlbench.training import checkpoint, compiled, cost, engine, schedules, wise

log = logging.getLogger("tlbench")
RESULT_FILE = results.RESULT_FILE


def run(cfg: DictConfig, output_dir=None) -> dict:
    """Trains one configuration; writes `<output_dir>/result.json` (status ok or failed) and
    returns it. A failure is recorded in the file, then re-raised. One process at a time trains a
    folder (runlock.py): one that another live process holds is left to it (run_lock=skip; returned
    as status "held", no metrics, nothing written) or waited for (run_lock=wait). What an earlier
    attempt left in the folder decides the start (resume.py): a complete run with the same run_id
    is skipped, an unfinished one goes on from its last epoch checkpoint, anything else is archived."""
    output_dir = Path(output_dir or _hydra_output_dir() or cfg.results_dir)
    cfg = settings.concrete(cfg)  # augment=auto: the data set's recipe, named in result.json
    config = resolved_config(cfg)
    result = results.new_result(config, identity.fingerprint_paths(config))
    try:
        lock = runlock.take(output_dir, cfg.run_lock)  # before anything reads the folder: never resume a live run
    except runlock.RunHeld as held:
        log.warning("%s", held)
        # best_val_acc is a search's objective: none here, as this process trained nothing
        return {"run_id": result["run_id"], "status": "held", "held_by": held.holder,
                "summary": {"best_val_acc": None}}
    with lock:
        plan = resume.plan(output_dir, result["run_id"], cfg.resume)
        trackers = loggers.build(config.get("logger"), loggers.RunInfo(result["run_id"], output_dir,
                                                                       _sweep_name() or loggers.DEFAULT_EXPERIMENT))
        if plan.action == "skip":  # a logger added to a finished command gets its copy; nothing trains
            trackers.copy(plan.previous)
            return plan.previous
        history = engine.History()
        if plan.action == "resume":  # the epochs so far stay in result.json even if this attempt fails early
            result = results.resumed(plan.previous, config, after_epoch=plan.state["epoch"])
            history = engine.History(**plan.state["history"])
            results.update(result, history)  # the epochs after the last save are trained again: drop them now
        result_path = output_dir / RESULT_FILE
        results.write_json_atomic(result, result_path)  # fails now if the folder is not writable
        trackers.start(result)  # each logger copies result.json as it grows, and never fails the run
        try:
            _train(cfg, Attempt(output_dir, results.RunRecord(result), history, plan.state, trackers.update))
        except BaseException as err:
            results.write_json_atomic(results.finish(result, history, err), result_path)
            trackers.finish(result)
            raise  # the checkpoint stays: running the same command again resumes from it
        results.write_json_atomic(results.finish(result, history, None), result_path)
        trackers.finish(result)
        if not cfg.keep_checkpoint:
            (output_dir / checkpoint.CHECKPOINT_FILE).unlink(missing_ok=True)
    log.info("wrote %s: final test acc %.2f%%", result_path, 100 * result["summary"]["final_test_acc"])
    return result


def resolved_config(cfg: DictConfig) -> dict:
    """The composed config as result.json records it (and its run_id is computed from)."""
    config = OmegaConf.to_container(settings.concrete(cfg), resolve=True)
    config.pop("hydra", None)
    return config


def run_id_of(cfg: DictConfig) -> str:
    """The run_id that `run(cfg)` gives its result (identity.py: the experiment, local files by content)."""
    config = resolved_config(cfg)
    return identity.run_id(config, identity.fingerprint_paths(config))


@dataclass
class Attempt:
    """One attempt at a run: the folder it writes, the result.json it fills (through its RunRecord),
    the epochs so far, the checkpoint it resumes from and who hears of each epoch."""
    output_dir: Path
    record: results.RunRecord
    history: engine.History
    resume_from: dict | None = None
    on_epoch: Callable[[dict], None] | None = None  # called after each epoch's result.json is written
    started: float = 0.0  # perf_counter once the device is held: the run's cost counts wall time from here


def _train(cfg, attempt: Attempt) -> None:
    build.check_settings(cfg)
    job_num, launcher = _hydra_job()
    # Jobs running side by side each hold a free entry of `devices` for their whole run.
    with devices.claim_device(cfg.device, cfg.devices, job_num, _claims_dir(launcher)) as requested:
        device = devices.resolve_device(requested)
        attempt.started = time.perf_counter()
        devices.select(device)
        threads = devices.set_threads(cfg.threads, launcher)
        attempt.record.seeded(devices.seed_everything(cfg.seed), devices.set_deterministic(cfg.deterministic, device))
        splits, built = build.prepare(cfg)  # may fail (data or weights missing): the seeds are recorded already
        attempt.record.started(splits.metric, {**devices.env_info(device, devices.device_name(device)),
                                               "threads": threads, "job_num": job_num})
        (_probe if probes.is_probe(cfg.freeze.name) else _fine_tune)(cfg, attempt, splits, built, device)


def _probe(cfg, attempt: Attempt, splits, built: models.BuiltModel, device) -> None:
    """freeze=knn / logreg: features once and a fitted classifier, no training loop."""
    record, history = attempt.record, attempt.history
    record.model(build.model_info(built))  # before a torchvision head becomes identity (features.py)
    dataset_identity = _dataset_identity(record)  # names
    outcome = probes.run_probe(settings.probe(cfg.freeze, cfg.dataset.val_split),  # for the feature cache
                               build.feature_spec(cfg, built, device), splits, built, device, dataset_identity)
    history.epochs.append(outcome.record)
    history.iter_loss.append(outcome.record["train_loss"])  # one "step": the fit
    history.iters_per_epoch = 1
    record.probe(outcome.probe, outcome.feature_dim)
    record.precision(amp=devices.resolve_flag(cfg.amp, device), channels_last=False)  # as features.py extracts
    record.data_info(build.data_info(splits))
    record.cost(run_cost(cfg, built.model.to(device), splits, history, attempt.started, device))  # GMACs where
    # the features were extracted


def _dataset_identity(record) -> dict:
    """The run identity's `dataset.*` keys: what names the data for the feature cache."""
    return {k: v for k, v in record.data["identity"].items() if k.startswith("dataset.")}


def _fine_tune(cfg, attempt: Attempt, splits, built: models.BuiltModel, device) -> None:
    record, output_dir = attempt.record, attempt.output_dir
    if cfg.model.head_init == "probe":  # LP-FT: the head fitted on the starting features (a resume restores it)
        record.data["head_probe"] = build.probe_head(cfg, built, splits, device, _dataset_identity(record))
    facts = build.adapt(cfg, built)  # freeze=lora: adapters injected here, before the model moves or compiles
    loaders = build.make_loaders(cfg, splits, built, device)
    record.data_info(build.data_info(splits))
    if cfg.compile:  # static shapes, so a short last batch compiles no graph of its own (compiled.StaticBatches)
        sizes = {name: record.data["data_info"][f"{name}_size"] for name in loaders}
        loaders = compiled.static_loaders(loaders, sizes, cfg.batch_size, cfg.eval_batch_size or 2 * cfg.batch_size)
    run_budget = build.budget(cfg, loaders["train"])
    record.budget(run_budget.describe())
    if run_budget.changed:
        log.info("%s", run_budget.note())
    cfg = build.budgeted(cfg, run_budget)  # below here cfg.epochs is the epochs this run trains
    strategy = build.build_strategy(cfg, built, facts, record.data["data_info"])
    record.resolved(build.resolved(cfg, record.data["data_info"], len(loaders["train"])))
    cfg = build.random_init_lr(cfg)  # below here a random-init run's optimizer.lr is the lr it trains at
    build.set_bn_momentum(cfg, built.model, len(loaders["train"]))
    record.model(build.model_info(built))  # with LoRA's adapters, once injected
    options = build.core_options(
        cfg, device, built.model, len(splits.classes), built.stages, best_checkpoint=output_dir / "best.pt" if cfg.save_best else None,
        show_progress=sys.stderr.isatty(),
        checkpoint=output_dir / checkpoint.CHECKPOINT_FILE, checkpoint_info={"run_id": record.data["run_id"]},
        checkpoint_every_s=cfg.checkpoint_every_s, select_on=results.selection_field(splits.metric),
        select_epoch=build.epoch_rule(cfg),
        eval_view=adapters.merged if "lora" in built.info else None)  # val/test on the merged weights: faster
    record.precision(options.amp, options.channels_last)
    model = build.placed_model(cfg, built, device, options, strategy)
    found = record.lr_find() if build.wanted(cfg.optimizer) else None  # lr=find: one lr per freeze phase
    optimizers = build.optimizer_factory(cfg, device.type == "cuda", loaders["train"], device, options, strategy,
                                         output_dir / "lr_find", found)
    resume_from = attempt.resume_from
    if resume_from is not None:  # maybe written on other hardware: fitted to this device, reseeds recorded
        kernels = {"fused": optimizers.fused or None, "foreach": optimizers.kwargs.get("foreach")}
        resume_from, reseeded = checkpoint.portable(resume_from, loaders["train"], device, kernels)
        record.resumed_rng(checkpoint.describe(reseeded))
    start = wise.snapshot(built.model) if cfg.get("wise_ft") else None  # before a resume restores anything
    ema = build.weight_ema(cfg, built.model)  # the average starts at the starting weights (a resume restores it)
    engine.fit(model, loaders["train"], loaders["val"], strategy, optimizers,
               schedules.build_schedule(epochs=cfg.epochs, steps_per_epoch=len(loaders["train"]),
                                        total_steps=run_budget.steps,
                                        **build.schedule_settings(cfg.schedule, splits.metric)),
               device, options, attempt.history, resume=resume_from, test_loader=loaders.get("test"),
               on_epoch_end=lambda record: _epoch_done(attempt), hooks=compiled.CompileHooks(model) if cfg.compile
               else None, ema=ema)
    tested = loaders.get("test", loaders["val"])  # compile=true: its static batches wrap the split's DeviceBatches
    shift = build.shift_scorer(cfg, getattr(tested, "loader", tested), device, options)  # scored eagerly
    if start is not None:  # with test_shift, each mix is scored under the corruptions too
        record.wise_ft(wise.curve(built.model, start, list(cfg.wise_ft), loaders["val"], loaders.get("test"), device,
                                  options, results.selection_field(splits.metric), splits.val_is_test,
                                  also=None if shift is None else lambda mixed: {"shift_mean_acc": shift(mixed)["mean_acc"]},
                                  recompute_bn=wise.bn_recompute(getattr(loaders["train"], "loader", loaders["train"]),
                                                                 device) if cfg.wise_ft_bn == "recompute" else None))
    if shift is not None:
        record.data["test_shift"] = shift(built.model)
        if ema is not None:  # the weight EMA after the last step, on the same images
            record.data["test_shift"]["ema"] = {k: v for k, v in shift(ema.module).items() if k.endswith("acc")}
    record.cost(run_cost(cfg, built.model, splits, attempt.history, attempt.started, device))  # before saving
    if cfg.save_model:
        keep_models(cfg, output_dir, getattr(model, "_orig_mod", model), splits, built, record.data, attempt.history,
                    ema)


def _epoch_done(attempt: Attempt) -> None:
    results.write_json_atomic(results.update(attempt.record.data, attempt.history), attempt.output_dir / RESULT_FILE)
    if attempt.on_epoch:
        attempt.on_epoch(attempt.record.data)


def run_cost(cfg, model, splits, history: engine.History, started: float, device) -> dict:
    """result.json `cost` of a run whose (uncompiled) model is `model`, wall time since `started`;
    its GMACs are counted after training, in eval mode, so nothing it trained moves."""
    input_size = cfg.input_size or splits.image_size
    return cost.summary(models.count_params(model), history.epochs, cost.forward_gmacs(model, input_size, device),
                        input_size, time.perf_counter() - started, device)


def keep_models(cfg, output_dir: Path, model, splits, built, result: dict, history: engine.History,
                ema=None) -> None:
    """The final model as model.safetensors + model.json (tlbench/models/export.py), the val-chosen epoch's
    (save_best's best.pt; chosen by the run's epoch rule on the data set's metric) as best.safetensors + best.json,
    and the weight EMA after the last step (`ema`, when on) as ema.safetensors + ema.json, with what predicting
    needs."""
    mean, std = augment.resolve_normalization(cfg.normalize, built.mean, built.std)
    meta = {"model": {"name": cfg.model.name, "source": cfg.model.source,
                      "kwargs": OmegaConf.to_container(cfg.model.kwargs) if cfg.model.get("kwargs") else None},
            "classes": list(splits.classes), "run_id": result["run_id"],
            "preprocessing": {"image_size": splits.image_size, "input_size": cfg.input_size or splits.image_size,
                              "mean": list(mean), "std": list(std), **splits.preprocess.describe()},
            "chosen_on": "test" if splits.val_is_test else "val"}
    last = history.epochs[-1]
    adapted = "lora" in built.info  # saved with the adapters merged: the plain architecture, as predict rebuilds it
    export.save_model(output_dir, "model", (adapters.merged(model) if adapted else model).state_dict(),
                      {**meta, "which": "final", "epoch": last["epoch"], "test_acc": last["test_acc"]})
    best_pt = output_dir / "best.pt"
    if best_pt.exists():
        best = results.best_epoch(history.epochs, splits.metric, build.epoch_rule(cfg))  # the epoch best.pt holds
        state = torch.load(best_pt, map_location="cpu", weights_only=True)
        export.save_model(output_dir, "best", adapters.merged(model, state).state_dict() if adapted else state,
                          {**meta, "which": "best", "epoch": best["epoch"], "test_acc": best["test_acc"]})
        best_pt.unlink()
    if ema is not None:  # tlbench-predict --which ema, tlbench-soup --which ema
        export.save_model(output_dir, "ema", (adapters.merged(model, ema.module.state_dict()) if adapted
                                              else ema.module).state_dict(),
                          {**meta, "which": "ema", "epoch": last["epoch"], "test_acc": last.get("ema_test_acc")})


def _hydra_output_dir() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None


def _claims_dir(launcher: dict | None) -> Path | None:
    """Where the jobs of a sweep claim devices: in the sweep folder when the launcher runs jobs
    side by side on this machine (joblib's n_jobs); None otherwise (submitit's may run on other
    machines, each given its own GPU by SLURM)."""
    from hydra.core.hydra_config import HydraConfig

    if not launcher or "n_jobs" not in launcher:
        return None
    return Path(HydraConfig.get().sweep.dir) / devices.CLAIMS_FOLDER


def _sweep_name() -> str | None:
    """The sweep folder's name in a multirun (the loggers' experiment); None outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def _hydra_job() -> tuple[int | None, dict | None]:
    """The job's number in its sweep and the launcher's settings; (None, None) outside a sweep."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    job_num = OmegaConf.select(hydra_cfg, "job.num", default=None)
    launcher = OmegaConf.to_container(hydra_cfg.launcher, resolve=True) if job_num is not None else None
    return job_num, launcher
