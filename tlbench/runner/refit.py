"""`python -m tlbench.refit <sweep> --tune optimizer.lr,optimizer.weight_decay`: the second half of a
select-then-refit protocol (Kornblith et al. 2019; VTAB-1k's paper): a sweep tried settings and scored each
on val; the setting chosen on val (the report's `--tune` rule, tlbench/report/tuning.py, per cell and init)
is trained again on train + val (`dataset.train_on=train_val`) for its fixed budget (`select_epoch=final`:
nothing is chosen on test), and that model's test metric is what the protocol reports.

Each refit is a run of its own, in `<out>/<run_id>/` (default out: `<first sweep>/refit`), so running the
command again skips what finished and resumes what did not. `<out>/refit.csv` puts every refit beside the
selection run it came from; `<out>/selection.csv` is what was tried and chosen (the report's "Tuned on val")."""

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from tlbench.errors import ConfigError
from tlbench.records import identity
from tlbench.runner import cli

log = logging.getLogger("tlbench")
REFIT = {"dataset.train_on": "train_val", "select_epoch": "final"}
# Settings an `auto` decides from the training split's size (result.json `resolved`): the refit trains at the value
# the selection run used, since train + val can cross the rule's threshold (LoRA's lr_ratio at 50 images per class).
KEPT_AS_RESOLVED = ("freeze.lr_ratio",)


@dataclass
class Refit:
    """One chosen run and the run that trains its setting on train + val."""
    setting: str
    init: str | None
    chosen: dict           # tuned setting -> the value chosen on val
    seed: int
    val_score: float       # the selection run's best_val_acc (the data set's metric on val)
    selection_run: str     # its result.json
    cfg: object            # the refit's config
    folder: Path


def plan(sweeps: list[Path], keys: list[str], out: Path | None = None,
         overrides=()) -> tuple[list[Refit], pd.DataFrame]:
    """(the refits of every finished run of each cell's chosen setting, the selection table)."""
    from tlbench.report.build import analyse
    from tlbench.report.compare import finished
    from tlbench.report.load import find_result_files
    from tlbench.report.tuning import TUNED_PREFIX
    from tlbench.runner.run import run_id_of

    if not keys:
        raise ConfigError("--tune names no setting: give the settings the sweep tried, chosen on val before the "
                          "refit, e.g. --tune optimizer.lr,optimizer.weight_decay")
    out = Path(out or Path(sweeps[0]) / "refit").resolve()
    try:  # the refits of an earlier call, in `out`, are not part of the selection
        files = [f for f in find_result_files(sweeps) if out not in f.resolve().parents]
        analysed = analyse(files, tune=keys)
    except (FileNotFoundError, ValueError) as err:  # no results there, or a setting the sweep did not record
        raise ConfigError(str(err)) from None
    runs, choices = analysed[0], analysed[5]
    chosen = finished(runs)
    if chosen.empty:
        raise ConfigError(f"no finished run under {', '.join(map(str, sweeps))} to refit")
    refits = []
    for _, row in chosen.iterrows():
        if row.get("config.dataset.train_on") == "train_val":
            raise ConfigError(f"{row['path']} is a refit already (dataset.train_on=train_val): give the selection "
                              "sweep, not the refit folder")
        cfg = refit_config(*_config_of(row["path"]), overrides)
        refits.append(Refit(setting=row["setting"], init=row.get("init"),
                            chosen={key: row.get(TUNED_PREFIX + key) for key in keys}, seed=int(row["config.seed"]),
                            val_score=row["summary.best_val_acc"], selection_run=row["path"], cfg=cfg,
                            folder=out / run_id_of(cfg)))
    return refits, choices


def refit_config(config: dict, resolved: dict | None = None, overrides=()):
    """The selection run's config (stored_config), trained on train + val for its fixed budget, with the values its
    size-dependent autos took (`resolved`: its result.json's; KEPT_AS_RESOLVED) kept unless `overrides` set them."""
    kept = [f"{key}={value}" for key, value in (resolved or {}).items() if key in KEPT_AS_RESOLVED]
    return stored_config(config, [*(f"{key}={value}" for key, value in REFIT.items()), *kept, *overrides])


def stored_config(config, overrides=()):
    """A run's config from its result.json, as a config again: top-level settings a result.json of an older
    tlbench lacks get the value that run had (identity.LATER_SETTINGS: select_epoch, min_steps, steps; a group's
    keys keep their code defaults); `overrides`: key=value."""
    cfg = OmegaConf.create(config)
    for key, value in identity.LATER_SETTINGS.items():
        if "." not in key and key not in cfg:
            cfg[key] = value
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ConfigError(f"{override!r} is not key=value (e.g. device=cuda)")
        # the value as YAML reads it, as Hydra's command line does: false, 5, 1e-3, [1,2] are not strings
        OmegaConf.update(cfg, key.lstrip("+"), OmegaConf.create(f"v: {value}").v if value else None, force_add=True)
    return cfg


def _config_of(result_path) -> tuple[dict, dict | None]:
    import json

    result = json.loads(Path(result_path).read_text(encoding="utf-8"))
    return result["config"], result.get("resolved")


def train(refits: list[Refit]) -> list[dict]:
    """Runs each refit (a failure is recorded in its result.json and the next one goes on)."""
    from tlbench.runner.run import run

    results = []
    for number, refit in enumerate(refits, start=1):
        log.info("[refit] %d/%d: %s (%s) with %s, seed %d -> %s", number, len(refits), refit.setting, refit.init,
                 _values(refit.chosen), refit.seed, refit.folder)
        try:
            results.append(run(refit.cfg, output_dir=refit.folder))
        except Exception as err:  # noqa: BLE001 - recorded in its result.json; the other refits still run
            log.error("[refit] %s failed: %s", refit.folder, err)
            results.append({"status": "failed", "summary": None})
    return results


def table(refits: list[Refit], results: list[dict]) -> pd.DataFrame:
    """refit.csv: each refit beside the selection run whose setting it trains."""
    rows = []
    for refit, result in zip(refits, results):
        summary = result.get("summary") or {}
        rows.append({"setting": refit.setting, "init": refit.init, **refit.chosen, "seed": refit.seed,
                     "val_score_of_choice": refit.val_score, "refit_status": result.get("status"),
                     "refit_test_metric": summary.get("final_test_metric"), "metric": result.get("metric"),
                     "train_size": (result.get("data_info") or {}).get("train_size"),
                     "selection_run": refit.selection_run, "refit_run": str(refit.folder / "result.json")})
    return pd.DataFrame(rows)


def _values(chosen: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in chosen.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tlbench.refit",
        description="Trains the setting each cell of a sweep chose on val again on train + val, for its fixed "
                    "budget, and reports that model's test metric (select, then refit).")
    parser.add_argument("sweeps", nargs="+", type=Path, help="the selection sweep's folder(s)")
    parser.add_argument("--tune", required=True, metavar="SETTINGS",
                        help="the settings the sweep tried, chosen on val per cell: "
                             "e.g. optimizer.lr,optimizer.weight_decay")
    parser.add_argument("--out", type=Path, help="where the refits go (default <first sweep>/refit)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every refit, e.g. --set device=cuda (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="list the refits, train nothing")
    return parser


def main(argv=None) -> int:
    from tlbench.report.tuning import parse_keys

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    keys = parse_keys(args.tune)
    try:
        refits, choices = plan(args.sweeps, keys, args.out, args.overrides)
    except Exception as err:  # noqa: BLE001 - a user's error is one message (exit 2); anything else re-raised
        return cli.exit_code(err)
    for refit in refits:
        print(f"{refit.setting} ({refit.init}): {_values(refit.chosen)}, seed {refit.seed} "
              f"(val {100 * refit.val_score:.2f}) -> {refit.folder}")
    if args.dry_run:
        return 0
    results = train(refits)
    out = refits[0].folder.parent
    out.mkdir(parents=True, exist_ok=True)
    choices.to_csv(out / "selection.csv", index=False)
    done = table(refits, results)
    done.to_csv(out / "refit.csv", index=False)
    print(done[["setting", "init", *keys, "seed", "val_score_of_choice", "refit_status", "refit_test_metric"]]
          .to_string(index=False))
    return 0 if all(result.get("status") == "ok" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
