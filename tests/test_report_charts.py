"""Every report chart is legible at its size: no title, label, tick label or legend cut off at the
figure's edge. The charts are drawn from hand-made result.json files, as `tlbench-report` draws them."""

from __future__ import annotations

import pytest
from matplotlib.text import Text

from report_fixtures import SWEEP, make_result, published_block, write_efficiency_sweep, write_run
from tlbench.report import charts, write_report


def sweep_with_costs(folder):
    """The report fixtures' sweep with a cost per run (the frontier charts) and long model names."""
    for number, kwargs in enumerate(SWEEP):
        result = make_result(**kwargs)
        result["cost"] = {"wall_s": 30.0 + 20 * number, "gmacs_per_image": 0.5 + number, "trainable_params": 1000}
        write_run(folder, result)
    return folder


def writeup_sweep(folder):
    """One write-up preset's runs, two seeds: its per-run charts in a grid of one panel."""
    for seed in (0, 1):
        write_run(folder, make_result(seed=seed, test_acc=[0.3, 0.5, 0.7], published=published_block("A", "fixed")))
    return folder


SWEEPS = {"comparison": (sweep_with_costs, {"test_acc_per_epoch.png", "pretrained_vs_random.png",
                                            "convergence_speed.png", "overfitting_gap.png",
                                            "train_loss_per_iteration.png", "frontier_wall_s.png",
                                            "frontier_gmacs_per_image.png"}),
          "data efficiency": (write_efficiency_sweep, {"data_efficiency.png"}),
          "write-up": (writeup_sweep, {"writeup_train_test_accuracy_per_epoch.png",
                                       "writeup_train_loss_per_iteration.png"})}


def texts(figure) -> list[Text]:
    """The figure's drawn text: titles, axis and tick labels, legends, annotations."""
    undrawn = {id(label) for ax in figure.axes for label in ticks_out_of_view(ax)}
    return [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()
            and (text.axes is None or text.axes.get_visible()) and id(text) not in undrawn]


def ticks_out_of_view(ax):
    """Tick labels matplotlib keeps but does not draw: their tick lies outside the axis's view."""
    for axis in (ax.xaxis, ax.yaxis):
        low, high = sorted(axis.get_view_interval())
        margin = 1e-9 * (high - low)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if not low - margin <= tick.get_loc() <= high + margin:
                yield from (tick.label1, tick.label2)


def cut_texts(figure) -> list[str]:
    """Each text that reaches past the figure's edge, with how far (px)."""
    figure.canvas.draw()  # constrained layout, as at savefig
    renderer, bounds = figure.canvas.get_renderer(), figure.bbox
    cut = []
    for text in texts(figure):
        box = text.get_window_extent(renderer)
        over = max(bounds.x0 - box.x0, box.x1 - bounds.x1, bounds.y0 - box.y0, box.y1 - bounds.y1)
        if over > 1:
            cut.append(f"{text.get_text()!r} by {over:.0f} px")
    return cut


@pytest.mark.parametrize("kind", SWEEPS)
def test_no_chart_text_is_cut_at_the_figure_edge(kind, tmp_path, monkeypatch):
    write, expected = SWEEPS[kind]
    drawn, save = {}, charts._save

    def keep(figure, path):
        drawn[path.name] = figure
        return save(figure, path)

    monkeypatch.setattr(charts, "_save", keep)
    write_report([write(tmp_path / "sweep")], out_dir=tmp_path / "report")
    assert expected <= set(drawn), sorted(drawn)
    cut = {name: cut_texts(figure) for name, figure in drawn.items()}
    assert not {name: found for name, found in cut.items() if found}
