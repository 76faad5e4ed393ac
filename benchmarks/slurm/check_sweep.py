"""Checks a finished sweep's result.json files for benchmarks/slurm/one_node.sh, printing one line
per check; exits 1 when one fails. Torch-free, like the report.

    python benchmarks/slurm/check_sweep.py <sweep folder> --runs 2
    python benchmarks/slurm/check_sweep.py <sweep folder> --runs 1 --resumes 2   # a run requeued twice
"""

import argparse
import json
import sys
from pathlib import Path


def check_sweep(sweep: Path, runs: int, resumes_expected: int) -> list[tuple[bool, str]]:
    """(passed, what was checked) for each check."""
    paths = sorted(sweep.glob("*/result.json"))
    results = [json.loads(p.read_text()) for p in paths]
    checks = [(len(results) == runs, f"{sweep}: {len(results)} result.json file(s), expected {runs}")]
    for path, result in zip(paths, results):
        summary, env = result.get("summary") or {}, result.get("env") or {}
        resumes = result.get("resumes") or []
        checks.append((result.get("status") == "ok",
                       f"{path.parent.name}/result.json: status {result.get('status')}, "
                       f"{len(result.get('epochs') or [])}/{result['config']['epochs']} epochs, "
                       f"final test acc {summary.get('final_test_acc')}, job {env.get('job_num')}"))
        checks.append((len(result.get("epochs") or []) == result["config"]["epochs"],
                       f"{path.parent.name}: every epoch recorded once"))
        after = [r.get("after_epoch", 0) for r in resumes]
        checks.append((len(resumes) == resumes_expected and all(a >= 1 for a in after) and after == sorted(set(after)),
                       f"{path.parent.name}: {len(resumes)} resume(s), expected {resumes_expected}, each from a later "
                       f"checkpoint: {resumes}"))
        checks.append((not (path.parent / "run.lock").exists(), f"{path.parent.name}: no run.lock left behind"))
    checks.append(((sweep / "report.md").is_file(), f"{sweep / 'report.md'} written by the sweep's report callback"))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--runs", type=int, required=True, help="result.json files expected")
    parser.add_argument("--resumes", type=int, default=0, help="resumes each run must record")
    args = parser.parse_args()
    checks = check_sweep(args.sweep, args.runs, args.resumes)
    for passed, what in checks:
        print(f"  {'ok    ' if passed else 'FAILED'} {what}")
    return 0 if all(passed for passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
