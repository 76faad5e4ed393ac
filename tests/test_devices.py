"""Devices, on a machine without a GPU: CUDA is mocked where the rule needs one. A GPU number
beyond those present fails at startup; parallel jobs claim a free device; the optimizer is
checked with the kernels it gets on CUDA; a checkpoint written on N GPUs resumes on M GPUs or
on the CPU, restoring what applies and recording what was reseeded."""

import json
import re
import shutil
import subprocess
import threading
import time
from contextlib import nullcontext

import pytest
import torch
from conftest import TINY, interrupt_after_epoch, subprocess_env, tlbench_command

from tlbench.training import checkpoint, optim
from tlbench.runner import devices
from tlbench.errors import ConfigError
from tlbench.runner.build import check_settings
from tlbench.runner.run import run


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda as a 2-GPU machine shows it to the startup checks."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.parametrize("overrides, message", [
    (["device=cuda:2"], r"device='cuda:2' but this machine has 2 GPUs: use cuda:0, cuda:1"),
    (["devices=[cuda:0,cuda:5]"], r"devices\[1\]='cuda:5' but this machine has 2 GPUs: use cuda:0, cuda:1"),
    (["devices=cuda:1"], r"devices='cuda:1' must be a list of devices, e.g. devices=\[cuda:0,cuda:1\]"),
])
def test_a_gpu_number_beyond_those_present_fails_at_startup_naming_it_and_the_count(make_cfg, two_gpus, overrides,
                                                                                     message):
    with pytest.raises(ConfigError, match=message):
        check_settings(make_cfg(*TINY, *overrides))
    check_settings(make_cfg(*TINY, "device=cuda:1"))
    check_settings(make_cfg(*TINY, "devices=[cuda:1,cuda:0]"))


def test_the_error_names_cuda_visible_devices_when_it_hides_gpus(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    with pytest.raises(ConfigError, match=r"has 2 GPUs visible \(CUDA_VISIBLE_DEVICES=4,5\): use cuda:0, cuda:1"):
        devices.resolve_device("cuda:4")


def test_the_jobs_gpu_becomes_the_current_device(monkeypatch):
    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    devices.select(torch.device("cuda", 1))
    devices.select(torch.device("cpu"))
    assert selected == [torch.device("cuda", 1)]


def test_foreach_takes_the_place_of_the_fused_kernels(make_cfg, two_gpus):
    cfg = make_cfg(*TINY, "device=cuda", "+optimizer.foreach=true")
    check_settings(cfg)  # foreach with fused=True would fail at the first build on CUDA
    factory = optim.OptimizerFactory(**cfg.optimizer, fused=True)
    group = factory.build(torch.nn.Linear(2, 2), _all_phase()).param_groups[0]
    assert (factory.fused, group["foreach"], group["fused"]) == (False, True, None)
    assert optim.OptimizerFactory(**make_cfg(*TINY).optimizer, fused=True).fused


def test_the_startup_check_builds_the_optimizer_with_the_fused_kernels_it_gets_on_cuda(make_cfg, two_gpus):
    bad = make_cfg(*TINY, "device=cuda", "+optimizer.differentiable=true")
    with pytest.raises(ConfigError, match=r"optimizer=adamw: `fused` does not support `differentiable`; on CUDA "
                                          r"tlbench uses the fused kernels .* add \+optimizer.foreach=true"):
        check_settings(bad)
    check_settings(make_cfg(*TINY, "device=cpu", "+optimizer.differentiable=true"))  # no fused kernels on the CPU


def _all_phase():
    from tlbench.training import freeze

    return freeze.Phase("all", (freeze.ParamGroup(("weight", "bias")),))


# Parallel jobs claim a free device -------------------------------------------------------------

def test_a_job_takes_a_free_device_rather_than_queue_behind_a_busy_one(tmp_path):
    """Job 0 is still training on cuda:0 when job 1 (cuda:1) ends: job 2 takes cuda:1, where
    i mod N would have put it on cuda:0 beside job 0 while cuda:1 idled."""
    gpus = ["cuda:0", "cuda:1"]
    with devices.claim_device("auto", gpus, 0, tmp_path) as first:
        with devices.claim_device("auto", gpus, 1, tmp_path) as second:
            assert (first, second) == ("cuda:0", "cuda:1")
        with devices.claim_device("auto", gpus, 2, tmp_path) as third:
            assert third == "cuda:1"
    with devices.claim_device("auto", gpus, 2, tmp_path) as alone:
        assert alone == "cuda:0", "a free device of its own (i mod N) comes first"


def test_a_job_waits_for_a_device_when_all_are_taken_and_gets_the_first_freed(tmp_path):
    got, gpus = [], ["cuda:0", "cuda:1"]
    with devices.claim_device("auto", gpus, 0, tmp_path), devices.claim_device("auto", gpus, 1, tmp_path) as second:
        waiter = threading.Thread(target=lambda: _claim_into(got, gpus, 2, tmp_path))
        waiter.start()
        time.sleep(0.3)
        assert not got, "a third job was given a device that two jobs hold"
        # leaving the inner claim first frees cuda:1
    waiter.join(timeout=10)
    assert got in (["cuda:0"], ["cuda:1"]) and second == "cuda:1"


def _claim_into(got, gpus, job_num, folder):
    with devices.claim_device("auto", gpus, job_num, folder, poll_s=0.05) as name:
        got.append(name)


def test_a_device_listed_twice_takes_two_jobs_and_a_failed_job_frees_its_device(tmp_path):
    with devices.claim_device("auto", ["cuda:0", "cuda:0"], 0, tmp_path) as a, \
            devices.claim_device("auto", ["cuda:0", "cuda:0"], 0, tmp_path) as b:
        assert a == b == "cuda:0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0-cuda-0.lock", "1-cuda-0.lock"]
    with pytest.raises(RuntimeError), devices.claim_device("auto", ["cuda:1"], 0, tmp_path):
        raise RuntimeError("the job failed")
    with devices.claim_device("auto", ["cuda:1"], 1, tmp_path, poll_s=60) as again:
        assert again == "cuda:1"


def test_without_a_sweep_folder_job_i_takes_device_i_mod_n():
    with devices.claim_device("auto", ["cuda:0", "cuda:1"], 3, None) as name:
        assert name == "cuda:1"
    with devices.claim_device("cpu", None, 3, None) as name:
        assert name == "cpu"


# Portable resume ----------------------------------------------------------------------------------

class TwoGenerators:
    """The tensor path's train loader as the checkpoint sees it: an order and an augmentation
    generator (both on the CPU here)."""

    def __init__(self, seed=0):
        self.generators = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1))


CUDA_STATE = torch.arange(16, dtype=torch.uint8)  # a CUDA (Philox) generator state: seed and offset, 16 bytes


def saved_rng(cuda, loader_states) -> dict:
    state = checkpoint.rng_state(TwoGenerators())
    return dict(state, cuda=cuda, loader=loader_states)


@pytest.mark.parametrize("cuda, device, restored, note", [
    ([CUDA_STATE, CUDA_STATE + 1], "cuda:1", CUDA_STATE + 1, None),      # format 1, the same GPU number
    ([CUDA_STATE, CUDA_STATE + 1], "cuda:2", None, ("CUDA generator of cuda:2: the checkpoint holds CUDA states "
                                                    "for 2 GPU(s), none for cuda:2")),
    ({"device": "cuda:1", "state": CUDA_STATE}, "cuda:0", CUDA_STATE, None),  # format 2: the job's GPU, renumbered
    (None, "cuda:0", None, "CUDA generator of cuda:0: the checkpoint was written without CUDA"),
    ([CUDA_STATE, CUDA_STATE + 1], "cpu", None, None),                   # CPU runs draw nothing from CUDA
])
def test_the_cuda_state_of_the_gpu_that_trained_goes_to_the_gpu_that_trains_now(monkeypatch, cuda, device, restored,
                                                                                  note):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: calls.append(("state", state, index)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(("seed", seed)))
    monkeypatch.setattr(torch.cuda, "device", lambda index: nullcontext())
    loader = TwoGenerators()
    reseeded = checkpoint.restore_rng(saved_rng(cuda, [g.get_state() for g in loader.generators]), loader,
                                      torch.device(device))
    assert reseeded == ([note] if note else [])
    if restored is not None:
        assert len(calls) == 1 and torch.equal(calls[0][1], restored) and calls[0][2] == torch.device(device).index
    elif note:
        assert [kind for kind, *_ in calls] == ["seed"]
    else:
        assert calls == []


def test_a_generator_saved_on_another_device_is_reseeded_the_same_way_every_time():
    loader = TwoGenerators()
    order = loader.generators[0].get_state()
    for saved in ([order, CUDA_STATE], [{"device": "cpu", "state": order}, {"device": "cuda", "state": CUDA_STATE}]):
        fitted, reseeded = checkpoint.portable_rng(saved_rng([], saved), loader, torch.device("cpu"))
        assert len(reseeded) == 1 and reseeded[0].startswith("train loader generator 2/2 (saved on ")
        assert reseeded[0].endswith(" (16 bytes), now on cpu)")
        assert torch.equal(fitted["loader"][0]["state"], order) and "seed" in fitted["loader"][1]
        again, _ = checkpoint.portable_rng(saved_rng([], saved), TwoGenerators(5), torch.device("cpu"))
        assert again["loader"][1]["seed"] == fitted["loader"][1]["seed"]
    other, _ = checkpoint.portable_rng(saved_rng([], [order, CUDA_STATE + 1]), loader, torch.device("cpu"))
    assert other["loader"][1]["seed"] != fitted["loader"][1]["seed"], "another epoch's state must reseed differently"
    assert checkpoint.portable_rng(fitted, loader, torch.device("cpu")) == (fitted, []), "fitting twice changes nothing"


def test_a_resumed_optimizer_uses_the_kernels_chosen_for_this_device():
    model = torch.nn.Linear(2, 2)
    written_on_cuda = torch.optim.AdamW(model.parameters(), fused=True).state_dict()
    state = {"rng": saved_rng(None, [g.get_state() for g in TwoGenerators().generators]), "optimizer": written_on_cuda}
    fitted, _ = checkpoint.portable(state, TwoGenerators(), torch.device("cpu"), {"fused": None, "foreach": None})
    assert [g["fused"] for g in fitted["optimizer"]["param_groups"]] == [None]
    assert written_on_cuda["param_groups"][0]["fused"] is True, "the loaded checkpoint was changed in place"


RESUMABLE = [*TINY, "pretrained=false", "augment=crop_flip", "dataset.train_size=64", "save_model=false",
             "checkpoint_every_s=0", "keep_checkpoint=true"]


def as_if_written_elsewhere(folder, form: str) -> None:
    """Rewrites a CPU run's checkpoint as a sweep on 2 GPUs would have written it: format 1
    (every GPU's CUDA state, bare generator states) or format 2 (the job's GPU, device types)."""
    state = checkpoint.load(folder / checkpoint.CHECKPOINT_FILE)
    rng, order = state["rng"], state["rng"]["loader"][0]["state"]
    if form == "format 1, CPU":
        state.update(format=1, rng=dict(rng, cuda=[], loader=[order, rng["loader"][1]["state"]]))
    elif form == "format 1, 2 GPUs":
        state.update(format=1, rng=dict(rng, cuda=[CUDA_STATE, CUDA_STATE + 1], loader=[order, CUDA_STATE]))
    else:
        state["rng"] = dict(rng, cuda={"device": "cuda:1", "state": CUDA_STATE},
                            loader=[{"device": "cpu", "state": order}, {"device": "cuda", "state": CUDA_STATE}])
    torch.save(state, folder / checkpoint.CHECKPOINT_FILE)


def test_a_checkpoint_from_a_2_gpu_sweep_resumes_on_the_cpu_and_records_the_reseed(make_cfg, tmp_path, monkeypatch):
    uninterrupted = run(make_cfg(*RESUMABLE), output_dir=tmp_path / "uninterrupted")
    with monkeypatch.context() as patch:
        interrupt_after_epoch(patch)
        with pytest.raises(KeyboardInterrupt):
            run(make_cfg(*RESUMABLE), output_dir=tmp_path / "stopped")

    resumed = {}
    for form in ("format 1, CPU", "format 1, 2 GPUs", "format 2, cuda:1"):
        folder = tmp_path / form.replace(" ", "_").replace(",", "")
        shutil.copytree(tmp_path / "stopped", folder)
        as_if_written_elsewhere(folder, form)
        resumed[form] = run(make_cfg(*RESUMABLE), output_dir=folder)
        assert resumed[form]["status"] == "ok" and len(resumed[form]["epochs"]) == 2
        assert json.loads((folder / "result.json").read_text())["resumes"] == resumed[form]["resumes"]
        assert [r["after_epoch"] for r in resumed[form]["resumes"]] == [1]

    assert resumed["format 1, CPU"]["resumes"][0]["rng"] == "restored"
    assert _metrics(resumed["format 1, CPU"]) == _metrics(uninterrupted), "an old checkpoint no longer resumes exactly"
    assert resumed["format 1, 2 GPUs"]["resumes"][0]["rng"] == \
        "partly reseeded: train loader generator 2/2 (saved on another device (16 bytes), now on cpu)"
    assert resumed["format 2, cuda:1"]["resumes"][0]["rng"] == \
        "partly reseeded: train loader generator 2/2 (saved on cuda (16 bytes), now on cpu)"
    # both hold the same 16-byte augmentation state: reseeded alike, they train alike
    assert _metrics(resumed["format 1, 2 GPUs"]) == _metrics(resumed["format 2, cuda:1"]), \
        "the same saved state was reseeded differently"
    assert checkpoint.load(tmp_path / "format_2_cuda:1" / checkpoint.CHECKPOINT_FILE)["rng"]["loader"][1] \
        ["device"] == "cpu", "the next checkpoint must describe this machine's generators"


def _metrics(result: dict) -> tuple:
    return [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in result["epochs"]], \
        result["iter_loss"]


@pytest.mark.e2e
def test_joblib_jobs_claim_their_devices_in_the_sweep_folder(tmp_path):
    """Two CPU slots stand in for two GPUs: each job of a 2-at-a-time joblib sweep claims one."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="the `parallel` extra is not installed")
    folder = tmp_path / "sweep"
    done = subprocess.run(tlbench_command("-m", *TINY, "epochs=1", "pretrained=false", "seed=0,1", "devices=[cpu,cpu]",
                                          "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                          f"hydra.sweep.dir={folder}"),
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    logs = "".join(p.read_text() for p in folder.glob("*/*.log"))
    assert sorted(re.findall(r"job \d claimed devices\[\d\]=cpu", logs)) == ["job 0 claimed devices[0]=cpu",
                                                                              "job 1 claimed devices[1]=cpu"], logs
    assert sorted(p.name for p in (folder / devices.CLAIMS_FOLDER).iterdir()) == ["0-cpu.lock", "1-cpu.lock"]


@pytest.mark.parametrize("model, depthwise", [("tf_efficientnet_lite0", True), ("mobilenetv3_small_100", True),
                                              ("resnet18", False), ("vit_tiny_patch16_224", False)])
def test_channels_last_auto_is_on_for_cuda_and_for_depthwise_models_on_a_cpu(model, depthwise):
    import timm

    from tlbench import models

    assert models.has_depthwise_conv(timm.create_model(model, num_classes=2)) is depthwise
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.resolve_channels_last("auto", cpu, depthwise) is depthwise
    assert devices.resolve_channels_last("auto", cuda, depthwise) is True
    assert devices.resolve_channels_last(False, cuda, depthwise) is False
    assert devices.resolve_channels_last(True, cpu, False) is True
    with pytest.raises(ConfigError, match="'fast'"):
        devices.resolve_channels_last("fast", cpu, depthwise)


def test_a_run_records_the_memory_format_and_precision_it_used(make_cfg, tmp_path):
    result = run(make_cfg(*TINY, "pretrained=false", "epochs=1"), output_dir=tmp_path / "run")
    assert result["env"]["channels_last"] is False and result["env"]["amp"] is False  # no depthwise convolutions, on a CPU
    forced = run(make_cfg(*TINY, "pretrained=false", "epochs=1", "channels_last=true"), output_dir=tmp_path / "forced")
    assert forced["env"]["channels_last"] is True
