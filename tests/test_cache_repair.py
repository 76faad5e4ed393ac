"""A damaged decode cache in data.cache_dir (a truncated file, a file that is not what tlbench
wrote) costs one decode: the run warns, naming the file, decodes again, rewrites it and completes."""

import logging

import torch
from conftest import TINY

from tlbench.runner.run import run

ON_FILES = [*TINY, "dataset=imagefolder", "dataset.image_size=32", "dataset.val_split=0", "epochs=1",
            "batch_size=4", "pretrained=false"]


def test_a_truncated_or_foreign_cache_file_is_rebuilt_and_the_run_completes(make_cfg, tmp_path, image_tree, caplog):
    overrides = [*ON_FILES, f"dataset.root={image_tree}"]
    first = run(make_cfg(*overrides), output_dir=tmp_path / "first")
    cache_files = sorted((tmp_path / "data" / "tensor-cache").glob("*.pt"))
    assert len(cache_files) == 2  # the train and test splits
    built = {path: torch.load(path, weights_only=True) for path in cache_files}
    truncated, foreign = cache_files
    truncated.write_bytes(truncated.read_bytes()[:1000])  # a full disk, a killed copy
    torch.save({"images": torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.long),
                "skipped": []}, foreign)  # loads fine, but is not this split

    with caplog.at_level(logging.WARNING, logger="tlbench"):
        again = run(make_cfg(*overrides), output_dir=tmp_path / "again")
    assert again["status"] == "ok"
    assert [e["test_acc"] for e in again["epochs"]] == [e["test_acc"] for e in first["epochs"]]
    for path in cache_files:
        assert f"the decode cache {path} cannot be read" in caplog.text
    assert "(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory" \
        in caplog.text  # the error that failed every run using the file, now a warning
    assert "(ValueError: it does not hold this split's 4 images at 32 px" in caplog.text
    for path, stored in built.items():
        rebuilt = torch.load(path, weights_only=True)
        assert torch.equal(rebuilt["images"], stored["images"]) and torch.equal(rebuilt["labels"], stored["labels"])
