"""python -m tlbench.report <sweep dir> [<more dirs>...] [--out DIR] ..."""

from __future__ import annotations

import argparse
import sys

from tlbench.errors import USER_ERROR_EXIT, UserError


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tlbench.report",
        description="Compare tlbench runs: reads every result.json under the given folders "
                    "(recursively) and writes report.md, report.html, runs.csv, summary.csv "
                    "and chart PNGs. Several folders are merged into one report.")
    parser.add_argument("paths", nargs="+", metavar="SWEEP_DIR",
                        help="sweep folder(s) or result.json file(s)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: the folder given when there is one, "
                             "./report when several are given)")
    parser.add_argument("--metric", default="test_acc",
                        help="per-epoch accuracy field to compare, reported at the final epoch "
                             "and at the epoch with the best val_acc (default: test_acc)")
    parser.add_argument("--threshold", type=float, default=0.9,
                        help="absolute accuracy (a fraction) for 'epochs to threshold' "
                             "(default: 0.9)")
    parser.add_argument("--fraction", type=float, default=0.9,
                        help="fraction of a run's own best accuracy for 'epochs to fraction "
                             "of best' (default: 0.9)")
    parser.add_argument("--tune", default=None, metavar="SETTINGS",
                        help="comma-separated settings a sweep tried several values of (e.g. "
                             "optimizer.lr,freeze.lr_ratio): per cell (every other setting the same) keep "
                             "the value with the best mean val accuracy, never looking at test")
    parser.add_argument("--font", default=None, metavar="FAMILY",
                        help="font family for chart text, e.g. 'Noto Sans CJK JP'; falls back "
                             "to DejaVu Sans with a warning when not installed")
    return parser


def main(argv=None) -> int:
    args = parse_args(argv)
    from tlbench.report import tuning
    from tlbench.report.build import write_report

    try:
        report = write_report(args.paths, args.out, metric=args.metric,
                              threshold=args.threshold, fraction=args.fraction, font=args.font,
                              tune=tuning.parse_keys(args.tune))
    except (FileNotFoundError, ValueError, UserError) as error:  # no results there, a bad option, a report not writable
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    print(f"wrote {report} and {report.with_suffix('.html').name} in {report.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
