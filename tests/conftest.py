"""Shared fixtures: configs composed exactly as the command line composes them, with every
output, cache and weights folder inside the test's tmp_path, and no network access."""

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tlbench.configs import CONFIG_NAME, config_dir

REPO = Path(__file__).resolve().parents[1]
CONF = config_dir()
SHARED = REPO.parent / "shared"

# Under pytest-xdist (README "Tests": `-n auto`) each worker gets its share of the cores, so the workers'
# OpenMP threads do not oversubscribe them; runs with threads=auto keep this number.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("TLBENCH_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_thread():
    """Tiny tensors: a second OpenMP thread only spins on a busy machine (this file sets two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _composer(tmp_path, *first: str):
    def _make(*overrides):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose(CONFIG_NAME, overrides=[f"results_dir={tmp_path / 'results'}",
                                                f"weights_dir={tmp_path / 'weights'}",
                                                f"data_dir={tmp_path / 'data'}", *first, *overrides])
    return _make


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg("model=resnet18", "epochs=1") -> a DictConfig, as `python -m tlbench` would build,
    training the epochs it asks for: min_steps=0 (the default floor of 60 optimizer steps would turn a
    test's 1 epoch of a few images into 60; a test of the floor passes min_steps=N, which wins) and at the lr it
    names, choosing the epoch by select_epoch: random_init_lr_ratio=1 and random_init_select_epoch=null (tests train
    random init for want of weights, not to test its lr or epoch rule; a test of those passes its own)."""
    return _composer(tmp_path, "min_steps=0", "random_init_lr_ratio=1.0", "random_init_select_epoch=null")


@pytest.fixture
def user_cfg(tmp_path):
    """As make_cfg with every default as a user gets it (min_steps too): for identity and defaults tests."""
    return _composer(tmp_path)


def tlbench_command(*args) -> list[str]:
    return [sys.executable, "-m", "tlbench", *args]


def subprocess_env(tmp_path) -> dict:
    env = dict(os.environ, TLBENCH_OFFLINE="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               TLBENCH_WEIGHTS_DIR=str(tmp_path / "weights"), TLBENCH_DATA_DIR=str(tmp_path / "data"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# Small, fast settings for real training in tests: timm's test_resnet (0.4 M parameters, BatchNorm,
# ~10x faster than the default resnet18 on a CPU), 32 px synthetic images, 2 epochs (min_steps=0: the
# epochs as given, not the floor of 60 optimizer steps). A test that needs another model names it after
# TINY (`*TINY, "model=resnet18"`): the later group override wins.
TINY = ["model=test_resnet", "dataset=synthetic", "epochs=2", "batch_size=32", "augment=none", "checkpoint_every_s=0",
        "min_steps=0"]


@pytest.fixture
def image_tree(tmp_path):
    """A tiny ImageFolder root: train/ and test/ with classes cat and dog, real PNG files."""
    from PIL import Image

    root = tmp_path / "tree"
    for split, count in (("train", 3), ("test", 2)):
        for index, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 40), (index * 200, 30 * i, 90)).save(folder / f"{i}.png")
    return root


def interrupt_after_epoch(monkeypatch, epoch: int | None = None):
    """Saves the checkpoint of `epoch` (None: the first one saved) as usual, then stops the
    process's run like Ctrl-C would."""
    from tlbench.training import checkpoint, engine

    save = checkpoint.save

    def save_then_stop(state, path):
        save(state, path)
        if epoch is None or state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.checkpoint, "save", save_then_stop)


def run_interrupted(monkeypatch, cfg, output_dir, epoch: int | None = None) -> None:
    """Runs `cfg` into `output_dir` and stops it like Ctrl-C once the checkpoint of `epoch` (None: the first one
    saved) is written; the next run() of the same folder resumes it."""
    from tlbench.runner.run import run

    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch, epoch)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, output_dir=output_dir)
