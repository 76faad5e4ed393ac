"""`tlbench-soup <sweep> [...]`: model soups (Wortsman et al., ICML 2022) of a sweep's fine-tuned models.

Models that started from the same weights on the same data (the same `model.*`, `pretrained`, `dataset.*`,
`input_size` and `normalize` in their run identity) and differ in anything else (learning rate, weight decay,
freeze strategy, mixing, seed...) are averaged weight by weight:

- the **uniform** soup averages every ingredient;
- the **greedy** soup takes the ingredients in order of their val score (the data set's metric) and keeps
  each one whose addition does not lower the soup's val score, so it is never worse on val than the best
  ingredient; test is scored once, at the end, and chooses nothing.

Each soup, each ingredient and the best single ingredient (by val) are scored on val and test with the
data and preprocessing of the runs, rebuilt from their config. `<out>/soups.csv` puts them side by side;
each group's greedy and uniform soups are kept as model files (`<out>/<group>/greedy/model.safetensors` + model.json,
which tlbench-predict reads). Averaged: every floating-point tensor (BatchNorm statistics too); integer
buffers (BatchNorm's batch counts) come from the first ingredient. With `--bn recompute`, every average of two or
more models has its BatchNorm statistics measured anew on the runs' training batches (as WiSE-FT's
`wise_ft_bn=recompute`, training/wise.py) before it is scored and kept. LoRA runs saved their adapters merged,
so they soup with the others."""

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import safetensors.torch
import torch

from tlbench.errors import ConfigError
from tlbench.records import identity, results
from tlbench.runner import cli

log = logging.getLogger("tlbench")
# The run identity's keys that ingredients of one soup share: the starting weights, the data, what the model sees.
SHARED_PREFIXES = ("model.", "dataset.")
SHARED_KEYS = ("pretrained", "input_size", "normalize")
SCORING_ONLY = ("l2sp.alpha=0", "l2sp.beta=0", "mix.mixup_alpha=0", "mix.cutmix_alpha=0", "ema.decay=0")


@dataclass
class Ingredient:
    folder: Path
    run_id: str
    label: str           # what sets it apart in its group (the identity keys its group does not share)
    state: dict = field(repr=False, default_factory=dict)
    val: float = float("nan")    # the data set's metric, as scored here
    test: float = float("nan")


def group_key(ident: dict) -> str:
    """What ingredients of one soup must share, as a short hash of those identity keys."""
    shared = {k: v for k, v in ident.items() if k.startswith(SHARED_PREFIXES) or k in SHARED_KEYS}
    return identity.run_id(shared)


NEEDS = {"best": " save_best=true", "ema": " and a weight EMA (e.g. ema.decay=0.999)"}  # what --which X needs


def find_ingredients(sweeps: list[Path], which: str) -> dict[str, list[tuple[Path, dict]]]:
    """{group: [(run folder, result)]} of every finished run under `sweeps` that kept its model."""
    from tlbench.models.export import STEMS
    from tlbench.report.load import find_result_files

    try:
        files = find_result_files(sweeps)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    groups: dict[str, list] = {}
    for path in files:
        result = json.loads(path.read_text(encoding="utf-8"))
        if result.get("status") != "ok" or not (path.parent / f"{STEMS[which]}.json").is_file():
            continue
        groups.setdefault(group_key(result["identity"]), []).append((path.parent, result))
    if not any(len(runs) > 1 for runs in groups.values()):
        saved = sum(len(runs) for runs in groups.values())
        raise ConfigError(
            f"no two finished runs under {', '.join(map(str, sweeps))} kept a model ({STEMS[which]}.safetensors) and "
            f"share their starting weights and data ({saved} kept one); a soup needs a sweep of fine-tuning runs of "
            f"one model on one data set, run with save_model=true{NEEDS.get(which, '')}")
    return groups


def average(states: list[dict]) -> dict:
    """The weight-by-weight mean of `states` (floating-point tensors in float32, then their own dtype);
    other tensors from the first."""
    first = states[0]
    return {key: (torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
                  if value.is_floating_point() else value.clone()) for key, value in first.items()}


class Scorer:
    """Val and test of a state dict, on the data of a group's first run rebuilt from its config."""

    def __init__(self, config: dict, overrides=(), bn: str = "average"):
        from tlbench.runner import build, devices
        from tlbench.runner.refit import stored_config
        from tlbench.training import wise

        # every weight comes from the files (nothing to download); scoring trains nothing (no penalty to build)
        cfg = stored_config(config, ["pretrained=false", *SCORING_ONLY, *overrides])
        self.device = devices.resolve_device(cfg.device)
        splits, built = build.prepare(cfg)
        self.metric = splits.metric
        self.model = built.model.to(self.device)
        loaders = build.make_loaders(cfg, splits, built, self.device)
        self.val, self.test = loaders["val"], loaders.get("test")
        self.options = build.core_options(cfg, self.device, self.model, len(splits.classes))
        self.bn = bn
        self.recompute = wise.bn_recompute(loaders["train"], self.device) if bn == "recompute" else None

    def settle(self, state: dict) -> dict:
        """An average's state, its BatchNorm statistics measured anew under --bn recompute (as it is then scored
        and kept); else `state` as it is."""
        if self.recompute is None:
            return state
        self.model.load_state_dict(state, strict=True)
        self.recompute(self.model)
        return {key: value.detach().clone() for key, value in self.model.state_dict().items()}

    def __call__(self, state: dict, split: str = "val") -> float:
        from tlbench.training import engine

        self.model.load_state_dict(state, strict=True)
        loader = self.val if split == "val" or self.test is None else self.test
        _, acc, mean_class = engine.evaluate(self.model, loader, self.device, self.options)
        return mean_class if self.metric == "mean_per_class" else acc


def cook(runs: list[tuple[Path, dict]], which: str, score: Scorer) -> dict:
    """One group's ingredients, uniform and greedy soups, each scored; the soups' weights under "states"."""
    from tlbench.models.export import STEMS

    flats = [identity.flatten(result["identity"]) for _, result in runs]
    varying = sorted({k for flat in flats for k in flat if len({json.dumps(f.get(k)) for f in flats}) > 1})
    ingredients = []
    for (folder, result), flat in zip(runs, flats):
        state = safetensors.torch.load_file(folder / f"{STEMS[which]}.safetensors")
        item = Ingredient(folder, result["run_id"], " ".join(f"{k}={flat.get(k)}" for k in varying) or result["run_id"],
                          state)
        item.val, item.test = score(state, "val"), score(state, "test")
        ingredients.append(item)
    ranked = sorted(ingredients, key=lambda i: -i.val)  # stable: equal val keeps the sweep's order
    greedy, greedy_val, greedy_state = [ranked[0]], ranked[0].val, ranked[0].state
    for candidate in ranked[1:]:
        state = score.settle(average([i.state for i in [*greedy, candidate]]))  # kept as scored: never re-measured
        tried = score(state, "val")
        if tried >= greedy_val:
            greedy, greedy_val, greedy_state = [*greedy, candidate], tried, state
    uniform_state = score.settle(average([i.state for i in ingredients]))
    soups = {"uniform": (ingredients, uniform_state), "greedy": (greedy, greedy_state)}
    return {"metric": score.metric, "bn": score.bn, "varying": varying, "best_single": _row(ranked[0]),
            "ingredients": [_row(i) for i in ingredients],
            **{name: {"members": [i.run_id for i in members], "val": score(state, "val"), "test": score(state, "test")}
               for name, (members, state) in soups.items()},
            "states": {name: state for name, (_, state) in soups.items()}}


def _row(item: Ingredient) -> dict:
    return {"run_id": item.run_id, "label": item.label, "folder": str(item.folder), "val": item.val, "test": item.test}


def keep(out: Path, group: str, soup: dict, first_run: Path, which: str) -> None:
    """Each soup as model.safetensors + model.json (the first ingredient's card: same classes and preprocessing)."""
    from tlbench.models import export

    meta = export.read_meta(export.model_card(first_run, which))
    for name, state in soup["states"].items():
        card = {k: v for k, v in meta.items() if k not in ("format", "weights")}
        card.update(which="final", epoch=None, test_acc=soup[name]["test"], run_id=None,
                    soup={"kind": name, "members": soup[name]["members"]})
        export.save_model(out / group / name, "model", state, card)


def table(soups: dict) -> pd.DataFrame:
    rows = []
    for group, soup in soups.items():
        for item in soup["ingredients"]:
            rows.append({"group": group, "kind": "ingredient", "members": 1, "label": item["label"],
                         "val": item["val"], "test": item["test"]})
        rows.append({"group": group, "kind": "best single (by val)", "members": 1, "label": soup["best_single"]["label"],
                     "val": soup["best_single"]["val"], "test": soup["best_single"]["test"]})
        for name in ("uniform", "greedy"):
            rows.append({"group": group, "kind": f"{name} soup", "members": len(soup[name]["members"]), "label": "",
                         "val": soup[name]["val"], "test": soup[name]["test"]})
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tlbench.soup", description="Model soups of a sweep's fine-tuned models: uniform and greedy (on val), "
                                         "each scored on val and test beside its ingredients.")
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep folder(s) of runs with save_model=true")
    parser.add_argument("--which", choices=["final", "best", "ema"], default="final",
                        help="each run's final model (model.safetensors), its val-chosen one (best.safetensors, "
                             "save_best=true) or its weight EMA after the last step (ema.safetensors, ema.decay > 0)")
    parser.add_argument("--out", type=Path, help="where the table and the soups go (default <first sweep>/soups)")
    parser.add_argument("--bn", choices=["average", "recompute"], default="average",
                        help="a soup's BatchNorm statistics: averaged like its weights, or measured anew on the runs' "
                             "training batches (torch's update_bn, up to 50 batches)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for scoring, e.g. --set device=cuda (repeatable)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out or Path(args.sweeps[0]) / "soups")
    try:
        groups = find_ingredients(args.sweeps, args.which)
        soups = {}
        for group, runs in groups.items():
            if len(runs) < 2:
                log.info("[soup] group %s: one run (%s), nothing to average", group, runs[0][0])
                continue
            log.info("[soup] group %s: %d ingredients", group, len(runs))
            soups[group] = cook(runs, args.which, Scorer(runs[0][1]["config"], args.overrides, args.bn))
            keep(out, group, soups[group], runs[0][0], args.which)
    except Exception as err:  # noqa: BLE001 - a user's error is one message (exit 2); anything else re-raised
        return cli.exit_code(err)
    done = table(soups)
    out.mkdir(parents=True, exist_ok=True)
    done.to_csv(out / "soups.csv", index=False)
    results.write_json_atomic({group: {k: v for k, v in soup.items() if k != "states"} for group, soup in soups.items()},
                              out / "soups.json")
    print(done.to_string(index=False, float_format=lambda v: f"{100 * v:.2f}"))
    print(f"soups: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
