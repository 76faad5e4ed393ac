"""An independent fine-tuning loop, to cross-check tlbench's core on the quick start's data.

Plain torch + timm + scikit-learn, none of tlbench's training, data, model or schedule code: the
default recipe written out by hand (AdamW 1e-3, weight decay 0.05 off 1-D parameters, one linear
warm-up epoch then cosine via torch's own schedulers, label smoothing 0.1, zero-initialised head,
batch 64, 5 epochs) on scikit-learn's digits at 64 px with the same train/val/test split rule.

    python -m tlbench.reference --weights ~/.cache/tlbench/weights/tf_efficientnet_lite0.in1k.pth
    python -m tlbench.reference --random-init
"""

import argparse

import numpy as np
import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits_splits(size=64, seed=0):
    """Test: 20% stratified; val: 10% of the rest (ceil), stratified; as tlbench's digits."""
    data = load_digits()
    images = torch.from_numpy(data.images / 16.0).float().unsqueeze(1).expand(-1, 3, -1, -1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round() / 255  # the uint8 round trip tlbench's cache makes
    labels = torch.from_numpy(data.target).long()
    rest, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=data.target, random_state=seed)
    held = int(np.ceil(0.1 * len(rest)))
    train, val = train_test_split(rest, test_size=held, stratify=data.target[rest], random_state=seed)
    return {name: (images[idx], labels[idx]) for name, idx in (("train", train), ("val", val), ("test", test))}


@torch.no_grad()
def accuracy(model, images, labels):
    model.eval()
    return sum((model(x).argmax(1) == y).sum().item() for x, y in zip(images.split(128), labels.split(128))) / len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="timm-layout ImageNet state_dict of tf_efficientnet_lite0")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    if not args.random_init:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=False)
    torch.nn.init.zeros_(model.classifier.weight)
    torch.nn.init.zeros_(model.classifier.bias)
    splits = digits_splits()  # split_seed 0 whatever the run seed, as tlbench
    normalize = lambda x: (x - 0.5) / 0.5  # noqa: E731 - the weights' mean = std = 0.5
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith(".bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3)
    train_x, train_y = splits["train"]
    steps = (len(train_y) + 63) // 64
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / steps, 1.0, total_iters=steps - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps * (args.epochs - 1))
    schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[steps])
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        for index in torch.randperm(len(train_y), generator=generator).split(64):
            loss = F.cross_entropy(model(normalize(train_x[index])), train_y[index], label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        val, test = (accuracy(model, normalize(splits[s][0]), splits[s][1]) for s in ("val", "test"))
        print(f"epoch {epoch + 1}: val acc {100 * val:.2f}%  test acc {100 * test:.2f}%", flush=True)


if __name__ == "__main__":
    main()
