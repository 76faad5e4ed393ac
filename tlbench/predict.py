"""`python -m tlbench.predict <run folder or model.json> <image or folder>... [--top-k 5]
[--which final|best|ema] [--csv OUT] [--device auto|cpu|cuda] [--batch-size 64]`

Prints each image's top-k classes with their softmax probabilities, one line per image:
`photos/cat.jpg: cat 91.2% | dog 5.1% | bird 3.7%`. Images are preprocessed exactly as the run
evaluated them (export.eval_transform). A folder stands for every image file under it
(recursively, sorted) and adds a CSV: `predictions.csv` in the current folder, or --csv; the
image folder itself is never written to. Progress and warnings go to stderr, so stdout holds only
predictions.

A file under a folder that cannot be decoded is skipped with a warning and listed at the end; a
file named on the command line that cannot be decoded makes the exit code 2 once the others are
predicted. Exit codes: 0 ok, 2 a user error (the message on stderr, no traceback)."""

import argparse
import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import UnidentifiedImageError
from torch import nn

from tlbench.records import atomic
from tlbench.runner import devices
from tlbench.models import export
from tlbench.data import folders
from tlbench.errors import USER_ERROR_EXIT, BadImageError, DataNotFoundError, UserError

DEFAULT_CSV = "predictions.csv"


@dataclass
class Source:
    path: Path
    in_folder: bool  # found under a folder argument (skipped if undecodable) rather than named


@dataclass
class Prediction:
    path: Path
    classes: list[str]  # best first
    probs: list[float]

    def line(self) -> str:
        return f"{self.path}: " + " | ".join(f"{name} {100 * prob:.1f}%" for name, prob in zip(self.classes, self.probs))


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a bad option (2, usage already printed)
        return int(exit_.code or 0)
    try:
        return predict(args)
    except UserError as err:  # a missing run folder, a bad image, weights that do not fit: one message
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


def parse_args(argv) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tlbench.predict",
                                     description="Top-k classes of images, from a completed tlbench run's model.")
    parser.add_argument("model", help="a run folder, or its model.json / best.json / ema.json")
    parser.add_argument("images", nargs="+", help="image files, or folders searched recursively for images")
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--which", choices=tuple(export.STEMS), default="final",
                        help="the final epoch's model (default), the val-chosen epoch's (needs save_best=true) or the "
                             "weight EMA after the last step (needs ema.decay > 0)")
    parser.add_argument("--csv", type=Path, help=f"write predictions here (default with a folder: ./{DEFAULT_CSV})")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)")
    return parser


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def predict(args: argparse.Namespace) -> int:
    sources = find_images(args.images)  # before the model loads: a typo fails at once
    device = devices.resolve_device(args.device)
    model, meta = export.load_model(args.model, args.which)
    model.to(device)
    print(describe(meta, device), file=sys.stderr)
    transform, classes = export.eval_transform(meta), meta["classes"]
    predictions, skipped = [], []
    for start in range(0, len(sources), args.batch_size):
        done, bad = predict_batch(model, transform, classes, sources[start:start + args.batch_size], args.top_k)
        for prediction in done:
            print(prediction.line(), flush=True)
        for source, reason in bad:
            print(f"warning: skipped {source.path}: {reason}", file=sys.stderr)
        predictions += done
        skipped += bad
    return finish(args, sources, predictions, skipped)


def find_images(arguments: list[str]) -> list[Source]:
    """Named files as given (any extension); folders: their image files, recursively, sorted."""
    sources = []
    for argument in map(Path, arguments):
        if not argument.exists():
            raise DataNotFoundError(f"{argument} does not exist; give image files or folders of images")
        if argument.is_dir():
            found = sorted(path for path in argument.rglob("*")
                           if path.suffix.lower() in folders.IMAGE_SUFFIXES and path.is_file())
            if not found:
                print(f"warning: {argument} holds no image files ({' '.join(folders.IMAGE_SUFFIXES)})", file=sys.stderr)
            sources += [Source(path, in_folder=True) for path in found]
        else:
            sources.append(Source(argument, in_folder=False))
    if not sources:
        raise DataNotFoundError(f"no image files in {', '.join(arguments)} "
                                f"(looked for {' '.join(folders.IMAGE_SUFFIXES)}, recursively)")
    return sources


def predict_batch(model: nn.Module, transform, classes: list[str], batch: list[Source],
                  top_k: int) -> tuple[list[Prediction], list[tuple[Source, str]]]:
    """Top-k predictions for the decodable images of `batch`, and (source, reason) for the others."""
    tensors, kept, bad = [], [], []
    for source in batch:
        try:
            tensors.append(transform(folders.load_rgb(source.path)))
            kept.append(source)
        except BadImageError as err:
            bad.append((source, decode_failure(err.__cause__)))
    if not tensors:
        return [], bad
    probs = class_probs(model, torch.stack(tensors))
    top = probs.topk(min(top_k, len(classes)), dim=1)
    return [Prediction(source.path, [classes[i] for i in indices], values)
            for source, values, indices in zip(kept, top.values.tolist(), top.indices.tolist())], bad


def decode_failure(cause) -> str:
    if isinstance(cause, UnidentifiedImageError):  # its message repeats the path as a file object
        return "not an image file PIL can read"
    return f"cannot decode ({type(cause).__name__}: {cause})"


def class_probs(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes, float32 on the CPU, for a batch of preprocessed images."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        return torch.softmax(model(images.to(device)).float(), dim=1).cpu()


def finish(args, sources: list[Source], predictions: list[Prediction], skipped: list) -> int:
    if skipped:
        listed = "\n".join(f"  {source.path}: {reason}" for source, reason in skipped)
        print(f"skipped {len(skipped)} of {len(sources)} file(s) that cannot be decoded:\n{listed}", file=sys.stderr)
    if not predictions:
        print(f"error: none of the {len(sources)} image file(s) could be decoded", file=sys.stderr)
        return 2
    out = args.csv or (Path(DEFAULT_CSV) if any(source.in_folder for source in sources) else None)
    if out is not None:
        try:
            write_csv(predictions, out)
        except OSError as err:
            print(f"error: cannot write {out}: {err.strerror or err}; give another --csv path", file=sys.stderr)
            return 2
        print(f"wrote {out} ({len(predictions)} rows)", file=sys.stderr)
    return 2 if any(not source.in_folder for source, _ in skipped) else 0


def write_csv(predictions: list[Prediction], path: Path) -> Path:
    """Columns: path, top1_class, top1_prob, top2_class, top2_prob, ... (probabilities in [0, 1])."""
    k = max(len(prediction.classes) for prediction in predictions)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path"] + [f"top{i}_{column}" for i in range(1, k + 1) for column in ("class", "prob")])
    for prediction in predictions:
        writer.writerow([prediction.path] + [value for name, prob in zip(prediction.classes, prediction.probs)
                                             for value in (name, f"{prob:.6f}")])
    # Bytes, so no platform newline translation doubles csv's \r\n.
    return atomic.write_atomic(path, lambda handle: handle.write(text.getvalue().encode()))


def describe(meta: dict, device: torch.device) -> str:
    test_acc = meta.get("test_acc")
    accuracy = f", test acc {100 * test_acc:.2f}%" if isinstance(test_acc, (int, float)) else ""
    return (f"{meta['model']['name']} ({meta['model']['source']}), {len(meta['classes'])} classes, "
            f"{meta.get('which', '?')} model of run {meta.get('run_id', '?')} (epoch {meta.get('epoch', '?')}"
            f"{accuracy}) on {device}")


if __name__ == "__main__":
    sys.exit(main())
