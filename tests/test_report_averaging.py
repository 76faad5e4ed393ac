"""The report's "Weight averaging" section: a sweep with a weight EMA and a WiSE-FT curve gets a table of
each beside the trained weights (paired by seed) and the WiSE-FT chart (curves from a fitted head only: LP-FT's
probe); a sweep with neither gets none."""

from conftest import TINY as BASE

from tlbench.report.build import write_report
from tlbench.runner.run import run

TINY = [*BASE, "pretrained=false", "epochs=2", "optimizer.lr=0.01"]


def test_a_sweep_with_ema_and_wise_ft_gets_the_section_and_its_chart(make_cfg, tmp_path):
    found = [run(make_cfg(*TINY, f"seed={seed}", "ema.decay=0.8", "wise_ft=[0,0.5,1]", "model.head_init=probe"),
                 output_dir=tmp_path / "s" / str(seed))
             for seed in (0, 1)]
    report = write_report(tmp_path / "s").read_text()
    assert "## Weight averaging" in report and (tmp_path / "s" / "wise_ft.png").is_file()
    assert "not fitted" not in report
    section = report.split("## Weight averaging", 1)[1].split("\n## ", 1)[0]
    line = next(row for row in section.splitlines() if row.startswith("|") and "random" in row)
    ema = sum(r["summary"]["ema"]["test_acc_at_best_val"] for r in found) / 2
    wise = sum(next(p["test_acc"] for p in r["wise_ft"]["curve"] if p["alpha"] == r["wise_ft"]["chosen_alpha"])
               for r in found) / 2
    assert f"{100 * ema:.1f}%" in line and f"{100 * wise:.1f}%" in line
    chosen = sorted({r["wise_ft"]["chosen_alpha"] for r in found})
    assert ", ".join(f"{a:g}" for a in chosen) in line


def test_a_sweep_without_them_has_no_such_section(make_cfg, tmp_path):
    run(make_cfg(*TINY, "epochs=1"), output_dir=tmp_path / "s" / "0")
    assert "Weight averaging" not in write_report(tmp_path / "s").read_text()


def test_curves_from_a_head_that_was_not_fitted_stay_in_the_table_and_out_of_the_chart(make_cfg, tmp_path):
    for seed in (0, 1):
        run(make_cfg(*TINY, f"seed={seed}", "wise_ft=[0,1]", "model.head_init=zeros"), output_dir=tmp_path / "s" / str(seed))
    report = write_report(tmp_path / "s").read_text()
    section = report.split("## Weight averaging", 1)[1].split("\n## ", 1)[0]
    assert "2 run(s) drew a WiSE-FT curve from a head that was not fitted" in section
    assert "zeros (not fitted)" in section and not (tmp_path / "s" / "wise_ft.png").exists()
