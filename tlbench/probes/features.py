"""Frozen features for the probes (`freeze=knn`, `freeze=logreg`, probes.py): every split through
the backbone once, as the evaluation transform sees it (resize to the input size and normalize,
no augmentation), in eval mode without gradients, pooled pre-logits out.

The features are cached on disk (`<data.cache_dir>/features/`), one file per split, keyed by what
determines them: the model (name, source, kwargs), its backbone weights by content (a sha256 of
the backbone's state_dict, so a weights file, a hub download and a seeded random init are each
named by what they hold), the data set's identity (its `dataset.*` settings with local files
named by their content, as identity.py does), the split and its size, and the preprocessing
(image size, input size, mean, std, bf16 autocast). A sweep of probes over one backbone, or a
probe run again, extracts once."""

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tlbench.data import tensor_data
from tlbench.specs import SQUASH, FeatureSpec, Preprocess
from tlbench.data import disk_cache

log = logging.getLogger("tlbench")
FEATURE_FORMAT = 1  # bump when what is stored (or how it is computed) changes: old files then miss


@dataclass
class SplitFeatures:
    features: torch.Tensor      # float32 (N, D), host memory
    labels: torch.Tensor        # int64 (N,)
    cache_hit: bool             # read from the cache (True) or extracted by this call
    extract_s: float            # seconds spent extracting (0 on a hit)
    path: Path | None = None    # the cache file
    skipped: list[str] = field(default_factory=list)  # undecodable files left out (dataset.on_bad_image=skip)


def feature_function(built):
    """images -> pooled pre-logits. timm models know their own head (`forward_head(pre_logits=True)`:
    global pooling, and any pre-logits layer, without the classifier); a torchvision model gets the
    classifier that models.py found (`built.info["head_module"]`) replaced by identity, in place."""
    model = built.model
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        def pre_logits(images):
            return model.forward_head(model.forward_features(images), pre_logits=True)
        return pre_logits, "timm forward_head(forward_features(x), pre_logits=True)"
    model.set_submodule(built.info["head_module"], nn.Identity())
    return model, f"torchvision model with {built.info['head_module']} replaced by identity"


def weights_fingerprint(model: nn.Module, head_module: str) -> str:
    """sha256 over the backbone's state_dict (names and bytes; the head, which is new and sized for
    the classes, left out). ~0.1 s for resnet18's 45 MB."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith(head_module + "."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def cache_key(spec: FeatureSpec, image_size: int, dataset_identity: dict, weights: str, split: str,
              size: int, preprocess: Preprocess = SQUASH) -> dict:
    """Everything the features of one split depend on (not where files live, nor the run's seed:
    a seeded random init is in `weights`). Squashed images keep the keys they had before
    dataset.preprocess existed; cropped ones add how (the crop fraction `model` resolved)."""
    key = {"format": FEATURE_FORMAT, "model": {"name": spec.model_name, "source": spec.model_source,
                                                "kwargs": json.loads(json.dumps(spec.model_kwargs, default=str))},
            "weights": weights, "dataset": dataset_identity, "split": split, "size": size,
            "preprocessing": {"image_size": image_size, "input_size": spec.input_size or image_size,
                              "mean": list(spec.mean), "std": list(spec.std), "amp": spec.amp}}
    if preprocess.crops:
        key["preprocessing"]["view"] = preprocess.describe()
    return key


def split_features(spec: FeatureSpec, splits, built, device, dataset_identity: dict) -> tuple[dict, dict]:
    """{split name: SplitFeatures} for every distinct split (splits.named()), and what was used:
    {"weights_fingerprint", "features_from"}. Undecodable files skipped on the way are recorded in
    `splits.skipped`, whether they were found now or when the cache was written."""
    weights = weights_fingerprint(built.model, built.info["head_module"])
    forward, described = feature_function(built)
    built.model.to(device).eval()
    folder = Path(spec.cache_dir).expanduser() / "features"
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, dataset in splits.named().items():
        key = cache_key(spec, splits.image_size, dataset_identity, weights, name, len(dataset), splits.preprocess)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.model_name)}-{name}-{digest}.pt"
        timing = {}
        stored, hit = disk_cache.read_or_build(  # parallel jobs on one backbone: one extracts
            path, lambda found, key=key: _check(found, key),
            lambda name=name, dataset=dataset, key=key, timing=timing: _extract(
                spec, splits, name, dataset, forward, device, key, timing), "feature cache", "extracting again")
        found[name] = SplitFeatures(stored["features"], stored["labels"], hit, timing.get("extract_s", 0.0), path,
                                    list(stored["skipped"]))
        if found[name].skipped:
            splits.skipped[name] = found[name].skipped
    return found, {"weights_fingerprint": weights, "features_from": described}


def _extract(spec: FeatureSpec, splits, name, dataset, forward, device, key, timing: dict) -> dict:
    """What the cache stores for one split; `timing["extract_s"]`: the seconds the forward passes took."""
    cached = tensor_data.cached_split(dataset, splits.image_size, cache_dir=spec.cache_dir, name=spec.dataset_name,
                                      split=name, workers=spec.decode_workers, on_bad_image=splits.on_bad_image,
                                      preprocess=splits.preprocess)
    transform = tensor_data.BatchTransform(splits.image_size, spec.input_size or splits.image_size, spec.mean,
                                           spec.std, train=False, preprocess=splits.preprocess)
    batches = tensor_data.DeviceBatches(cached, spec.eval_batch_size, transform, device, False, 0,
                                        spec.device_budget_gb * 2**30)
    started = time.perf_counter()
    features, labels = extract(forward, batches, device, spec.amp)
    timing["extract_s"] = extract_s = time.perf_counter() - started
    log.info("extracted %s features of %d %s images in %.1f s (%.0f img/s)", tuple(features.shape[1:]),
             len(labels), name, extract_s, len(labels) / max(extract_s, 1e-9))
    return {"key": json.dumps(key, sort_keys=True), "features": features, "labels": labels,
            "skipped": list(cached.skipped)}


@torch.no_grad()
def extract(forward, batches, device: torch.device, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 features, labels) on the host, in the order of `batches`."""
    features, labels = [], []
    for images, batch_labels in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            output = forward(images.to(device, non_blocking=True))
        features.append(output.float().flatten(1).to("cpu"))
        labels.append(batch_labels.to("cpu"))
    return torch.cat(features), torch.cat(labels).long()


def _check(stored: dict, key: dict) -> None:
    """Raises unless `stored` holds the features `key` describes."""
    features, labels = stored["features"], stored["labels"]
    if stored["key"] != json.dumps(key, sort_keys=True):
        raise ValueError("it was written for other settings")
    if not (features.dtype == torch.float32 and features.dim() == 2 and labels.dtype == torch.int64
            and labels.shape == (len(features),) and len(features) + len(stored["skipped"]) == key["size"]):
        raise ValueError(f"it does not hold {key['size']} float32 feature rows with int64 labels")
