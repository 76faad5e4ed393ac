"""Data sets held in memory from the start: scikit-learn's digits and a synthetic task (offline)."""

import numpy as np
import torch

from tlbench.data.splits import DataSplits, TensorImages


def synthetic(num_classes=4, train_size=128, test_size=64, image_size=32, noise=0.35, data_seed=0) -> DataSplits:
    """Each class is a fixed random low-frequency color pattern; samples add pixel noise and a
    random brightness shift. Learnable in a few epochs, yet not trivially separable."""
    generator = torch.Generator().manual_seed(data_seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)

    def sample(count):
        labels = torch.arange(count) % num_classes
        labels = labels[torch.randperm(count, generator=generator)]
        shift = (torch.rand(count, 1, 1, 1, generator=generator) - 0.5) * 0.3
        pixels = prototypes[labels] + shift + noise * torch.randn(count, 3, image_size, image_size, generator=generator)
        return TensorImages((pixels.clamp(0, 1) * 255).round().to(torch.uint8), labels)

    return DataSplits(sample(train_size), sample(test_size), [f"class_{i}" for i in range(num_classes)],
                      image_size, f"synthetic(seed={data_seed})")


def digits(image_size=64, test_size=0.2, split_seed=0) -> DataSplits:
    """scikit-learn's 1,797 real 8x8 digits (values 0-16), as gray RGB, upsampled once."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.from_numpy(data.images / 16.0).float().unsqueeze(1).expand(-1, 3, -1, -1)
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                             align_corners=False, antialias=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(data.target).long()
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size,
                                           stratify=data.target, random_state=split_seed)
    return DataSplits(TensorImages(images[train_idx], labels[train_idx]),
                      TensorImages(images[test_idx], labels[test_idx]),
                      [str(d) for d in range(10)], image_size, "scikit-learn load_digits")
