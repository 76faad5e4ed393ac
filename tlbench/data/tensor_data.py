"""The fast data path: decode a split once into a uint8 tensor at the training resolution, cache
it on disk, keep it on the training device when it fits a memory budget (else stream it from host
memory, one uint8 batch at a time through two reused staging buffers: HostBatches), and augment
whole batches there (batch_augment.py)."""

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision.transforms import v2

from tlbench.data import augment as views
from tlbench.data import batch_augment as ops
from tlbench.data import disk_cache, image_check
from tlbench import specs
from tlbench.data import TensorImages
from tlbench.errors import BadImageError

log = logging.getLogger("tlbench")
CACHE_FORMAT = 2  # bump when the cached layout changes: old files are then ignored


@dataclass
class CachedSplit:
    images: torch.Tensor   # uint8 (N, 3, size, size), host memory (the training view of photos: a larger canvas)
    labels: torch.Tensor   # int64 (N,)
    path: Path | None      # the cache file, None for in-memory data sets
    decoded: bool          # True when this call decoded the images (False: read from the cache)
    skipped: list[str] = field(default_factory=list)  # files left out because they cannot be decoded (dataset.on_bad_image=skip)
    extents: torch.Tensor | None = None  # int16 (N, 2): each photo's (h, w) on its canvas (view="train", preprocess=crop)


def fingerprint(dataset: Dataset) -> str | None:
    """Identifies the source: file paths with sizes and modification times, or the bytes of
    in-memory arrays. None when the source cannot be identified (then nothing is cached)."""
    digest = hashlib.sha256()
    if isinstance(dataset, Subset):
        parent = fingerprint(dataset.dataset)
        if parent is None:
            return None
        digest.update(parent.encode())
        digest.update(torch.as_tensor(dataset.indices).numpy().tobytes())
    elif isinstance(dataset, ConcatDataset):  # train + an official val split (dataset.train_on=train_val)
        for part in dataset.datasets:
            found = fingerprint(part)
            if found is None:
                return None
            digest.update(found.encode())
    elif getattr(dataset, "source_fingerprint", None):  # the source identifies itself (data/hf.py)
        digest.update(dataset.source_fingerprint.encode())
    elif hasattr(dataset, "samples"):
        for path, label in dataset.samples:
            stat = os.stat(path)
            digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    elif hasattr(dataset, "data") and hasattr(dataset, "targets"):  # torchvision CIFAR
        digest.update(memoryview(dataset.data).tobytes())
        digest.update(bytes(str(list(dataset.targets)), "ascii"))
    else:
        return None
    return digest.hexdigest()[:16]


def cached_split(dataset: Dataset, size: int, cache_dir, name: str, split: str, workers: int = 0,
                 on_bad_image: str = "fail", preprocess: specs.Preprocess = specs.SQUASH,
                 view: str = "eval") -> CachedSplit:
    """The split decoded once, as `view` needs it: "eval" the evaluation view (size x size), "train"
    what the training augmentation starts from (with preprocess=crop, each photo on a canvas with
    its extent; else the evaluation view). Squashed splits keep their cache files' old names."""
    canvas = preprocess.crops and view == "train"
    if isinstance(dataset, TensorImages):  # already decoded in memory: the view of the tensors
        if not preprocess.crops:  # gray images resized as one channel, then held as RGB
            resized = TensorImages.rgb(ops.resize(dataset.images, size)).contiguous()
            return CachedSplit(resized, dataset.labels.clone(), None, False, [])
        images, extents = _views(TensorImages.rgb(dataset.images), size, preprocess, canvas)
        return CachedSplit(images, dataset.labels.clone(), None, False, [], extents)
    key = fingerprint(dataset)
    if key is None:  # a source that cannot be identified is decoded every time, never cached
        images, labels, skipped, extents = decode(dataset, size, workers, on_bad_image, preprocess, view)
        return CachedSplit(images, labels, None, True, skipped, extents)
    tag = f"-crop{preprocess.crop_fraction:g}-{view}" if preprocess.crops else ""
    path = Path(cache_dir).expanduser() / f"{name}-{split}-{size}px{tag}-v{CACHE_FORMAT}-{key}.pt"
    side = preprocess.canvas_side(size) if canvas else size
    stored, hit = disk_cache.read_or_build(
        path, lambda found: _check_cached(found, side, len(dataset), canvas),
        lambda: dict(zip(("images", "labels", "skipped", "extents"),
                         decode(dataset, size, workers, on_bad_image, preprocess, view))),
        "decode cache", f"decoding the {split} split again")
    images, labels, skipped = stored["images"], stored["labels"], stored["skipped"]
    if hit and skipped and on_bad_image == "fail":
        raise BadImageError(f"{len(skipped)} image(s) of the {split} split cannot be decoded, e.g. "
                            f"{skipped[0]}; delete or replace them, or set dataset.on_bad_image=skip", path=skipped[0])
    return CachedSplit(images, labels, path, not hit, skipped, stored.get("extents"))


def _views(images: torch.Tensor, size: int, preprocess: specs.Preprocess, canvas: bool):
    """In-memory uint8 images (one shape) as `decode` would store them: (images, extents or None)."""
    if canvas:
        placed = views.PhotoCanvas(size, preprocess)(images)
        return placed[0].contiguous(), placed[1].expand(len(images), 2).clone()
    return v2.Compose(views.view(size, preprocess))(images).as_subclass(torch.Tensor).contiguous(), None


def _check_cached(stored: dict, size: int, count: int, canvas: bool = False) -> None:
    """Raises unless `stored` is what `decode` writes for a split of `count` images at `size` px."""
    images, labels, skipped = stored["images"], stored["labels"], stored["skipped"]
    extents = stored.get("extents")
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
            and tuple(images.shape[-2:]) == (size, size) and isinstance(labels, torch.Tensor)
            and labels.dtype == torch.int64 and labels.shape == (len(images),) and isinstance(skipped, list)
            and len(images) + len(skipped) == count
            and (not canvas or (isinstance(extents, torch.Tensor) and extents.shape == (len(images), 2)))):
        raise ValueError(f"it does not hold this split's {count} images at {size} px (uint8, int64 labels)")


def decode(dataset: Dataset, size: int, workers: int = 0, on_bad_image: str = "fail",
           preprocess: specs.Preprocess = specs.SQUASH, view: str = "eval"):
    """(uint8 images, labels, skipped paths, extents or None) of every image of `dataset`."""
    started = time.perf_counter()
    canvas = preprocess.crops and view == "train"
    to_uint8 = views.PhotoCanvas(size, preprocess) if canvas else v2.Compose([v2.ToImage(), *views.view(size, preprocess)])
    images, labels, _, skipped = image_check.read_all(dataset, to_uint8, on_bad_image, workers)
    images, extents = images if canvas else (images, None)
    images = images.as_subclass(torch.Tensor).contiguous()
    log.info("decoded %d images to %d px%s in %.1f s (%d MB)%s", len(images), size,
             f" ({preprocess.mode}, {view} view)" if preprocess.crops else "", time.perf_counter() - started,
             images.numel() // 2**20, f"; skipped {len(skipped)} undecodable file(s)" if skipped else "")
    return images, labels, skipped, extents


class BatchTransform:
    """The `augment` group's ops on a uint8 batch; returns normalized float at `input_size`.
    `augment`: the group's keys, checked by specs.Augment (the same description the per-image
    pipeline reads); ignored when `train` is false."""

    def __init__(self, image_size, input_size, mean, std, train=True, preprocess: specs.Preprocess = specs.SQUASH,
                 **augment):
        self.image_size, self.input_size, self.mean, self.std, self.train = image_size, input_size, mean, std, train
        self.augment = specs.augment(augment if train else {})
        self.preprocess = preprocess
        views.check_preprocess(preprocess, self.augment)
        self._stats = {}  # device -> (mean, std) tensors there, made on the first batch, not on every one

    def __call__(self, images: torch.Tensor, generator, extents: torch.Tensor | None = None) -> torch.Tensor:
        """`extents`: the photos' (h, w) on their canvases, for a training split cached by PhotoCanvas."""
        if self.train:
            images = self._augment(images, generator, extents)
        images = ops.resize(images.float() / 255, self.input_size)
        return ops.normalize(images, *self._stats_on(images.device))

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            self._stats[device] = tuple(ops.to_device(torch.tensor(values, dtype=torch.float32), device)
                                        for values in (self.mean, self.std))
        return self._stats[device]

    def _augment(self, x, generator, extents=None):
        aug = self.augment
        if extents is not None:  # photos on canvases: a box from each photo, or its evaluation view
            x = (ops.random_resized_crop(x, self.image_size, aug.random_resized_crop, generator, extents=extents)
                 if aug.random_resized_crop else ops.center_crop_photos(x, self.image_size, extents))
        elif aug.random_resized_crop:
            x = ops.random_resized_crop(x, self.image_size, aug.random_resized_crop, generator)
        elif not aug.resize:
            x = ops.resize(x, self.image_size)
        if aug.rotation_deg:
            x = ops.rotate(x, aug.rotation_deg, generator)
        if aug.center_crop:
            x = ops.center_crop(x, self.image_size)
        if aug.pad:
            x = ops.pad_crop(x, aug.pad, aug.pad_mode, generator)
        if aug.hflip:
            x = ops.flip(x, aug.hflip, -1, generator)
        if aug.vflip:
            x = ops.flip(x, aug.vflip, -2, generator)
        if aug.color_jitter:
            x = (ops.color_jitter(x.float() / 255, *aug.color_jitter, generator) * 255).round().to(torch.uint8)
        return x


class DeviceBatches:
    """An iterable of (images, labels) batches, like a DataLoader, from a cached split: gathered on
    the device when the split is kept there, else streamed from host memory (HostBatches). Both
    give the same batches bit for bit and draw the same random numbers in the same order.
    `stream`: None = stream when the split is over `device_budget_bytes` on an accelerator (on a
    CPU the split is in host memory already, streaming would only add a copy); True/False force it."""

    def __init__(self, split: CachedSplit, batch_size: int, transform: BatchTransform, device: torch.device,
                 shuffle: bool, seed: int, device_budget_bytes: float, stream: bool | None = None):
        if stream is None:
            stream = device.type != "cpu" and split.images.numel() > device_budget_bytes
            if stream:
                log.info("streaming a split of %d MiB from host memory: over data.device_budget_gb=%g",
                         split.images.numel() // 2**20, device_budget_bytes / 2**30)
        self.on_device = not stream
        self.images = split.images.to(device) if self.on_device else split.images  # streaming: no copy of the split
        self.host = None if self.on_device else HostBatches(split.images, batch_size, device)
        self.labels, self.device = split.labels.to(device), device
        self.extents = None if split.extents is None else split.extents.to(device)
        self.batch_size, self.transform, self.shuffle = batch_size, transform, shuffle
        self.order_generator = torch.Generator().manual_seed(seed)
        self.augment_generator = torch.Generator(device=device).manual_seed(seed)

    @property
    def generators(self) -> tuple[torch.Generator, torch.Generator]:
        """The shuffle order and augmentation generators, saved in checkpoints."""
        return self.order_generator, self.augment_generator

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        count = len(self.labels)
        # The order is drawn on the host (the same order on every device, and in checkpoints) and
        # copied to the device once per epoch: a copy per batch would make the host wait for the GPU.
        order = torch.randperm(count, generator=self.order_generator) if self.shuffle else torch.arange(count)
        device_order = ops.to_device(order, self.device)
        starts = range(0, count, self.batch_size)
        if self.on_device:
            images = (self.images[device_order[start:start + self.batch_size]] for start in starts)
        else:
            images = self.host.batches(order)
        for start, batch in zip(starts, images):
            index = device_order[start:start + self.batch_size]
            if self.extents is None:
                yield self.transform(batch, self.augment_generator), self.labels[index]
            else:  # photos on canvases (dataset.preprocess=crop): the boxes are drawn from each photo
                yield self.transform(batch, self.augment_generator, self.extents[index]), self.labels[index]


class HostBatches:
    """Batches of a host tensor, copied to `device` through two staging buffers allocated once at
    the largest batch size and reused (double buffering): batch k+1 is gathered into one buffer
    and copied while batch k, from the other, trains.

    The split itself stays in ordinary (pageable) memory: the DMA engine reads only the staging
    buffers, and the gather into them is a host memcpy that runs as fast from pageable memory.
    Pinning the split would instead hold a second, page-locked copy of it, rounded up to a power of
    two by PyTorch's pinned allocator, which keeps it cached even once it is freed.

    On CUDA the buffers are pinned and each copy runs non_blocking on a side stream; an event per
    buffer marks its copy's end: the consumer's stream waits on it before using the batch, and the
    host waits on it before gathering into that buffer again. The device tensor handed out was
    allocated on the side stream, so it is recorded on the consumer's stream (`record_stream`):
    its memory is not reused until the work queued there on it has run. Elsewhere (CPU, MPS) the buffers are
    plain memory and each copy is synchronous (on a CPU a copy all the same, so that no batch
    handed out aliases a buffer that is about to be overwritten). One iteration at a time."""

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device):
        self.images, self.batch_size, self.device = images, batch_size, device
        cuda = device.type == "cuda"
        shape = (min(batch_size, len(images)), *images.shape[1:])
        self.staging = tuple(torch.empty(shape, dtype=images.dtype, pin_memory=cuda) for _ in range(2))
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.copied = tuple(torch.cuda.Event() for _ in range(2)) if cuda else (None, None)

    def batches(self, order: torch.Tensor):
        """Yields `images[order]` on the device, `batch_size` images at a time (the last batch may be
        smaller); each batch's successor is already being copied when it is handed out."""
        size = self.batch_size
        starts = range(0, len(order), size)
        pending = self._put(0, order[:size])
        for k, start in enumerate(starts):
            batch = self._take(k % 2, pending)
            if k + 1 < len(starts):
                pending = self._put((k + 1) % 2, order[start + size:start + 2 * size])
            yield batch

    def _put(self, slot: int, index: torch.Tensor) -> torch.Tensor:
        """Gathers `images[index]` into staging buffer `slot` and starts its copy to the device."""
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # this buffer's previous copy has finished reading it
        staged = self.staging[slot][:len(index)]
        torch.index_select(self.images, 0, index, out=staged)
        if self.stream is None:
            return staged.to(self.device, copy=True)
        with torch.cuda.stream(self.stream):
            on_device = staged.to(self.device, non_blocking=True)
            self.copied[slot].record(self.stream)
        return on_device

    def _take(self, slot: int, on_device: torch.Tensor) -> torch.Tensor:
        """The batch copied from buffer `slot`, safe to use on the current stream."""
        if self.stream is not None:
            consumer = torch.cuda.current_stream(self.device)
            consumer.wait_event(self.copied[slot])
            on_device.record_stream(consumer)
        return on_device
