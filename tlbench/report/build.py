"""write_report: result.json files in, report.md / report.html / CSVs / PNGs out."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tlbench.report import (across, averaging, charts, compare, efficiency, frontier, published, robustness,
                            selection, tables, tuning)
from tlbench.report.document import Bullets, Heading, Image, Paragraph, Table, to_html, to_markdown
from tlbench.report.findings import findings
from tlbench.report.groups import add_group_keys, group_label
from tlbench.report.load import DATASET_METRIC_FIELDS, epochs_table, iter_loss_table, read_results, runs_table
from tlbench.report.metrics import add_run_metrics

TITLE = "tlbench transfer-learning report"
DEFINITIONS = [
    "Groups: runs of the same experiment (result.json `identity`: the config without paths and speed-only "
    "settings, local data and weights by content) that differ only in seed.",
    "95% CI: Student t interval of the mean across seeds; n = 1 gives no interval.",
    "Pretrained − random: paired t on per-seed differences when both sides ran the same "
    "seeds, otherwise Welch t on the difference of means.",
    "Val-best epoch: the epoch each run's select_epoch rule chose on the val split only (acc_loss, the "
    "default: the highest val accuracy, ties to the lowest val loss; acc, the rule of files without the "
    "setting: the first epoch with the highest val_acc; final: the last epoch, nothing chosen, as random-init "
    "runs do by default: random_init_select_epoch). The headline "
    "accuracies are the compared metric at the final epoch and at the val-best epoch; the "
    "maximum of test accuracy over epochs is never reported, as it is chosen by looking at the "
    "test split.",
    "val_is_test: the run's val split was its test split (schema-1 files, or "
    "dataset.val_split=0 as the write-up presets set to keep their published protocol) and it chose its "
    "val-best epoch (or a probe's C) there, so its accuracy there is optimistic. A run without a val split "
    "that chose nothing (select_epoch=final; knn; C by cross-validation) is not flagged "
    "(runs.csv data_info.val_is_test keeps the data fact).",
    "Epochs to X% of own best: first epoch whose value reaches X% of the run's maximum; "
    "seconds: cumulative time_s up to that epoch. 'never': the run did not get there.",
    "AUC: mean of the metric over recorded epochs (area under the per-epoch curve divided "
    "by the number of epochs), in [0, 1].",
    "Accuracy: each data set's own metric (result.json `metric`): top-1, or mean per-class accuracy (the "
    "mean over the classes of the split of each class's accuracy) where the literature reports it (Kornblith "
    "et al. 2019: FGVC Aircraft, Oxford-IIIT Pets, Caltech-101, Flowers-102). val_acc, test_acc, the "
    "val-best epoch and every headline are read in it; val_top1_acc and test_top1_acc keep top-1.",
    "Overfitting gap: train_acc − test_acc, both top-1; first divergence: first epoch where val loss "
    "rose while train loss fell, compared with the epoch before.",
    "Failed or unfinished runs (status other than ok) are listed but left out of every "
    "statistic and chart.",
]


def analyse(paths, metric: str = "test_acc", fraction: float = 0.9, threshold: float = 0.9, tune=()):
    """(runs, epochs, losses, summary, deltas, tuning) tables for the result files under `paths`;
    `tune`: settings chosen on val per cell (tuning.py; `tuning` lists the choices, else empty)."""
    results = read_results(paths)
    if not results:
        raise ValueError(f"none of the result.json files under {list(map(str, paths))} "
                         "could be read; see the warnings above")
    runs = runs_table(results)
    if "model" not in runs.columns:
        runs["model"] = runs.get("config.model.name", "model")
    epochs, losses = epochs_table(results), iter_loss_table(results)
    runs = selection.add_selection_columns(add_run_metrics(runs, epochs, metric, fraction, threshold))
    runs, choices = tuning.tune(add_group_keys(runs), list(tune))
    ok = compare.finished(runs)
    labels = compare.setting_columns(ok)
    runs["setting"] = [group_label(row, labels) for _, row in runs.iterrows()]
    return (runs, epochs, losses, compare.group_summary(runs, metric),
            compare.pretrained_deltas(runs, metric), choices)


def _with_run_info(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch or per-step rows of finished runs, tagged with model and init."""
    ok = compare.finished(runs)[[c for c in ("path", "model", "init", "metric") if c in runs.columns]]
    return frame.drop(columns=["run_id"], errors="ignore").merge(ok, on="path")


def draw_charts(out_dir: Path, runs, epochs, losses, deltas, metric, fraction, font, points=None) -> dict:
    """Every chart the data allows, as {name: png path}."""
    drawn = {}
    ok = compare.finished(runs)
    name = tables.metric_name(metric, tables.metric_kinds(ok))
    with charts.chart_style(font):
        curves = _with_run_info(epochs, runs)
        if len(curves) and metric in curves.columns:
            drawn["curves"] = charts.accuracy_curves(curves, metric,
                                                     out_dir / f"{metric}_per_epoch.png")
        if len(deltas):
            labels = [group_label(r, list(deltas.columns[: deltas.columns.get_loc("n_pretrained")]))
                      for _, r in deltas.iterrows()]
            drawn["deltas"] = charts.pretrained_deltas(
                deltas, labels, metric, out_dir / "pretrained_vs_random.png")
        if len(ok):
            drawn["convergence"] = charts.per_setting(
                ok, "epochs_to_fraction", "epochs",
                f"Epochs until {100 * fraction:g}% of own best {name}",
                out_dir / "convergence_speed.png")
            drawn["overfitting"] = charts.per_setting(
                ok, "overfit_gap", "train − test accuracy (points)",
                "Overfitting gap at the final epoch", out_dir / "overfitting_gap.png", scale=100)
        steps = _with_run_info(losses, runs)
        if len(steps):
            drawn["loss"] = charts.iteration_loss(steps, out_dir / "train_loss_per_iteration.png")
        drawn.update(frontier_charts(out_dir, runs, metric))
        if points is not None and len(points):
            drawn["efficiency"] = charts.data_efficiency(
                points, f"{tables.metric_name(metric, tables.metric_kinds(points))} at val-best epoch (%)",
                out_dir / "data_efficiency.png")
        drawn.update(writeup_charts(out_dir, runs, epochs, losses))
        wise = averaging.draw_wise(averaging.wise_curves(ok), out_dir / "wise_ft.png")
        if wise is not None:
            drawn["wise_ft"] = wise
        shifted = robustness.draw_shift(ok, robustness.trend(robustness.shifted_runs(ok)), out_dir / "under_shift.png")
        if shifted is not None:
            drawn["under_shift"] = shifted
    return drawn


def frontier_charts(out_dir: Path, runs, metric) -> dict:
    """Accuracy against each recorded cost (frontier.COSTS), when runs recorded it."""
    points, drawn = frontier.group_points(runs, f"{metric}_at_best_val"), {}
    name = tables.metric_name(metric, tables.metric_kinds(points))
    for cost, (label, unit) in frontier.COSTS.items():
        if len(points) and points[cost].notna().any():
            drawn[f"frontier {cost}"] = charts.cost_frontier(
                points, cost, frontier.on_frontier(points, cost), f"{label} ({unit})",
                f"{name} at val-best epoch (%)", out_dir / f"frontier_{cost.split('.')[-1]}.png")
    return drawn


def frontier_blocks(runs, drawn, metric) -> list:
    """"Accuracy against cost": per cost, the frontier's chart and table."""
    points = frontier.group_points(runs, f"{metric}_at_best_val")
    costs = [c for c in frontier.COSTS if len(points) and points[c].notna().any()]
    if not costs:
        return []
    blocks = [Heading("Accuracy against cost"),
              Paragraph(f"Each group of seeds at its mean "
                        f"{tables.headline_name(f'{metric}_at_best_val', tables.metric_kinds(points))} and "
                        "mean cost (result.json `cost`: wall time of the run, forward GMACs per image at its "
                        "input size). The frontier: the settings that no other setting on the same data set "
                        "beats on both (at least as accurate and at most as costly)."),]
    for cost in costs:
        blocks += [*_image(drawn, f"frontier {cost}", f"accuracy against {frontier.COSTS[cost][0]}"),
                   Table(frontier.frontier_table(points, cost))]
    return blocks


def writeup_charts(out_dir: Path, runs, epochs, losses) -> dict:
    """Write-up A's two charts per run, for every group of the write-up presets' runs:
    training loss per step, and train vs test accuracy and loss per epoch ({name: [png]})."""
    cited = published.cited_runs(runs)
    if cited.empty:
        return {}
    variant = published.variant_of(cited).str.replace("_", " ")
    panels = cited[["path"]].assign(panel=[f"{w} {v}: {s}, {i}" for w, v, s, i in zip(
        cited[published.PUBLISHED + "writeup"], variant, cited["setting"], cited["init"])])
    by_epoch, steps = epochs.merge(panels, on="path"), losses.merge(panels, on="path")
    drawn = {}
    for name, split, label, scale in (("accuracy", "acc", "accuracy (%)", 100), ("loss", "loss", "loss", 1)):
        columns = {f"train_{split}": "train", f"test_{split}": "test"}
        if len(by_epoch) and set(columns) <= set(by_epoch.columns):
            drawn[f"writeup_{name}"] = charts.curves_by_setting(
                by_epoch, "epoch", columns, label, f"Train vs test {name} per epoch",
                out_dir / f"writeup_train_test_{name}_per_epoch.png", scale=scale)
    if len(steps):
        thinned = charts.thinned_losses(steps, keep=("panel",))
        drawn["writeup_steps"] = charts.curves_by_setting(
            thinned, "iteration", {"train_loss": "train"}, charts.loss_label(thinned),
            "Training loss per optimizer step", out_dir / "writeup_train_loss_per_iteration.png")
    return drawn


def _image(drawn: dict, name: str, alt: str) -> list:
    """The chart's Image block(s): a grid split over several PNGs gives one each."""
    found = drawn.get(name, [])
    return [Image(path, alt) for path in (found if isinstance(found, list) else [found])]


def writeup_blocks(runs, comparison, costs, drawn, metric) -> list:
    """"Published vs measured" and "What the write-ups' defects cost", when some finished runs
    come from a write-up preset (their config has a published block)."""
    if published.cited_runs(runs).empty:
        return []
    blocks = [
        Heading("Published vs measured"),
        Paragraph("Each number a write-up published, beside the mean over seeds of the same "
                  "metric at the same epoch, per group of runs of its preset with the same init "
                  "(as published: the write-up's defects reproduced; fixed: the same protocol "
                  "with them corrected). 95% CI: Student t over seeds; 'published inside CI?' is "
                  "n/a without an interval. 'Differs from the write-up' names each setting of "
                  "the write-up (published.setting) that these runs did not share."),
        *([Table(tables.published_table(comparison))] if len(comparison) else
          [Paragraph("These presets list no published numbers.")]),
        Paragraph("The presets and their caveats:"), Bullets(published.preset_notes(runs)),
    ]
    steps = _image(drawn, "writeup_steps", "training loss per optimizer step, per setting")
    epochs = [*_image(drawn, "writeup_accuracy", "train vs test accuracy per epoch, per setting"),
              *_image(drawn, "writeup_loss", "train vs test loss per epoch, per setting")]
    if steps or epochs:
        blocks += [Heading("The write-ups' charts, drawn from these runs", level=3),
                   Paragraph(f"One panel per setting (write-up, variant, setting, init); "
                             f"{charts.SEED_BAND_TEXT}. Dashed lines: freeze phase change."),
                   *steps, *epochs]
    return blocks + defect_cost_blocks(runs, costs, metric)


def defect_cost_blocks(runs, costs, metric) -> list:
    """The as-published vs fixed table, and why a write-up has no row."""
    blocks = [Heading("What the write-ups' defects cost"),
              Paragraph(f"Each write-up's as-published runs beside its fixed twin's with the "
                        f"same init, model, data and epochs: {tables.headline_name(f'final_{metric}')}, "
                        "and fixed − as published with its 95% CI (paired t by seed when both "
                        "ran the same seeds, otherwise Welch t). Trainable params: in the first "
                        "freeze phase, where a freeze rule that misses the head or freezes "
                        "nothing shows.")]
    if len(costs):
        blocks += [Table(tables.defect_cost_table(costs))]
    gaps = published.uncompared_writeups(runs, costs)
    return blocks + ([Bullets(gaps)] if gaps else [])


def efficiency_blocks(points, multipliers, drawn, metric) -> list:
    """"Data efficiency", when some setting ran at two or more training-set sizes."""
    if points.empty:
        return []
    column = f"{metric}_at_best_val"
    blocks = [Heading("Data efficiency"),
              Paragraph(f"{tables.headline_name(column, tables.metric_kinds(points)).capitalize()} against the "
                        "number of labelled training images (dataset.train_per_class or dataset.train_fraction; "
                        "nested subsets drawn with "
                        "dataset.subset_seed, the val and test splits the same at every size), mean over seeds "
                        "with its 95% t CI."),
              *_image(drawn, "efficiency", "accuracy against training-set size, pretrained and random init"),
              Table(efficiency.points_table(points))]
    if len(multipliers):
        blocks += [Paragraph("Data multiplier: how many times more labelled images random init needs to "
                             "reach the pretrained mean at each size, read from the random-init curve "
                             "interpolated on a log axis (censored, not extrapolated, outside the sizes "
                             "tried); 95% interval: bootstrap over the seeds of every point."),
                   Table(efficiency.multiplier_table(multipliers))]
    return blocks


def across_blocks(runs, metric, out_dir: Path | None = None) -> list:
    """"Across data sets", when finished runs cover two or more data sets."""
    found = across.cells(runs, f"{metric}_at_best_val")
    ranked = across.ranking(found)
    vtab = _vtab_blocks(found, out_dir)
    if ranked.empty and not vtab:
        return []
    coverage = across.kornblith_coverage(found)
    return [Heading("Across data sets"), *([] if ranked.empty else _ranking_blocks(found, ranked, metric, out_dir)),
            *([Paragraph(coverage)] if coverage else []), *vtab]


def _vtab_blocks(found, out_dir: Path | None) -> list:
    """VTAB-1k's group means, when two or more VTAB tasks were run."""
    groups = across.vtab_groups(found)
    if groups.empty:
        return []
    if out_dir is not None:
        groups.to_csv(out_dir / "vtab_groups.csv", index=False)
    shown = groups.copy()
    for column in [c for c in shown.columns if c.endswith("mean") or c.startswith("VTAB score")]:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{100 * v:.1f}")
    complete = groups["tasks"].max() == across.VTAB_TASKS
    return [Heading("VTAB-1k groups", level=3),
            Paragraph("Mean top-1 over the VTAB-1k tasks of each group (natural, specialized, structured) that each "
                      "setting was run on, and how many of the group's tasks that is. "
                      + ("" if complete else f"Fewer than VTAB's {across.VTAB_TASKS} tasks were run: these are not "
                                             "VTAB scores, and no overall mean is given.")),
              Table(shown)]


def _ranking_blocks(found, ranked, metric, out_dir: Path | None) -> list:
    """The ranking and its tests, when two or more settings ran on every one of the data sets."""
    kinds = tables.metric_kinds(found)
    if out_dir is not None:
        ranked.to_csv(out_dir / "ranking_across_datasets.csv", index=False)
    blocks = [Paragraph(f"{tables.headline_name(f'{metric}_at_best_val', kinds).capitalize()} (mean over seeds) "
                        "and rank (1 = best, ties share the mean rank) of every setting measured on all these data "
                        "sets; "
                        "mean accuracy with a bootstrap 95% interval over the seeds of every cell (how sure the "
                        "average over these data sets is, not how it generalises to others)."),
              Table(across.ranking_text(ranked))]
    found_tests = across.tests(found)
    if not found_tests:
        return blocks + [Paragraph("Significance tests need at least three data sets (Demšar 2006).")]
    friedman = found_tests["friedman"]
    if friedman:
        blocks.append(Paragraph(f"Friedman test over {friedman['methods']} settings and {friedman['data sets']} data "
                                f"sets: chi-square {friedman['statistic']:.2f}, p = {friedman['p']:.3g}."))
    pairs = found_tests["pairs"]
    if out_dir is not None:
        pairs.to_csv(out_dir / "wilcoxon_pairs.csv", index=False)
    shown = pairs.assign(**{"mean difference": pairs["mean difference"].map(lambda v: f"{100 * v:+.1f}"),
                            "p": pairs["p"].map("{:.3g}".format),
                            "p adjusted (BH)": pairs["p adjusted (BH)"].map("{:.3g}".format)})
    return blocks + [Paragraph("Pairwise Wilcoxon signed-rank tests over the data sets (two-sided; p adjusted "
                               "for the number of pairs, Benjamini-Hochberg). With few data sets the smallest "
                               "possible p is large (0.25 for three), so 'no difference found' is the honest "
                               "reading of a large p, not 'equal'."), Table(shown)]


def averaging_blocks(runs, drawn) -> list:
    """"Weight averaging", when runs kept a weight EMA or a WiSE-FT curve (averaging.py)."""
    table = averaging.averaging_table(runs)
    if table.empty:
        return []
    return [Heading("Weight averaging"),
            Paragraph("Top-1 test accuracy, mean over seeds. The weight EMA (`ema.decay`) is scored every epoch beside "
                      "the trained weights, each at the epoch its own val scores choose; WiSE-FT (`wise_ft`) mixes the "
                      "starting and final weights, the mix chosen on val, so it is set against the final epoch. "
                      "Differences are paired by seed (95% t interval)."),
            *_unfitted_note(averaging.unfitted_curves(runs)),
            Table(table), *_image(drawn, "wise_ft", "WiSE-FT: accuracy against the mixing coefficient")]


def _unfitted_note(count: int) -> list:
    if not count:
        return []
    return [Paragraph(f"{count} run(s) drew a WiSE-FT curve from a head that was not fitted (`model.head_init` other "
                      "than `probe`): their starting model classifies at chance, so the curve blends an untrained "
                      "classifier into the fine-tuned one rather than a robust starting model into it, which is not "
                      "the comparison WiSE-FT makes (Wortsman et al. start from a zero-shot head; LP-FT's "
                      "`model.head_init=probe` is the fitted start here). Their numbers stay in the table (\"WiSE-FT start's "
                      "head\"); the chart leaves them out.")]


def shift_blocks(runs, drawn) -> list:
    """"Under shift", when runs scored their test split under corruptions (robustness.py)."""
    table, line = robustness.shift_table(runs)
    if table.empty:
        return []
    return [Heading("Under shift"),
            Paragraph("Top-1 accuracy of the final model on the same test images clean and under common corruptions "
                      "(`test_shift`: the mean over its corruptions and severities), mean over seeds. "
                      + robustness.trend_text(line, len(robustness.shifted_runs(runs)))),
            Table(table), *_image(drawn, "under_shift", "corrupted against clean accuracy, one point per run")]


def tuning_blocks(choices: pd.DataFrame, keys: list[str]) -> list:
    """"Tuned on val", when the report chose settings (--tune)."""
    if choices.empty:
        return []
    return [Heading("Tuned on val"),
            Paragraph(f"{', '.join(keys)} chosen per cell (every other setting, the init and the training-set "
                      "size the same) by the highest mean val accuracy at the val-best epoch over the seeds "
                      "(ties: lower val loss); the runs of the other values are left out of every table and "
                      "chart below. The test split plays no part in the choice."),
            Table(tuning.choices_text(choices, keys)), *map(Paragraph, selection.footnote(choices))]


def report_blocks(sources, runs, summary, deltas, drawn, metric, fraction, threshold,
                  comparison=None, costs=None, points=None, multipliers=None, out_dir=None, tuned=()) -> list:
    n_ok = len(compare.finished(runs))
    blocks = [
        Heading(TITLE, level=1),
        Paragraph(f"Sources: {', '.join(map(str, sources))}. {len(runs)} runs "
                  f"({n_ok} finished, {len(runs) - n_ok} failed or unfinished). "
                  f"Compared metric: {metric}{_dataset_metrics_note(runs, metric)}; convergence at "
                  f"{100 * fraction:g}% of own best and at {100 * threshold:g}%."),
        *_test_selection_note(runs),
        *tuned,
        Heading("Findings"), Paragraph(findings(runs, summary, deltas, metric, threshold)),
        *writeup_blocks(runs, _or_empty(comparison), _or_empty(costs), drawn, metric),
        Heading("Pretrained vs random init"),
    ]
    if len(deltas):
        blocks += [Table(tables.pretrained_table(deltas, metric))]
    else:
        blocks += [Paragraph("No settings differ only in pretrained; nothing to pair.")]
    blocks += _image(drawn, "deltas", "pretrained minus random accuracy with 95% CI")
    blocks += efficiency_blocks(_or_empty(points), _or_empty(multipliers), drawn, metric)
    blocks += across_blocks(runs, metric, out_dir)
    if len(summary):
        blocks += [
            Heading("Accuracy by setting"), Table(tables.accuracy_table(summary, metric)),
            *map(Paragraph, selection.footnote(summary)),
            *_image(drawn, "curves", f"{metric} per epoch for every run"),
            *averaging_blocks(runs, drawn),
            *shift_blocks(runs, drawn),
            Heading("Convergence speed"),
            Table(tables.convergence_table(summary, fraction, threshold)),
            *_image(drawn, "convergence", "epochs to reach a fraction of own best"),
            Heading("Overfitting"), Table(tables.overfitting_table(summary, runs)),
            *_image(drawn, "overfitting", "final train minus test accuracy"),
            Heading("Cost"), Table(tables.cost_table(summary)),
            *_image(drawn, "loss", "training loss per optimizer step"),
            *frontier_blocks(runs, drawn, metric),
        ]
    failed = tables.failed_table(runs)
    if len(failed):
        blocks += [Heading("Unfinished runs"), Table(failed)]
    blocks += [Heading("Definitions"), Bullets(DEFINITIONS), Heading("Environment"),
               Bullets(_environment(runs))]
    return blocks


def _dataset_metrics_note(runs: pd.DataFrame, metric: str) -> str:
    """Which accuracy the compared metric is on which data sets, when some report mean per-class
    accuracy (runs' `metric`, load.py); nothing when every data set is top-1, as before."""
    if metric not in DATASET_METRIC_FIELDS or "mean_per_class" not in tables.metric_kinds(runs):
        return ""
    names = runs.get("dataset", pd.Series("data", index=runs.index)).astype(str)
    parts = [f"{tables.METRIC_NAMES[kind]} accuracy on {', '.join(sorted(set(names[runs['metric'] == kind])))}"
             for kind in tables.metric_kinds(runs)]
    return f", in each data set's own metric: {'; '.join(parts)}"


def _or_empty(table) -> pd.DataFrame:
    return pd.DataFrame() if table is None else table


def _test_selection_note(runs: pd.DataFrame) -> list:
    """Say up front when some runs picked their 'val-best' epoch on the test split: those
    numbers were selected on what they report and read higher than a held-out choice would."""
    if "val_is_test" not in runs.columns or not runs["val_is_test"].eq(True).any():
        return []
    flagged = runs["val_is_test"].eq(True)
    return [Paragraph(
        f"Note: {int(flagged.sum())} of {len(runs)} runs have val_is_test = true: they validated "
        "on the test split (result.json schema 1, whose val was the test split, or "
        "dataset.val_split=0, which the write-up presets set to keep their published "
        "protocol). For those runs the 'val-best epoch' was selected on the test split, so "
        "their accuracy at the val-best epoch is optimistic; their final-epoch accuracy involves "
        "no selection. Tables mark them 'test split (optimistic)'; runs.csv and summary.csv "
        "have a val_is_test column.")]


def _environment(runs: pd.DataFrame) -> list[str]:
    lines = []
    for column in ("env.torch", "env.torchvision", "env.timm", "env.device_name", "env.git_sha"):
        if column in runs.columns:
            values = sorted(map(str, runs[column].dropna().unique()))
            lines.append(f"{column.removeprefix('env.')}: {', '.join(values) or 'unknown'}")
    return lines or ["no environment recorded"]


def write_report(paths, out_dir=None, metric: str = "test_acc", threshold: float = 0.9,
                 fraction: float = 0.9, font: str | None = None, tune=()) -> Path:
    """Write report.md, report.html, runs.csv, summary.csv, pretrained_vs_random.csv, the
    chart PNGs and, when runs come from write-up presets, published_vs_measured.csv and
    defect_cost.csv into `out_dir` (default: the single folder given, else ./report); with `tune`
    (settings chosen on val, tuning.py) tuning_choices.csv, and every table reads the chosen runs.
    Returns the path of report.md."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out_dir = Path(out_dir) if out_dir else default_out_dir(paths)
    runs, epochs, losses, summary, deltas, choices = analyse(paths, metric, fraction, threshold, tune)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(choices):
        choices.to_csv(out_dir / "tuning_choices.csv", index=False)
    runs.to_csv(out_dir / "runs.csv", index=False)
    summary.to_csv(out_dir / "summary.csv", index=False)
    deltas.to_csv(out_dir / "pretrained_vs_random.csv", index=False)
    comparison = published.published_vs_measured(runs, epochs)
    costs = published.defect_cost(runs, epochs, metric)
    if len(comparison):
        comparison.to_csv(out_dir / "published_vs_measured.csv", index=False)
    if len(costs):
        costs.to_csv(out_dir / "defect_cost.csv", index=False)
    points = efficiency.efficiency_points(runs, f"{metric}_at_best_val")
    multipliers = efficiency.data_multiplier(points)
    if len(points):
        points.drop(columns="values").to_csv(out_dir / "data_efficiency.csv", index=False)
    if len(multipliers):
        multipliers.to_csv(out_dir / "data_multiplier.csv", index=False)
    drawn = draw_charts(out_dir, runs, epochs, losses, deltas, metric, fraction, font, points)
    blocks = report_blocks(paths, runs, summary, deltas, drawn, metric, fraction, threshold,
                           comparison, costs, points, multipliers, out_dir, tuning_blocks(choices, list(tune)))
    (out_dir / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(blocks, TITLE), encoding="utf-8")
    return out_dir / "report.md"


def default_out_dir(paths) -> Path:
    """The folder itself when one folder is given (the report lives with its sweep)."""
    if len(paths) == 1:
        path = Path(paths[0])
        return path if path.is_dir() else path.parent
    return Path("report")
