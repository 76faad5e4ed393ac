"""One chart per idea, drawn with seaborn on matplotlib's Agg canvas.

Figures are built with `matplotlib.figure.Figure` and `FigureCanvasAgg` rather than
pyplot, so rendering never depends on (or changes) the user's interactive backend.
seaborn is imported here, inside the functions' module, never at `import tlbench`.
"""

from __future__ import annotations

import contextlib
import textwrap
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tlbench.report.metrics import headline_columns
from tlbench.report.tables import headline_name, metric_kinds, metric_name

INIT_ORDER = ["pretrained", "random"]
INIT_COLORS = {"pretrained": "#1f77b4", "random": "#ff7f0e", "unknown": "#7f7f7f"}
# Enough points to show the shape of a loss curve; more only slows drawing.
MAX_LOSS_POINTS = 1500
DPI = 110
# Panels per PNG in the per-setting grids (6 rows of 4): more would shrink each below reading size.
MAX_PANELS = 24
# seaborn's errorbar for the per-setting grids: a band from the lowest to the highest seed.
SEED_BAND = ("pi", 100)
SEED_BAND_TEXT = "line: mean over seeds; band: lowest to highest seed (seaborn errorbar=('pi', 100))"


def font_available(family: str) -> bool:
    try:
        font_manager.findfont(font_manager.FontProperties(family=family),
                              fallback_to_default=False)
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def chart_style(font: str | None = None):
    """seaborn's whitegrid theme and the requested font, undone on exit."""
    import seaborn as sns

    with matplotlib.rc_context():
        sns.set_theme(style="whitegrid", context="notebook")
        # DejaVu Sans stays in the list so Latin glyphs and the minus sign always exist,
        # even when the chosen CJK family lacks them.
        families = ["DejaVu Sans"]
        if font and font_available(font):
            families.insert(0, font)
        elif font:
            installed = sorted({f.name for f in font_manager.fontManager.ttflist})[:12]
            warnings.warn(f"--font {font!r} is not installed; falling back to DejaVu Sans. "
                          f"Install it (e.g. apt-get install fonts-noto-cjk) or choose one "
                          f"of: {', '.join(installed)}", stacklevel=3)
        matplotlib.rcParams["font.family"] = families
        yield


def _figure(n_panels: int = 1, width_in: float = 5.2, height_in: float = 3.8,
            max_columns: int = 3):
    columns = min(n_panels, max_columns)
    rows = -(-n_panels // columns)
    figure = Figure(figsize=(width_in * columns, height_in * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    for unused in axes[n_panels:]:
        unused.set_visible(False)
    return figure, axes[:n_panels]


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    _fit_text(figure)
    figure.savefig(path, dpi=DPI)
    return path


def _fit_text(figure: Figure, passes: int = 3) -> None:
    """Wraps the figure's title, each panel's title and axis labels to the room they have (the
    figure's width; the panel's width, or its height for a y label). Constrained layout makes room
    around text but never wraps it, so a title wider than a one-panel figure was cut at both edges.
    A wrap makes the layout move, so it is measured again until nothing wraps."""
    for _ in range(passes):
        figure.draw_without_rendering()  # runs the layout: the axes' final sizes
        renderer = figure.canvas.get_renderer()
        wrapped = False
        if figure.get_suptitle():
            wrapped |= _wrap(figure._suptitle, 0.98 * figure.bbox.width, renderer)
        for ax in (ax for ax in figure.axes if ax.get_visible()):
            box = ax.get_window_extent(renderer)
            for title in (ax.title, ax.xaxis.label):
                wrapped |= _wrap(title, box.width, renderer)
            wrapped |= _wrap(ax.yaxis.label, box.height, renderer, along="height")
        if not wrapped:
            return


def _wrap(text, room_px: float, renderer, along: str = "width") -> bool:
    """Re-wraps `text`'s lines (keeping its own line breaks) to fit `room_px`; True if it changed."""
    content = text.get_text()
    extent = getattr(text.get_window_extent(renderer), along)
    if not content or extent <= room_px:
        return False
    longest = max(len(line) for line in content.split("\n"))
    chars = max(8, int(longest * room_px / extent * 0.95))
    wrapped = "\n".join(textwrap.fill(line, chars) for line in content.split("\n"))
    text.set_text(wrapped)
    return wrapped != content


def _inits(frame: pd.DataFrame) -> list[str]:
    return [i for i in INIT_ORDER + ["unknown"] if i in set(frame["init"])]


def accuracy_curves(epochs: pd.DataFrame, metric: str, path: Path) -> Path:
    """Metric per epoch, one line per run, one panel per model; dashed lines mark
    the epochs where a run's freeze_phase changes (e.g. head -> all)."""
    import seaborn as sns

    models = list(dict.fromkeys(epochs["model"]))
    figure, axes = _figure(len(models))
    name = metric_name(metric, metric_kinds(epochs))  # the runs' `metric` column: each data set's own
    for ax, model in zip(axes, models):
        data = epochs[epochs["model"] == model].assign(percent=lambda d: 100 * d[metric])
        sns.lineplot(data=data, x="epoch", y="percent", hue="init", hue_order=_inits(data),
                     palette=INIT_COLORS, units="path", estimator=None, marker="o",
                     markersize=4, linewidth=1.4, alpha=0.8, ax=ax)
        handles, labels = ax.get_legend_handles_labels()
        for x in _phase_changes(data):
            ax.axvline(x, color="0.35", linestyle="--", linewidth=1)
        if _phase_changes(data):
            handles.append(Line2D([], [], color="0.35", linestyle="--"))
            labels.append("freeze phase change")
        ax.legend(handles, labels, title=None, fontsize="small")
        ax.set(title=str(model), xlabel="epoch", ylabel=f"{name} (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(f"{name.capitalize()} per epoch, one line per run")
    return _save(figure, path)


def _phase_changes(data: pd.DataFrame) -> list[float]:
    """Epoch boundaries (e - 0.5) where a run's freeze_phase differs from the epoch before."""
    if "freeze_phase" not in data.columns:
        return []
    changes = set()
    for _, run in data.groupby("path"):
        phase = run["freeze_phase"].fillna("")
        changed = phase.ne(phase.shift()) & phase.shift().notna()
        changes.update(run.loc[changed, "epoch"] - 0.5)
    return sorted(changes)


def pretrained_deltas(deltas: pd.DataFrame, labels: list[str], metric: str, path: Path) -> Path:
    """Pretrained minus random (points) per setting, at the final and at the val-best epoch,
    95% CI error bars. A bar without an error bar had too few seeds for an interval."""
    longest = max((len(part) for label in labels for part in label.split(", ")), default=0)
    figure, (ax,) = _figure(1, width_in=max(5.5, max(1.6, 0.075 * longest) * len(deltas) + 2))
    x = np.arange(len(deltas))
    width = 0.38
    bars = zip((-width / 2, width / 2), headline_columns(metric), ("#4c72b0", "#55a868"))
    for offset, column, color in bars:
        col = f"delta_{column}"
        values = 100 * deltas[col].to_numpy(dtype=float)
        low = 100 * deltas[f"{col}_ci_low"].to_numpy(dtype=float)
        high = 100 * deltas[f"{col}_ci_high"].to_numpy(dtype=float)
        errors = np.nan_to_num(np.vstack([values - low, high - values]), nan=0.0)
        ax.bar(x + offset, values, width, color=color, label=headline_name(column, metric_kinds(deltas)))
        has_ci = ~np.isnan(low)
        ax.errorbar((x + offset)[has_ci], values[has_ci], yerr=errors[:, has_ci], fmt="none",
                    ecolor="black", capsize=4, linewidth=1.2)
        for x_bar, value in zip((x + offset)[~has_ci], values[~has_ci]):
            ax.annotate("no CI", (x_bar, value), ha="center", fontsize="x-small",
                        va="bottom" if value >= 0 else "top", xytext=(0, 2),
                        textcoords="offset points")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [_one_part_a_line(label) for label in labels], fontsize="small")
    ax.set(ylabel="pretrained − random (points)",
           title="Gain from pretrained weights (bars: mean, whiskers: 95% CI; "
                 "'no CI': too few seeds for an interval)")  # wrapped to the width by _fit_text
    ax.legend(fontsize="small")
    return _save(figure, path)


def per_setting(runs: pd.DataFrame, column: str, ylabel: str, title: str, path: Path,
                scale: float = 1.0) -> Path:
    """Mean per setting and init as bars, each run as a dot."""
    import seaborn as sns

    data = runs.assign(value=scale * runs[column], setting=runs["setting"].map(_one_part_a_line))
    longest = max((len(line) for label in data["setting"] for line in label.split("\n")), default=0)
    figure, (ax,) = _figure(1, width_in=max(5.5, max(1.4, 0.075 * longest) * data["setting"].nunique() + 2.5))
    hue_order = _inits(data)
    sns.barplot(data=data, x="setting", y="value", hue="init", hue_order=hue_order,
                palette=INIT_COLORS, errorbar=None, alpha=0.75, ax=ax)
    sns.stripplot(data=data, x="setting", y="value", hue="init", hue_order=hue_order,
                  palette=INIT_COLORS, dodge=True, edgecolor="black", linewidth=0.8,
                  size=6, legend=False, ax=ax)
    ax.set(xlabel="", ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelsize="small")
    if column.startswith("epochs"):
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(title=None, fontsize="small")
    return _save(figure, path)


def _one_part_a_line(label: str) -> str:
    """'model, optimizer.lr=0.01, freeze.epochs=3' as three lines, so long labels do not overlap."""
    return label.replace(", ", "\n")


def _block_mean(losses: pd.DataFrame) -> pd.DataFrame:
    """Average consecutive steps into at most MAX_LOSS_POINTS points per run."""
    block = max(1, -(-len(losses) // MAX_LOSS_POINTS))
    bins = (losses["iteration"] - 1) // block
    return losses.groupby(bins).agg(iteration=("iteration", "mean"),
                                    train_loss=("train_loss", "mean")).assign(block=block)


def thinned_losses(losses: pd.DataFrame, keep=("init",)) -> pd.DataFrame:
    """Each run's steps averaged into at most MAX_LOSS_POINTS points, with `path`, the run's
    `keep` columns and the `block` size."""
    frames = [_block_mean(run).assign(path=p, **{c: run[c].iloc[0] for c in keep})
              for p, run in losses.groupby("path", sort=False)]
    return pd.concat(frames, ignore_index=True)


def loss_label(thinned: pd.DataFrame) -> str:
    block = int(thinned["block"].max())
    return "training loss" + (f" (mean of every {block} steps)" if block > 1 else "")


def iteration_loss(losses: pd.DataFrame, path: Path) -> Path:
    """Training loss per optimizer step, one line per run, one panel per model."""
    import seaborn as sns

    models = list(dict.fromkeys(losses["model"]))
    figure, axes = _figure(len(models))
    for ax, model in zip(axes, models):
        data = thinned_losses(losses[losses["model"] == model])
        sns.lineplot(data=data, x="iteration", y="train_loss", hue="init",
                     hue_order=_inits(data), palette=INIT_COLORS, units="path",
                     estimator=None, linewidth=1, alpha=0.7, ax=ax)
        ax.set(title=str(model), xlabel="optimizer step", ylabel=loss_label(data))
        ax.legend(title=None, fontsize="small")
    figure.suptitle("Training loss per optimizer step, one line per run")
    return _save(figure, path)


def curves_by_setting(data: pd.DataFrame, x: str, series: dict, ylabel: str, title: str,
                      path: Path, scale: float = 1.0) -> list[Path]:
    """The write-ups' per-run charts for groups of seeds: one panel per `panel` value, one line
    per column in `series` ({column: legend label}, e.g. train and test), the mean over seeds
    with a lowest-to-highest band (SEED_BAND). Dashed lines mark freeze phase changes when `x`
    is the epoch. Beyond MAX_PANELS panels the grid continues in <name>_2.png, <name>_3.png..."""
    import seaborn as sns

    long = data.melt(id_vars=[x, "path", "panel"], value_vars=list(series), var_name="split",
                     value_name="value").assign(split=lambda d: d["split"].map(series))
    long["value"] *= scale
    panels = sorted(data["panel"].unique(), key=str)
    pages = [panels[start:start + MAX_PANELS] for start in range(0, len(panels), MAX_PANELS)]
    drawn = []
    for number, page in enumerate(pages, start=1):
        figure, axes = _figure(len(page), width_in=4.4, height_in=3.3, max_columns=4)
        for ax, panel in zip(axes, page):
            sns.lineplot(data=long[long["panel"] == panel], x=x, y="value", hue="split",
                         hue_order=list(series.values()), estimator="mean", errorbar=SEED_BAND,
                         linewidth=1.3, legend=ax is axes[0] and len(series) > 1, ax=ax)
            changes = _phase_changes(data[data["panel"] == panel]) if x == "epoch" else []
            for boundary in changes:
                ax.axvline(boundary, color="0.35", linestyle="--", linewidth=1)
            ax.set_title(textwrap.fill(str(panel), 44), fontsize="small")
            ax.set(xlabel=x.replace("iteration", "optimizer step"), ylabel=ylabel)
        if len(series) > 1:
            axes[0].legend(title=None, fontsize="small")
        part = f" (part {number} of {len(pages)})" if len(pages) > 1 else ""
        figure.suptitle(f"{title}{part}\n{SEED_BAND_TEXT}", fontsize="medium")
        name = path if number == 1 else path.with_name(f"{path.stem}_{number}{path.suffix}")
        drawn.append(_save(figure, name))
    return drawn


def data_efficiency(points: pd.DataFrame, ylabel: str, path: Path) -> Path:
    """Accuracy against training images (log axis), one panel per setting, pretrained and random
    init as lines (mean over seeds) with their 95% t interval as a band."""
    settings = list(dict.fromkeys(points["setting"]))
    figure, axes = _figure(len(settings))
    for ax, setting in zip(axes, settings):
        data = points[points["setting"] == setting]
        for init in _inits(data):
            line = data[data["init"] == init].sort_values("train_size")
            color = INIT_COLORS.get(init, INIT_COLORS["unknown"])
            ax.plot(line["train_size"], 100 * line["mean"], marker="o", color=color, label=init)
            banded = line[line["n"] >= 2]
            ax.fill_between(banded["train_size"], (100 * banded["ci_low"]).clip(lower=0),  # an accuracy is in
                            (100 * banded["ci_high"]).clip(upper=100), color=color, alpha=0.2, linewidth=0)  # [0, 100]
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.set(title="\n".join(textwrap.wrap(str(setting), 48)), xlabel="training images (log scale)",
               ylabel=ylabel)
        ax.legend(title=None, fontsize="small")
    figure.suptitle("Accuracy vs training images (bands: 95% CI over seeds, cut to 0-100%)", fontsize="medium")
    return _save(figure, path)


def cost_frontier(points: pd.DataFrame, cost: str, frontier: pd.Series, xlabel: str, ylabel: str,
                  path: Path) -> Path:
    """Each group of seeds as a dot (colour: init) at (mean cost, mean accuracy), one panel per
    data set, with the frontier of non-dominated settings as a step line through its points."""
    datasets = list(dict.fromkeys(points["dataset"]))
    figure, axes = _figure(len(datasets))
    for ax, dataset in zip(axes, datasets):
        data = points[points["dataset"] == dataset].dropna(subset=[cost])
        for init in _inits(data):
            mine = data[data["init"] == init]
            ax.scatter(mine[cost], 100 * mine["accuracy"], color=INIT_COLORS.get(init, INIT_COLORS["unknown"]),
                       label=init, edgecolor="black", linewidth=0.6, zorder=3)
        best = data[frontier.loc[data.index]].sort_values(cost)
        ax.step(best[cost], 100 * best["accuracy"], where="post", color="0.25", linewidth=1.2,
                label="frontier", zorder=2)
        for number, (_, row) in enumerate(best.iterrows(), start=1):  # the # column of the frontier's table
            ax.annotate(str(number), (row[cost], 100 * row["accuracy"]), fontsize="small", fontweight="bold",
                        xytext=(4, 4), textcoords="offset points")
        if (data[cost] > 0).all() and data[cost].max() > 10 * data[cost].min():
            ax.set_xscale("log")
        ax.set(title=str(dataset), xlabel=xlabel, ylabel=ylabel)
        ax.legend(title=None, fontsize="small")
    figure.suptitle(f"Accuracy vs {xlabel}\n(numbered: the frontier, as in its table)", fontsize="medium")
    return _save(figure, path)
