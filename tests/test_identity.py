"""One definition of "the same experiment" (tlbench/identity.py): machine-independent, blind to
speed-only settings, sensitive to every setting that changes training, and to the data's and
weights' content rather than their paths. The report groups by it too."""

import json
import shutil

import pytest
from omegaconf import OmegaConf

from tlbench.records import identity
from tlbench.report import groups, load
from tlbench.runner.run import run



def resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def run_id_of(cfg) -> str:
    config = resolved(cfg)
    return identity.run_id(config, identity.fingerprint_paths(config))


def test_the_same_experiment_on_two_machines_has_one_run_id(make_cfg, image_tree, tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere" / "tree"
    shutil.copytree(image_tree, copy)  # the same images at another path, as on another machine
    common = ["dataset=imagefolder", "model=resnet18", "epochs=3"]
    first = run_id_of(make_cfg(*common, f"dataset.root={image_tree}", "data_dir=/d", "weights_dir=/w"))
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    monkeypatch.setenv("TLBENCH_DATA_DIR", "/mnt/data")
    second = run_id_of(make_cfg(*common, f"dataset.root={copy}", "data_dir=/e", "weights_dir=/v", "results_dir=/r",
                                "data.cache_dir=/c", "threads=1", "num_workers=4", "devices=[cuda:0,cuda:1]",
                                "device=cpu", "data.device_budget_gb=1", "data.decode_workers=2", "resume=false",
                                "eval_batch_size=7", "keep_checkpoint=true", "compile=true"))
    assert first == second


def test_different_data_or_weights_are_different_experiments(make_cfg, image_tree, tmp_path):
    from PIL import Image

    other = tmp_path / "other" / "tree"
    shutil.copytree(image_tree, other)
    Image.new("RGB", (41, 40)).save(other / "train" / "cat" / "0.png")  # one image changed
    base = ["dataset=imagefolder", "model=resnet18"]
    assert run_id_of(make_cfg(*base, f"dataset.root={image_tree}")) != run_id_of(make_cfg(*base, f"dataset.root={other}"))
    weights_a, weights_b = tmp_path / "a.pth", tmp_path / "b.pth"
    weights_a.write_bytes(b"a" * 100)
    weights_b.write_bytes(b"b" * 100)
    assert run_id_of(make_cfg(*base, f"model.weights_file={weights_a}")) != \
        run_id_of(make_cfg(*base, f"model.weights_file={weights_b}"))
    shutil.copy(weights_a, tmp_path / "a-copy.pth")
    assert run_id_of(make_cfg(*base, f"model.weights_file={weights_a}")) == \
        run_id_of(make_cfg(*base, f"model.weights_file={tmp_path / 'a-copy.pth'}"))


def write_tree(root, sizes: dict) -> None:
    for relative, size in sizes.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x" * size)


def test_a_folder_fingerprint_follows_each_file_size_not_only_the_totals(tmp_path):
    """Two trees with the same file names, the same count and the same total bytes, but two
    files' sizes swapped: different data (a resized image), so a different fingerprint."""
    sizes = {"train/cat/0.png": 100, "train/cat/1.png": 250, "train/dog/0.png": 70, "test/dog/0.png": 30}
    write_tree(tmp_path / "a", sizes)
    write_tree(tmp_path / "b", {**sizes, "train/cat/0.png": 250, "train/cat/1.png": 100})
    write_tree(tmp_path / "c", sizes)  # a copy: same names and sizes
    write_tree(tmp_path / "d", {k.replace("cat", "kat"): v for k, v in sizes.items()})  # a renamed class
    a, b, c, d = (identity.fingerprint(tmp_path / name) for name in "abcd")
    assert a.endswith(":4files:450bytes") and b.endswith(":4files:450bytes")
    assert a != b, "swapped file sizes must change the fingerprint"
    assert a == c and a != d
    config = {"dataset": {"name": "imagefolder", "root": str(tmp_path / "a")}}
    other = {"dataset": {"name": "imagefolder", "root": str(tmp_path / "b")}}
    assert identity.run_id(config, identity.fingerprint_paths(config)) != \
        identity.run_id(other, identity.fingerprint_paths(other))


# Written out here, not read from identity.py, so that a training setting wrongly added to the
# module's list (say batch_size) fails this test.
WHERE_AND_HOW_FAST = ("results_dir", "data_dir", "weights_dir", "resume", "run_lock", "keep_checkpoint",
                      "checkpoint_every_s",
                      "save_best", "save_model", "device",
                      "devices", "threads", "num_workers", "eval_batch_size", "compile", "channels_last",
                      "deterministic", "data.cache_dir", "data.device_budget_gb", "data.decode_workers",
                      "dataset.data_dir", "dataset.download",
                      "published")  # a write-up preset's published numbers: what was reported, not what is trained


def outside_identity(key: str) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in WHERE_AND_HOW_FAST for i in range(1, len(parts) + 1))


def perturbed(value):
    """A different value of the same kind, whatever the setting."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1 if value == 0 else value * 2
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, 0]
    return 1 if value is None else {"other": 1}


@pytest.mark.parametrize("overrides", [[], ["experiment=quickstart"], ["freeze=freeze_unfreeze", "schedule=plateau"],
                                       ["dataset=filelist", "dataset.train_list=a", "dataset.test_list=b"],
                                       ["experiment=seed_resnet50_imagewoof"], ["freeze=layer_decay", "optimizer=sgd"]])
def test_every_setting_that_changes_training_changes_the_run_id(make_cfg, overrides):
    config = resolved(make_cfg(*overrides))
    base = identity.run_id(config)
    flat = identity.flatten(config)
    assert "batch_size" in flat and "optimizer.lr" in flat
    idle_keys = set().union(*(tuned for switches, tuned in identity.IDLE_WHILE_OFF.items()  # mix's prob while both
                              if not any(flat.get(switch) for switch in switches)))  # alphas are 0, ema's warmup...
    idle_keys |= {key for key, (switch, value) in identity.IDLE_UNLESS.items() if flat.get(switch) != value}
    for key, value in flat.items():
        changed = identity._unflatten({**flat, key: perturbed(value)})
        moved = identity.run_id(changed) != base
        idle = key in idle_keys
        assert moved == (not outside_identity(key) and not idle), \
            f"{key}: run_id {'changed' if moved else 'did not change'}"


def test_the_sweep_folder_name_leaves_out_what_the_run_id_leaves_out():
    from tlbench.runner.sweep import sweep_name

    assert sweep_name(["model=resnet18", "threads=1", "data.cache_dir=/c", "hydra.launcher.n_jobs=2"]) == \
        sweep_name(["model=resnet18"])
    assert sweep_name(["model=resnet18", "batch_size=32"]) != sweep_name(["model=resnet18"])


def test_a_schema_1_config_keeps_its_identity_under_schema_2_names(make_cfg):
    current = resolved(make_cfg("dataset=digits", "dataset.val_split=0", "model.head_init=library",
                                "optimizer.filter_bias_and_bn=false"))
    old = json.loads(json.dumps(current))
    old["dataset"]["val_fraction"] = old["dataset"].pop("test_size")
    del old["dataset"]["val_split"]  # digits had split_seed already (it draws its test split)
    del old["model"]["head_init"], old["optimizer"]["filter_bias_and_bn"]
    assert identity.run_id(identity.upgrade_schema_1_config(old)) == identity.run_id(current)
    assert identity.run_id(current) != identity.run_id(resolved(make_cfg("dataset=digits")))


def test_runs_on_two_imagefolder_roots_are_two_groups_and_copies_are_one(make_cfg, image_tree, tmp_path):
    from PIL import Image

    copy, other = tmp_path / "copy", tmp_path / "other"
    shutil.copytree(image_tree, copy)
    shutil.copytree(image_tree, other)
    Image.new("RGB", (40, 40), (0, 0, 255)).save(other / "test" / "dog" / "9.png")
    tiny = ["dataset=imagefolder", "dataset.image_size=32", "pretrained=false", "epochs=1", "batch_size=4",
            "augment=none", "model=resnet18"]
    for name, root, seed in (("a", image_tree, 0), ("b", copy, 1), ("c", other, 0)):
        run(make_cfg(*tiny, f"dataset.root={root}", f"seed={seed}"), output_dir=tmp_path / "runs" / name)
    runs = groups.add_group_keys(load.runs_table(load.read_results(tmp_path / "runs")))
    by_run = dict(zip(runs["path"].map(lambda p: p.split("/")[-2]), runs["group_key"]))
    assert by_run["a"] == by_run["b"], "the same images at two paths are seeds of one experiment"
    assert by_run["a"] != by_run["c"], "different images must never be averaged together"
    assert runs["fingerprints.dataset.root"].str.startswith("tree:").all()


def test_probe_names_in_identity_are_the_probes():
    """records/ names the probes itself (it imports no specs); they must be the same list."""
    from tlbench import specs
    assert identity.PROBE_NAMES == tuple(specs.PROBES)
