"""Conformance: each write-up's own loop (loops.py, which shares no code with tlbench) and the
matching tlbench preset, run from the same starting weights, data and seeds; curves side by side
and the difference of final test accuracy.

    python benchmarks/writeups/conformance.py --protocols A,B --cifar <cifar10-jpg> --per-class 1000 \
        --seeds 0,1 --weights <tf_efficientnet_lite0.in1k.pth> --jobs 4 --out results/conformance

For each protocol, init (random: the write-up's own torchvision model; pretrained: the ImageNet
weights of timm's tf_efficientnet_lite0, standing in for the write-up's torchvision weights) and
seed, three runs (A and B pretrained: the freeze rule's substring is the stand-in's head name,
`classifier`, since no name of tf_efficientnet_lite0 contains "fc"): the write-up loop, tlbench with `data.pipeline=pil` and tlbench's default tensor
path. All in fp32 (amp=false, channels_last=false), as the write-ups ran. The verdict per
protocol, init and pipeline: |mean tlbench - mean write-up loop| <= 1.5 points of final test
accuracy. Writes <out>/conformance_<protocols>.json and .md, and one chart per protocol.

The data: a per-class subset of the CIFAR-10 ImageFolder copy (the first N images of each class in
file-name order, linked, not copied) and its full test split. Protocol C runs at a larger input
size (images resized to --c-size, as a stand-in for the 160 px Imagewoof copy), protocol D reads
file lists of the same subset (a linear probe; the write-up's 300/224 px sizes scaled by
--d-scale)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PRESETS = {"A": "seed_resnet18_cifar10", "B": "seed_efficientnet_b0_cifar10", "C": "seed_resnet50_imagewoof",
           "D": "seed_resnet18_food20"}
RANDOM_MODELS = {"A": "resnet18", "B": "efficientnet_b0", "C": "resnet50", "D": "resnet18"}
STAND_IN = "tf_efficientnet_lite0"
TOLERANCE_POINTS = 1.5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocols", default="A,B")
    parser.add_argument("--cifar", required=True, help="CIFAR-10 ImageFolder copy with train/ and test/")
    parser.add_argument("--per-class", type=int, default=1000, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--freeze-epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--inits", default="random,pretrained")
    parser.add_argument("--pipelines", default="pil,tensor", help="tlbench data paths to compare")
    parser.add_argument("--weights", default=None, help="tf_efficientnet_lite0 ImageNet state_dict (pretrained init)")
    parser.add_argument("--c-size", type=int, default=64, help="protocol C's input size in px")
    parser.add_argument("--d-scale", type=float, default=0.25, help="protocol D's sizes (300/224 px) times this")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers per run (loop and pil path)")
    parser.add_argument("--out", default="results/conformance")
    return parser.parse_args(argv)


def link_subset(cifar: Path, out: Path, per_class: int, test_per_class: int | None) -> Path:
    """<out>/train and <out>/test with symlinks to the first images of each class, by file name."""
    for split, count in (("train", per_class), ("test", test_per_class)):
        for class_dir in sorted(p for p in (cifar / split).iterdir() if p.is_dir()):
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                link = target / image.name
                if not link.exists():
                    link.symlink_to(image.resolve())
    return out


def write_lists(subset: Path, out: Path) -> tuple[Path, Path]:
    """Write-up D's `<path> <label>` lists over the subset, paths relative to the lists' folder."""
    out.mkdir(parents=True, exist_ok=True)
    classes = sorted(p.name for p in (subset / "train").iterdir())
    paths = []
    for split in ("train", "test"):
        lines = [f"{os.path.relpath(image, out)} {label}" for label, name in enumerate(classes)
                 for image in sorted((subset / split / name).iterdir())]
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
        paths.append(out / f"{split}.txt")
    return paths[0], paths[1]


def loop_command(protocol, init, seed, args, data) -> list[str]:
    model = RANDOM_MODELS[protocol] if init == "random" else f"timm:{STAND_IN}"
    command = [sys.executable, str(HERE / "loops.py"), "--protocol", protocol, "--model", model, "--seed", str(seed),
               "--epochs", str(args.epochs), "--device", args.device, "--workers", str(args.workers)]
    if init == "pretrained":
        command += ["--weights", args.weights]
    if protocol in "AB":
        command += ["--freeze-epochs", str(args.freeze_epochs), "--freeze-substring", freeze_substring(init)]
    if protocol in "ABC":
        command += ["--train-dir", str(data["subset"] / "train"), "--test-dir", str(data["subset"] / "test")]
    if protocol == "C":
        command += ["--size", str(args.c_size), "--resize", str(args.c_size)]
    if protocol == "D":
        resize, crop = d_sizes(args)
        command += ["--train-list", str(data["lists"][0]), "--test-list", str(data["lists"][1]),
                    "--list-root", str(data["lists"][0].parent), "--resize", str(resize), "--crop", str(crop),
                    "--eval-size", str(crop)]
    return command


def freeze_substring(init: str) -> str:
    """Write-ups A and B freeze every parameter whose name lacks "fc". The stand-in for their
    pretrained model, tf_efficientnet_lite0, has no such name (the rule would freeze all of it);
    its head is named `classifier`, which keeps write-up A's intent: head only while frozen."""
    return "fc" if init == "random" else "classifier"


def d_sizes(args) -> tuple[int, int]:
    return round(300 * args.d_scale), round(224 * args.d_scale)


def tlbench_command(protocol, init, seed, pipeline, args, data, run_dir) -> list[str]:
    overrides = [f"experiment={PRESETS[protocol]}", f"seed={seed}", f"epochs={args.epochs}", f"data.pipeline={pipeline}",
                 "amp=false", "channels_last=false", f"device={args.device}", f"num_workers={args.workers}",
                 f"hydra.run.dir={run_dir}", f"data_dir={data['cache']}", "keep_checkpoint=false"]
    if init == "pretrained":
        overrides += [f"model={STAND_IN}", "model.source=timm", f"model.weights_file={args.weights}", "pretrained=true"]
    else:
        overrides += ["pretrained=false"]
    if protocol in "AB":
        overrides += [f"freeze.epochs={args.freeze_epochs}", f"defects.freeze_by_name={freeze_substring(init)}"]
    if protocol in "ABC":
        overrides += ["dataset=imagefolder", f"dataset.root={data['subset']}",
                      f"dataset.image_size={args.c_size if protocol == 'C' else 32}"]
    if protocol == "D":
        resize, crop = d_sizes(args)
        overrides += [f"dataset.train_list={data['lists'][0]}", f"dataset.test_list={data['lists'][1]}",
                      "dataset.num_classes=10", f"dataset.image_size={crop}", f"augment.resize={resize}"]
    return [sys.executable, "-m", "tlbench", *overrides]


def run_one(job) -> dict:
    name, command, result_file, log_file = job
    if result_file.exists() and json.loads(result_file.read_text()).get("status", "ok") == "ok":
        return {"name": name, "seconds": 0.0, "reused": True}
    started = time.perf_counter()
    result_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - started
    print(f"{'ok' if done.returncode == 0 else 'FAILED'} {name} in {seconds:.0f} s", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed; see {log_file}")
    return {"name": name, "seconds": seconds, "reused": False}


def plan(args, data, out: Path) -> list[tuple]:
    jobs = []
    for protocol in args.protocols.split(","):
        for init in args.inits.split(","):
            for seed in map(int, args.seeds.split(",")):
                folder = out / protocol / init / f"seed{seed}"
                jobs.append((f"{protocol} {init} seed {seed} write-up loop",
                             loop_command(protocol, init, seed, args, data) + ["--out", str(folder / "loop.json")],
                             folder / "loop.json", folder / "loop.log"))
                for pipeline in args.pipelines.split(","):
                    run_dir = folder / f"tlbench-{pipeline}"
                    jobs.append((f"{protocol} {init} seed {seed} tlbench {pipeline}",
                                 tlbench_command(protocol, init, seed, pipeline, args, data, run_dir),
                                 run_dir / "result.json", folder / f"tlbench-{pipeline}.log"))
    return jobs


def curves(out: Path, protocol: str, init: str, seeds, pipelines) -> dict:
    """{implementation: [per-seed list of per-epoch test_acc]}."""
    found = {"write-up loop": []}
    for seed in seeds:
        folder = out / protocol / init / f"seed{seed}"
        found["write-up loop"].append([e["test_acc"] for e in json.loads((folder / "loop.json").read_text())["epochs"]])
        for pipeline in pipelines:
            result = json.loads((folder / f"tlbench-{pipeline}" / "result.json").read_text())
            found.setdefault(f"tlbench {pipeline}", []).append([e["test_acc"] for e in result["epochs"]])
    return found


def verdicts(found: dict) -> list[dict]:
    loop_final = [100 * c[-1] for c in found["write-up loop"]]
    rows = []
    for name, per_seed in found.items():
        finals = [100 * c[-1] for c in per_seed]
        difference = statistics.mean(finals) - statistics.mean(loop_final)
        rows.append({"implementation": name, "final_test_acc_per_seed": finals, "mean": statistics.mean(finals),
                     "seed_spread": max(finals) - min(finals), "minus_loop_points": difference,
                     "within_tolerance": abs(difference) <= TOLERANCE_POINTS})
    return rows


def draw(out: Path, protocol: str, by_init: dict) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(by_init), figsize=(5.5 * len(by_init), 4), squeeze=False)
    for axis, (init, found) in zip(axes[0], by_init.items()):
        for name, per_seed in found.items():
            for i, curve in enumerate(per_seed):
                axis.plot(range(1, len(curve) + 1), [100 * v for v in curve], label=name if i == 0 else None,
                          color={"write-up loop": "black", "tlbench pil": "tab:blue"}.get(name, "tab:orange"),
                          linestyle="-" if i == 0 else "--", linewidth=1.3)
        axis.set(title=f"write-up {protocol}, {init} init (one line per seed)", xlabel="epoch",
                 ylabel="test accuracy (%)")
        axis.legend()
    path = out / f"conformance_{protocol}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def markdown(summary: dict) -> str:
    lines = [f"# Conformance: write-up loops vs tlbench presets ({summary['date']}, {summary['device']})", "",
             f"Command: `{summary['command']}`", "",
             "| write-up | init | implementation | final test acc per seed (%) | mean | spread | − loop (points) | within 1.5 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        lines.append(f"| {row['protocol']} | {row['init']} | {row['implementation']} | "
                     f"{', '.join(f'{v:.2f}' for v in row['final_test_acc_per_seed'])} | {row['mean']:.2f} | "
                     f"{row['seed_spread']:.2f} | {row['minus_loop_points']:+.2f} | "
                     f"{'yes' if row['within_tolerance'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).absolute()
    if "pretrained" in args.inits and not args.weights:
        raise SystemExit("--weights is needed for the pretrained init (tf_efficientnet_lite0's ImageNet state_dict)")
    subset = link_subset(Path(args.cifar).absolute(), out / "data" / "subset", args.per_class, args.test_per_class)
    data = {"subset": subset, "lists": write_lists(subset, out / "data" / "lists"), "cache": out / "data" / "cache"}
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        timings = list(pool.map(run_one, plan(args, data, out)))
    seeds, pipelines = list(map(int, args.seeds.split(","))), args.pipelines.split(",")
    rows, charts = [], []
    for protocol in args.protocols.split(","):
        by_init = {init: curves(out, protocol, init, seeds, pipelines) for init in args.inits.split(",")}
        charts.append(str(draw(out, protocol, by_init)))
        for init, found in by_init.items():
            rows += [{"protocol": protocol, "init": init, **row} for row in verdicts(found)]
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    summary = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name() if device == "cuda" else
               f"cpu ({os.cpu_count()} cores)", "command": " ".join(sys.argv), "wall_s": time.perf_counter() - started,
               "rows": rows, "charts": charts, "timings": timings}
    stem = f"conformance_{args.protocols.replace(',', '')}"
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    (out / f"{stem}.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
