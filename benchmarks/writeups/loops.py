"""Plain re-implementations of the four source write-ups' training loops, AS PUBLISHED.

An independent reference for tlbench (shares no code with the `tlbench` package).  Every rule
below, defects included, follows /work/shared/docs/seeds.md, in particular its section
"Details that matter for an exact reproduction".

A  ResNet18 / CIFAR-10.  Train RandomCrop(32, pad 4), h-flip, ColorJitter(.2, .2, .2, .1),
   RandomRotation(15), CIFAR Normalize; test ToTensor + Normalize; batch 64.  One Adam over
   model.parameters() (lr 1e-3, wd 1e-4), CrossEntropyLoss, ReduceLROnPlateau(min, 0.5,
   patience 2) stepped per epoch on the test loss averaged over test batches.  Parameters whose
   NAME lacks "fc" are frozen for `--freeze-epochs`; at that epoch index all are unfrozen and
   param_groups[0]['lr'] = 1e-4 (scheduler state kept).  model.train() throughout training.
B  Same script, efficientnet_b0, 40 epochs.  The name rule is the published defect: it freezes
   the head classifier.1 and leaves the SE fc1/fc2 trainable (636,540 of 4,020,358 params).
C  ResNet50 / Imagewoof.  Train RandomCrop(S, pad 4, reflect) + h-flip, val Resize((S, S)), CIFAR
   Normalize; batch 64 (val 128).  Adam(lr=max_lr, wd 1e-4) + OneCycleLR(max_lr 1e-4, torch
   defaults, so beta1 cycles) stepped per batch; clip_grad_value_(0.1) before step.  Defects
   kept: the model returns sigmoid(logits), cross_entropy is taken on them, and freeze() sets
   `require_grad` (typo) so everything trains.  Val loss/accuracy are means of per-batch values.
   `--resize R` (not in the write-up) prepends Resize((R, R)): a stand-in for the 160 px copy.
D  ResNet18 / food lists.  `<path> <label>` lines split on one space, paths relative to the cwd
   (or `--list-root`).  Train Resize((300, 300)), RandomRotation(45), CenterCrop(224), h/v-flip,
   ColorJitter(.4, .4, .4, .1), ImageNet Normalize; valid Resize((224, 224)); batch 64.  Backbone
   frozen, Adam(head, lr 0.005), ReduceLROnPlateau(max on val accuracy, 0.5, patience 3); the
   best-accuracy state_dict is saved as best.pth.

Usage: python benchmarks/writeups/loops.py --protocol A --train-dir T --test-dir V --out r.json
       or, from Python, loops.run([...the same arguments...]) -> result dict.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEFAULT_EPOCHS = {"A": 10, "B": 40, "C": 10, "D": 20}
DEFAULT_MODEL = {"A": "resnet18", "B": "efficientnet_b0", "C": "resnet50", "D": "resnet18"}


def parse_args(args_list):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", required=True, choices=["A", "B", "C", "D"])
    p.add_argument("--model", default=None, help="resnet18 | resnet50 | efficientnet_b0 | timm:<name>")
    p.add_argument("--weights", default=None, help="1000-class ImageNet state_dict file (strict load)")
    p.add_argument("--train-dir"), p.add_argument("--test-dir")        # A, B, C (ImageFolder)
    p.add_argument("--train-list"), p.add_argument("--test-list")      # D
    p.add_argument("--list-root", default=None, help="D: directory relative list paths are joined onto")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--freeze-epochs", type=int, default=5)             # A, B
    p.add_argument("--freeze-substring", default="fc", help="A, B: parameters whose name lacks it are frozen")
    p.add_argument("--size", type=int, default=160)                    # C crop / val size
    p.add_argument("--resize", type=int, default=None, help="C: optional pre-resize; D: default 300")
    p.add_argument("--crop", type=int, default=224)                    # D
    p.add_argument("--eval-size", type=int, default=224)               # D
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON result file")
    p.add_argument("--save-dir", default=None, help="D: where best.pth goes (default: folder of --out, else cwd)")
    args = p.parse_args(args_list)
    args.epochs = DEFAULT_EPOCHS[args.protocol] if args.epochs is None else args.epochs
    args.model = args.model or DEFAULT_MODEL[args.protocol]
    if args.protocol == "D" and args.resize is None:
        args.resize = 300
    return args


# ---------------------------------------------------------------- models and freezing
def build_model(name, num_classes, weights_file=None):
    """Build the backbone, load 1000-class weights strictly, then swap the head as the write-ups did."""
    if name.startswith("timm:"):
        model = timm.create_model(name[len("timm:"):], pretrained=False, num_classes=1000)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    if weights_file:
        model.load_state_dict(torch.load(weights_file, map_location="cpu"), strict=True)
    if name.startswith("timm:"):
        model.classifier = nn.Linear(model.classifier.in_features, num_classes)
    elif name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    else:  # torchvision efficientnet_b0: classifier = Sequential(Dropout, Linear)
        model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)
    return model


def head_of(model):
    return model.fc if hasattr(model, "fc") else model.classifier


def count_params(model, trainable_only=False):
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def freeze_params_named_without(model, substring="fc"):
    """Write-ups A/B: freeze by name substring (the defect B exposes). `substring` is "fc" as
    published; a stand-in model whose head is named otherwise (timm's `classifier`) takes its head's
    name, which keeps write-up A's intent (head only)."""
    for name, param in model.named_parameters():
        if substring not in name:
            param.requires_grad = False


def unfreeze_all(model):
    for param in model.parameters():
        param.requires_grad = True


def freeze_with_typo(model):
    """Write-up C's freeze(): sets `require_grad` (no "s"), so nothing is actually frozen."""
    for param in model.parameters():
        param.require_grad = False


# ---------------------------------------------------------------- data
def ab_transforms():
    norm = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    train = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(0.2, 0.2, 0.2, 0.1), transforms.RandomRotation(15),
        transforms.ToTensor(), norm])
    return train, transforms.Compose([transforms.ToTensor(), norm])


def c_transforms(size, resize=None):
    pre = [transforms.Resize((resize, resize))] if resize else []
    norm = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    train = transforms.Compose(pre + [
        transforms.RandomCrop(size, padding=4, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    val = transforms.Compose(pre + [transforms.Resize((size, size)), transforms.ToTensor(), norm])
    return train, val


def d_transforms(resize, crop, eval_size):
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = transforms.Compose([
        transforms.Resize((resize, resize)), transforms.RandomRotation(45), transforms.CenterCrop(crop),
        transforms.RandomHorizontalFlip(), transforms.RandomVerticalFlip(),
        transforms.ColorJitter(0.4, 0.4, 0.4, 0.1), transforms.ToTensor(), norm])
    valid = transforms.Compose([transforms.Resize((eval_size, eval_size)), transforms.ToTensor(), norm])
    return train, valid


def read_list(list_file, root=None):
    """Write-up D: each non-empty line is `<path> <label>`, split on one space."""
    samples = []
    with open(list_file) as f:
        for line in f:
            if not line.strip():
                continue
            path, label = line.strip().split(" ")
            if root is not None and not os.path.isabs(path):
                path = os.path.join(root, path)
            samples.append((path, int(label)))
    return samples


class ListDataset(Dataset):
    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return self.transform(Image.open(path).convert("RGB")), label


# ---------------------------------------------------------------- one epoch of training / evaluation
def train_epoch(model, loader, optimizer, criterion, device, iter_loss, clip_value=None, batch_scheduler=None):
    """Returns (mean of per-batch losses, correct/total); appends each batch loss to iter_loss."""
    model.train()
    batch_losses, correct, total = [], 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        if loss.requires_grad:  # False only when the freeze rule left nothing trainable
            loss.backward()
        if clip_value is not None:
            nn.utils.clip_grad_value_(model.parameters(), clip_value)
        optimizer.step()
        if batch_scheduler is not None:
            batch_scheduler.step()
        batch_losses.append(loss.item())
        iter_loss.append(loss.item())
        correct += (outputs.argmax(1) == labels).sum().item()
        total += labels.size(0)
    return sum(batch_losses) / len(batch_losses), correct / total


@torch.no_grad()
def evaluate(model, loader, criterion, device, mean_of_batch_accuracies=False):
    """Returns (mean of per-batch losses, accuracy): correct/total, or the mean of per-batch accuracies (C)."""
    model.eval()
    batch_losses, batch_accs, correct, total = [], [], 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        outputs = model(images)
        batch_losses.append(criterion(outputs, labels).item())
        hits = (outputs.argmax(1) == labels).sum().item()
        batch_accs.append(hits / labels.size(0))
        correct, total = correct + hits, total + labels.size(0)
    acc = sum(batch_accs) / len(batch_accs) if mean_of_batch_accuracies else correct / total
    return sum(batch_losses) / len(batch_losses), acc


def log_epoch(history, epoch, train_loss, train_acc, test_loss, test_acc, lr, trainable, started_s):
    row = {"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss,
           "test_acc": test_acc, "lr": lr, "trainable_params": trainable, "time_s": time.time() - started_s}
    history.append(row)
    print(f"epoch {epoch + 1:3d}  train loss {train_loss:.4f} acc {train_acc:.4f}  "
          f"test loss {test_loss:.4f} acc {test_acc:.4f}  lr {lr:.3g}  trainable {trainable:,}  "
          f"{row['time_s']:.1f}s", flush=True)


# ---------------------------------------------------------------- the protocols
def run_ab(args, model, train_loader, test_loader, device, history, iter_loss):
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=2)
    freeze_params_named_without(model, args.freeze_substring)
    for epoch in range(args.epochs):
        started = time.time()
        if epoch == args.freeze_epochs:
            unfreeze_all(model)
            optimizer.param_groups[0]["lr"] = 1e-4
        trainable = count_params(model, trainable_only=True)
        train_loss, train_acc = train_epoch(model, train_loader, optimizer, criterion, device, iter_loss)
        test_loss, test_acc = evaluate(model, test_loader, criterion, device)
        scheduler.step(test_loss)
        log_epoch(history, epoch, train_loss, train_acc, test_loss, test_acc,
                  optimizer.param_groups[0]["lr"], trainable, started)


def run_c(args, model, train_loader, test_loader, device, history, iter_loss):
    max_lr = 1e-4
    freeze_with_typo(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=args.epochs,
                                                    steps_per_epoch=len(train_loader))
    for epoch in range(args.epochs):
        started = time.time()
        trainable = count_params(model, trainable_only=True)
        train_loss, train_acc = train_epoch(model, train_loader, optimizer, F.cross_entropy, device, iter_loss,
                                            clip_value=0.1, batch_scheduler=scheduler)
        val_loss, val_acc = evaluate(model, test_loader, F.cross_entropy, device, mean_of_batch_accuracies=True)
        log_epoch(history, epoch, train_loss, train_acc, val_loss, val_acc,
                  optimizer.param_groups[0]["lr"], trainable, started)


def run_d(args, model, train_loader, test_loader, device, history, iter_loss, best_path):
    for param in model.parameters():
        param.requires_grad = False
    for param in head_of(model).parameters():
        param.requires_grad = True  # backbone frozen, only the new head trains
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(head_of(model).parameters(), lr=0.005)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    best_acc = None
    for epoch in range(args.epochs):
        started = time.time()
        trainable = count_params(model, trainable_only=True)
        train_loss, train_acc = train_epoch(model, train_loader, optimizer, criterion, device, iter_loss)
        val_loss, val_acc = evaluate(model, test_loader, criterion, device)
        scheduler.step(val_acc)
        if best_acc is None or val_acc > best_acc:
            best_acc = val_acc
            torch.save(model.state_dict(), best_path)
        log_epoch(history, epoch, train_loss, train_acc, val_loss, val_acc,
                  optimizer.param_groups[0]["lr"], trainable, started)


def seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def run(args_list):
    """Parse the CLI arguments in args_list, train one protocol, write --out if given, return the result dict."""
    args = parse_args(args_list)
    if args.threads:
        torch.set_num_threads(args.threads)
    shuffle_generator = seed_everything(args.seed)
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    train_batch, test_batch = 64, (128 if args.protocol == "C" else 64)

    if args.protocol == "D":
        train_tf, test_tf = d_transforms(args.resize, args.crop, args.eval_size)
        train_samples = read_list(args.train_list, args.list_root)
        test_samples = read_list(args.test_list, args.list_root)
        num_classes = 1 + max(label for _, label in train_samples + test_samples)
        train_set, test_set = ListDataset(train_samples, train_tf), ListDataset(test_samples, test_tf)
    else:
        train_tf, test_tf = ab_transforms() if args.protocol in "AB" else c_transforms(args.size, args.resize)
        train_set = datasets.ImageFolder(args.train_dir, train_tf)
        test_set = datasets.ImageFolder(args.test_dir, test_tf)
        num_classes = len(train_set.classes)
    train_loader = DataLoader(train_set, batch_size=train_batch, shuffle=True,
                              num_workers=args.workers, generator=shuffle_generator)
    test_loader = DataLoader(test_set, batch_size=test_batch, shuffle=False, num_workers=args.workers)

    model = build_model(args.model, num_classes, args.weights)
    total_params = count_params(model)
    if args.protocol == "C":
        model = nn.Sequential(model, nn.Sigmoid())  # the write-up's forward: sigmoid(network(x))
    model.to(device)

    history, iter_loss, extra = [], [], {}
    print(f"protocol {args.protocol}  model {args.model}  classes {num_classes}  params {total_params:,}  "
          f"train {len(train_set)}  test {len(test_set)}  device {device}", flush=True)
    if args.protocol in "AB":
        run_ab(args, model, train_loader, test_loader, device, history, iter_loss)
    elif args.protocol == "C":
        run_c(args, model, train_loader, test_loader, device, history, iter_loss)
    else:
        save_dir = args.save_dir or (os.path.dirname(os.path.abspath(args.out)) if args.out else os.getcwd())
        os.makedirs(save_dir, exist_ok=True)
        extra["best_path"] = os.path.join(save_dir, "best.pth")
        run_d(args, model, train_loader, test_loader, device, history, iter_loss, extra["best_path"])

    result = {"protocol": args.protocol, "args": vars(args), "num_classes": num_classes,
              "total_params": total_params, "epochs": history, "iter_loss": iter_loss,
              "final_test_acc": history[-1]["test_acc"] if history else None,
              "best_test_acc": max(r["test_acc"] for r in history) if history else None,
              "device": str(device), "torch": torch.__version__, **extra}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main():
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
