"""Tiny CPU smoke check of loops.py: `python benchmarks/writeups/smoke.py` (about a minute).

Checks the published freeze counts from /work/shared/docs/seeds.md (efficientnet_b0, 10 classes:
4,020,358 parameters, 636,540 left trainable by the "name lacks 'fc'" rule) and runs every protocol
for 1-2 epochs on 3 classes of random 32x32 JPEGs.
"""
import os
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loops  # noqa: E402


def make_data(root, per_class={"train": 20, "test": 10}, classes=3):
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        with open(os.path.join(root, f"{split}.txt"), "w") as lst:
            for c in range(classes):
                os.makedirs(os.path.join(root, split, f"class{c}"))
                for i in range(n):
                    rel = f"{split}/class{c}/{i}.jpg"
                    pixels = (rng.random((32, 32, 3)) * 255 * (0.3 + 0.35 * c)).astype("uint8")
                    Image.fromarray(pixels).save(os.path.join(root, rel))
                    lst.write(f"{rel} {c}\n")


def check_freeze_counts():
    model = loops.build_model("efficientnet_b0", 10)
    loops.freeze_params_named_without_fc(model)
    total, trainable = loops.count_params(model), loops.count_params(model, True)
    head_trainable = any(p.requires_grad for p in model.classifier[1].parameters())
    print(f"efficientnet_b0/10 classes: total {total:,}, trainable after A/B freeze {trainable:,}, "
          f"head trainable: {head_trainable}")
    assert (total, trainable, head_trainable) == (4_020_358, 636_540, False)
    lite = loops.build_model("timm:tf_efficientnet_lite0", 10)
    loops.freeze_params_named_without_fc(lite)
    assert loops.count_params(lite, True) == 0
    resnet = loops.build_model("resnet18", 10)
    loops.freeze_params_named_without_fc(resnet)
    assert loops.count_params(resnet, True) == 512 * 10 + 10


def main():
    torch.set_num_threads(1)
    check_freeze_counts()
    with tempfile.TemporaryDirectory() as root:
        make_data(root)
        folders = ["--train-dir", f"{root}/train", "--test-dir", f"{root}/test", "--threads", "1"]
        lists = ["--train-list", f"{root}/train.txt", "--test-list", f"{root}/test.txt", "--list-root", root,
                 "--resize", "48", "--crop", "32", "--eval-size", "32", "--threads", "1"]
        a = loops.run(["--protocol", "A", "--epochs", "2", "--freeze-epochs", "1", "--out", f"{root}/a.json"] + folders)
        assert [r["trainable_params"] for r in a["epochs"]] == [1539, a["total_params"]]
        assert [r["lr"] for r in a["epochs"]] == [1e-3, 1e-4] and len(a["iter_loss"]) == 2
        b = loops.run(["--protocol", "B", "--epochs", "1", "--freeze-epochs", "1"] + folders)
        assert b["epochs"][0]["trainable_params"] == 636_540  # SE fc1/fc2 only; head frozen
        lite = loops.run(["--protocol", "B", "--model", "timm:tf_efficientnet_lite0", "--epochs", "2",
                          "--freeze-epochs", "1"] + folders)
        assert [r["trainable_params"] for r in lite["epochs"]] == [0, lite["total_params"]]
        c = loops.run(["--protocol", "C", "--model", "resnet18", "--size", "32", "--resize", "36",
                       "--epochs", "1"] + folders)
        assert c["epochs"][0]["trainable_params"] == c["total_params"]
        d = loops.run(["--protocol", "D", "--epochs", "2", "--out", f"{root}/d/d.json"] + lists)
        assert d["epochs"][0]["trainable_params"] == 512 * 3 + 3 and os.path.exists(f"{root}/d/best.pth")
        for r in (a, b, lite, c, d):
            assert all(0 <= e["train_acc"] <= 1 and 0 <= e["test_acc"] <= 1 for e in r["epochs"])
    print("smoke OK")


if __name__ == "__main__":
    main()
