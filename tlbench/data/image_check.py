"""Image files that cannot be decoded (a truncated JPEG, a text file named .jpg).

`dataset.on_bad_image=fail` (the default) stops with the file's path; `skip` leaves such files out
and the run records how many in result.json (`data_info.skipped_images`). Both pipelines find
them before training: the tensor path while decoding into its cache, the PIL path by reading
every file once at startup (only when skipping: failing needs no scan, the file is named when read)."""

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from tlbench.errors import BadImageError

EXAMPLES_KEPT = 10  # bad paths listed in result.json; the count covers all of them


class _Checked(Dataset):
    """(transformed image, label, None) per sample, or (None, -1, bad path) when skipping."""

    def __init__(self, dataset: Dataset, transform, skip: bool):
        self.dataset, self.transform, self.skip = dataset, transform, skip

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            image, label = self.dataset[index]
        except BadImageError as err:
            if not self.skip:
                raise
            return None, -1, str(err.path)
        return self.transform(image), label, None


def _collate(items):
    good = [(image, label) for image, label, bad in items if bad is None]
    images = _stack([image for image, _ in good]) if good else None
    return images, torch.as_tensor([label for _, label in good], dtype=torch.long), \
        [bad is None for _, _, bad in items], [bad for _, _, bad in items if bad is not None]


def _stack(images: list):
    """Stacked images, or a tuple of stacks where the transform returns tuples (image, its extent)."""
    if isinstance(images[0], tuple):
        return tuple(torch.stack(part) for part in zip(*images))
    return torch.stack(images)


def _cat(batches: list):
    if isinstance(batches[0], tuple):
        return tuple(torch.cat(part) for part in zip(*batches))
    return torch.cat(batches)


def read_all(dataset: Dataset, transform, on_bad_image: str, workers: int = 0, batch_size: int = 256):
    """Reads every sample once: (stacked images, labels, kept indices, bad paths); the images are a
    tuple of stacks when `transform` returns tuples."""
    loader = DataLoader(_Checked(dataset, transform, on_bad_image == "skip"), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    images, labels, kept, bad, start = [], [], [], [], 0
    for batch, targets, ok, bad_paths in loader:
        if batch is not None:
            images.append(batch)
            labels.append(targets)
        kept.extend(start + i for i, good in enumerate(ok) if good)
        bad.extend(bad_paths)
        start += len(ok)
    if not kept:
        raise BadImageError(f"none of the {len(dataset)} images could be decoded (first: {bad[0] if bad else '?'}); "
                            "check the data set's files")
    return _cat(images), torch.cat(labels), kept, bad


def without_bad_images(dataset: Dataset, on_bad_image: str, workers: int = 0) -> tuple[Dataset, list[str]]:
    """For the PIL path: the same data set minus undecodable files (reads each file once)."""
    root = _root(dataset)  # image files, or rows of encoded images (data/hf.py): in-memory tensors always decode
    if on_bad_image == "fail" or not (hasattr(root, "samples") or getattr(root, "encoded_images", False)):
        return dataset, []
    _, _, kept, bad = read_all(dataset, lambda image: torch.zeros(0), on_bad_image, workers)
    return (Subset(dataset, kept) if bad else dataset), bad


def summary(skipped: dict[str, list[str]]) -> dict:
    """For result.json: counts per split and the first paths."""
    every = [path for paths in skipped.values() for path in paths]
    return {**{split: len(paths) for split, paths in skipped.items()}, "examples": every[:EXAMPLES_KEPT]}


def _root(dataset):
    return _root(dataset.dataset) if isinstance(dataset, Subset) else dataset
