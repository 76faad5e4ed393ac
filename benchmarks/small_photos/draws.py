"""Draws of train/test folders from the 245 ants-bees photos (../shared/data/ants-bees-train.tar.gz):
draw k holds out `--test-per-class` photos per class as test/ (random.Random(k)), the rest as train/
(tlbench carves its val split from it); `--train-per-class N` keeps only N of the rest (a smaller folder,
as a user with fewer photos has). Symlinks, no copies.

    python benchmarks/small_photos/draws.py /work/shared/data/ants-bees-train.tar.gz /tmp/ab --draws 5
"""

import argparse
import os
import random
import tarfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--train-per-class", type=int, default=None, help="keep only this many training photos")
    parser.add_argument("--name", default="split", help="folder name prefix: <out>/<name><draw>")
    args = parser.parse_args()
    source = args.out / "ants-bees-train"
    if not source.is_dir():
        with tarfile.open(args.archive) as archive:
            archive.extractall(args.out, filter="data")
    for draw in range(args.draws):
        root = args.out / f"{args.name}{draw}"
        for cls in sorted(p.name for p in source.iterdir() if p.is_dir()):
            files = sorted((source / cls).glob("*.jpg"))
            random.Random(draw).shuffle(files)
            for split, part in (("test", files[:args.test_per_class]), ("train", files[args.test_per_class:][:args.train_per_class])):
                folder = root / split / cls
                folder.mkdir(parents=True, exist_ok=True)
                for f in part:
                    if not (folder / f.name).exists():
                        os.symlink(f.resolve(), folder / f.name)
        print(root)


if __name__ == "__main__":
    main()
